"""The `keel` command as a real process over a real SQLite file. Exit codes: 0 ok, 1 failure, 2 usage/config.

Independent commands run side by side (`start`, then `finish`) to keep the file fast; every database
they share is migrated first, since several processes migrating one fresh file can collide.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.keys.auth import KEY_PREFIX, hash_key, issue_key
from keel.store.open import open_store

# the installed entry point; `python -m` only where it is not installed beside this interpreter
_SCRIPT = shutil.which("keel", path=str(Path(sys.executable).parent))
KEEL = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "keel.cli.main"]
ENV = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Start `keel ARGS` in `cwd`, so ./keel.yaml is its config."""
    return subprocess.Popen([*KEEL, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    """Wait for it and check its exit code; a failure is a message, never a traceback."""
    out, err = proc.communicate(timeout=30)
    args = " ".join(map(str, proc.args[len(KEEL) :]))  # type: ignore[index]
    assert proc.returncode == code, f"keel {args} exited {proc.returncode}, not {code}:\n{out}\n{err}"
    if code != 0:
        assert "Traceback" not in err, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def keel(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return finish(start(cwd, *args), code)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(cwd: Path, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"url": f"sqlite:///{cwd}/k.db"},
        "traces": {"spill_dir": str(cwd / "spill")},
        "providers": {"sim": {"type": "simulated"}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        **changes,
    }
    (cwd / "keel.yaml").write_text(yaml.safe_dump(raw))
    return raw


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory holding a good keel.yaml whose store, tmp/k.db, does not exist yet."""
    write_config(tmp_path)
    return tmp_path


@pytest.fixture
def db(work: Path) -> Path:
    """`work` with its store created and migrated."""
    open_store(f"sqlite:///{work}/k.db").close()
    return work


@pytest.fixture
def acme(db: Path) -> Path:
    """`db` with tenant acme, seeded through the real store."""
    store = open_store(f"sqlite:///{db}/k.db")
    try:
        store.create_tenant("acme")
    finally:
        store.close()
    return db


# ---- init and config check ---------------------------------------------------------------------


def test_init_writes_a_config_that_checks_and_is_not_overwritten(tmp_path: Path) -> None:
    assert "keel config check" in keel(tmp_path, "init").stdout
    config = tmp_path / "keel.yaml"
    assert config.read_text().startswith("# keel.yaml")
    config.write_text(config.read_text() + "# my edit\n")

    check, again = start(tmp_path, "config", "check"), start(tmp_path, "init")

    assert finish(check).stdout.startswith("ok: 1 provider(s), 1 model alias(es), storage sqlite:///keel.db")
    refused = finish(again, 1)
    assert "keel.yaml already exists; pass --force to overwrite it" in refused.stderr
    assert config.read_text().endswith("# my edit\n")
    assert not (tmp_path / "keel.db").exists()  # checking never opens the store

    keel(tmp_path, "init", "--force")
    assert "# my edit" not in config.read_text()


BAD_PATHS = (
    "provders",
    "server.port",
    "providers.sim.type",
    "providers.sim.base_ur",
    "models.demo.targets[0].provider",
)


def test_bad_config_is_reported_whole_and_serve_starts_nothing(work: Path) -> None:
    raw = write_config(work)
    port = raw["server"]["port"]
    raw["provders"] = {}
    raw["server"]["port"] = 70000
    raw["providers"]["sim"] = {"type": "simulatd", "base_ur": "http://127.0.0.1:1/v1"}
    raw["models"]["demo"]["targets"][0]["provider"] = "ghost"
    (work / "keel.yaml").write_text(yaml.safe_dump(raw))

    check = start(work, "config", "check")
    serve = start(work, "serve", "--port", str(port))  # a good port, so only the file's problems stop it
    checked, served = finish(check, 2), finish(serve, 2)

    assert checked.stdout == ""
    assert checked.stderr.startswith(f"keel.yaml: {len(BAD_PATHS)} problems\n")
    for path in BAD_PATHS:
        assert f"\n  {path}: " in checked.stderr
    assert "did you mean 'simulated'?" in checked.stderr
    assert "did you mean 'providers'?" in checked.stderr
    assert (served.stdout, served.stderr) == ("", checked.stderr)  # the same report and nothing else
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert not (work / "k.db").exists()
    assert not (work / "spill").exists()


def test_an_sqlite_file_in_a_folder_that_cannot_exist_is_named_before_serving(work: Path) -> None:
    (work / "a-file").write_text("not a folder")
    raw = write_config(work, storage={"url": f"sqlite:///{work}/a-file/k.db"})
    served = keel(work, "serve", "--port", str(raw["server"]["port"]), code=2)
    assert "storage.url: sqlite:///" in served.stderr and "a-file cannot be created" in served.stderr
    assert "fix: point storage.url at a writable folder" in served.stderr
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", raw["server"]["port"]), timeout=1),
    ):
        pass


def test_config_check_reports_unset_env_var_and_missing_file(work: Path) -> None:
    write_config(work, admin_token="${KEEL_TEST_NEVER_SET_TOKEN}")

    unset = start(work, "config", "check")
    missing = start(work, "--config", "nope.yaml", "config", "check")

    stderr = finish(unset, 2).stderr
    assert "admin_token: environment variable KEEL_TEST_NEVER_SET_TOKEN is not set" in stderr
    assert "export KEEL_TEST_NEVER_SET_TOKEN=..." in stderr
    assert "nope.yaml: file not found" in finish(missing, 2).stderr


# ---- db, tenants, keys ---------------------------------------------------------------------------


def test_db_migrate_applies_once(work: Path) -> None:
    from keel.store.migrations import pending

    every = [f"applied {name}" for _, name, _ in pending("sqlite", set())]
    assert every[:2] == ["applied 0001_init", "applied 0002_resilience"]
    assert keel(work, "db", "migrate").stdout.splitlines() == every
    assert keel(work, "db", "migrate").stdout.splitlines() == ["up to date"]


def test_tenants_create_list_and_duplicate(db: Path) -> None:
    assert keel(db, "tenants", "create", "acme").stdout.strip() == "created tenant acme"

    listed, again = start(db, "tenants", "list", "--json"), start(db, "tenants", "create", "acme")

    tenants = json.loads(finish(listed).stdout)
    assert [t["name"] for t in tenants] == ["acme"]
    assert isinstance(tenants[0]["created_at"], float)
    assert finish(again, 1).stderr.strip() == "keel: tenant 'acme' already exists"


def test_tenant_regions_create_list_update(db: Path) -> None:
    created = start(db, "tenants", "create", "acme", "--regions", "eu, us")
    plain = start(db, "tenants", "create", "globex", "--json")
    blank = start(db, "tenants", "create", "initech", "--regions", " , ")
    assert finish(created).stdout.strip() == "created tenant acme, restricted to regions eu,us"
    assert json.loads(finish(plain).stdout)["regions"] is None
    assert "--regions names no region" in finish(blank, 1).stderr

    listed, table = start(db, "tenants", "list", "--json"), start(db, "tenants", "list")
    assert [(t["name"], t["regions"]) for t in json.loads(finish(listed).stdout)] == [
        ("acme", ["eu", "us"]),
        ("globex", None),
    ]
    header, *rows = finish(table).stdout.splitlines()
    assert header.split() == ["NAME", "REGIONS", "CREATED"]
    assert [r.split()[:2] for r in rows] == [["acme", "eu,us"], ["globex", "any"]]

    lifted = start(db, "tenants", "update", "acme", "--any-region")
    narrowed = start(db, "tenants", "update", "globex", "--regions", "eu", "--json")
    unknown = start(db, "tenants", "update", "nobody", "--regions", "eu")
    assert finish(lifted).stdout.strip() == "tenant acme may use regions: any"
    assert json.loads(finish(narrowed).stdout)["regions"] == ["eu"]
    assert "no tenant 'nobody'; see `keel tenants list`" in finish(unknown, 1).stderr
    store = open_store(f"sqlite:///{db}/k.db")
    try:
        assert [(t.name, t.regions) for t in store.list_tenants()] == [("acme", None), ("globex", ("eu",))]
    finally:
        store.close()


def test_tenants_update_needs_exactly_one_of_regions_or_any_region(db: Path) -> None:
    neither = start(db, "tenants", "update", "acme")
    both = start(db, "tenants", "update", "acme", "--regions", "eu", "--any-region")
    empty = start(db, "tenants", "update", "acme", "--regions", "")

    assert "one of the arguments --regions --any-region is required" in finish(neither, 2).stderr
    assert "not allowed with argument" in finish(both, 2).stderr
    assert "--regions names no region" in finish(empty, 1).stderr


def test_key_is_printed_once_and_stored_only_hashed(acme: Path) -> None:
    created = start(acme, "keys", "create", "--tenant", "acme", "--user", "u1", "--name", "ci")
    unknown = start(acme, "keys", "create", "--tenant", "nobody")

    done = finish(created)
    key = done.stdout.strip()
    assert key.startswith(KEY_PREFIX) and len(key) > 40
    assert key not in done.stderr
    stored = b"".join(p.read_bytes() for p in acme.glob("k.db*"))  # the file, and any WAL beside it
    assert hash_key(key).encode() in stored  # we are reading the right bytes...
    assert key.encode() not in stored  # ...and the key itself is not among them

    refused = finish(unknown, 1)
    assert refused.stdout == ""
    assert "no tenant 'nobody'" in refused.stderr
    assert "keel tenants create nobody" in refused.stderr

    listed_json, listed = start(acme, "keys", "list", "--json"), start(acme, "keys", "list")
    [row] = json.loads(finish(listed_json).stdout)
    assert "key" not in row and "key_hash" not in row
    assert key.startswith(row["prefix"]) and len(row["prefix"]) < len(key)
    assert (row["tenant"], row["user"], row["name"], row["revoked_at"]) == ("acme", "u1", "ci", None)
    table = finish(listed).stdout
    assert row["id"] in table and key not in table


def test_revoke_a_key(acme: Path) -> None:
    store = open_store(f"sqlite:///{acme}/k.db")
    try:
        key_id = issue_key(store, "acme", name="ci").row.id
    finally:
        store.close()

    revoked, unknown = start(acme, "keys", "revoke", key_id), start(acme, "keys", "revoke", "key_nope")

    assert finish(revoked).stdout.startswith(f"revoked {key_id} at ")
    assert "no key with id 'key_nope'" in finish(unknown, 1).stderr
    [row] = json.loads(keel(acme, "keys", "list", "--tenant", "acme", "--json").stdout)
    assert row["id"] == key_id
    assert isinstance(row["revoked_at"], float)


# ---- limits ----------------------------------------------------------------------------------------


def test_limits_set_list_and_clear(acme: Path) -> None:
    store = open_store(f"sqlite:///{acme}/k.db")
    try:
        key_id = issue_key(store, "acme", name="ci").row.id
    finally:
        store.close()

    tenant = start(
        acme, "limits", "set", "--tenant", "acme", "--rpm", "60", "--usd-month", "12.5", "--on-store-error", "closed"
    )
    key = start(acme, "limits", "set", "--key", key_id, "--concurrency", "2", "--json")
    assert finish(tenant).stdout.strip() == (
        "limits for tenant acme: rpm=60, usd_month=$12.5; fail-closed when Redis is unreachable"
    )
    shown = json.loads(finish(key).stdout)
    assert (shown["scope"], shown["subject"], shown["limits"], shown["on_store_error"]) == (
        "key",
        key_id,
        {"concurrency": 2.0},
        None,
    )

    listed, table = start(acme, "limits", "list", "--json"), start(acme, "limits", "list")
    assert [
        (r["scope"], r["subject"], r["limits"], r["on_store_error"]) for r in json.loads(finish(listed).stdout)
    ] == [
        ("key", key_id, {"concurrency": 2.0}, None),
        ("tenant", "acme", {"rpm": 60.0, "usd_month": 12.5}, "closed"),
    ]
    header, *rows = finish(table).stdout.splitlines()
    assert header.split() == ["SCOPE", "SUBJECT", "LIMITS", "ON_STORE_ERROR", "UPDATED"]
    assert [r.split()[:4] for r in rows] == [
        ["key", key_id, "concurrency=2", "-"],
        ["tenant", "acme", "rpm=60,usd_month=$12.5", "closed"],
    ]

    replaced = keel(acme, "limits", "set", "--tenant", "acme", "--tpm", "1000")  # replaces, never merges
    assert replaced.stdout.strip() == "limits for tenant acme: tpm=1000"
    cleared = keel(acme, "limits", "clear", "--key", key_id)
    assert cleared.stdout.strip() == f"cleared the limits of key {key_id}; keel.yaml's defaults apply"
    again = keel(acme, "limits", "clear", "--key", key_id, code=1)
    assert f"no limits are set for key '{key_id}'; see `keel limits list`" in again.stderr
    [(scope, limits)] = [(r["scope"], r["limits"]) for r in json.loads(keel(acme, "limits", "list", "--json").stdout)]
    assert (scope, limits) == ("tenant", {"tpm": 1000.0})


def test_limits_set_refuses_bad_values_with_a_clear_message(acme: Path) -> None:
    cases = [
        (("--tenant", "acme", "--rpm", "lots"), 2, "argument --rpm: invalid int value: 'lots'"),
        (("--tenant", "acme", "--rpm", "1.5"), 2, "argument --rpm: invalid int value: '1.5'"),
        (("--tenant", "acme", "--usd-day", "cheap"), 2, "argument --usd-day: invalid float value: 'cheap'"),
        (("--tenant", "acme", "--on-store-error", "maybe"), 2, "argument --on-store-error: invalid choice: 'maybe'"),
        (
            (
                "--rpm",
                "5",
            ),
            2,
            "one of the arguments --tenant --key is required",
        ),
        (("--tenant", "acme", "--rpm", "0"), 1, "limit 'rpm': input should be greater than or equal to 1 (got 0)"),
        (("--tenant", "acme", "--usd-day", "-1"), 1, "limit 'usd_day': input should be greater than 0 (got -1.0)"),
        (("--tenant", "acme"), 1, "nothing to set: give at least one limit or on_store_error"),
        (("--tenant", "nobody", "--rpm", "5"), 1, "no tenant 'nobody'; see `keel tenants list`"),
        (("--key", "key_nope", "--rpm", "5"), 1, "no key with id 'key_nope'; see `keel keys list`"),
        (("--key", "key_nope", "--on-store-error", "open"), 1, "on_store_error is chosen per tenant"),
    ]
    procs = [(start(acme, "limits", "set", *args), code, message) for args, code, message in cases]
    for proc, code, message in procs:
        assert message in finish(proc, code).stderr
    assert keel(acme, "limits", "list", "--json").stdout.strip() == "[]"


# ---- traces and usage ----------------------------------------------------------------------------


def test_traces_on_an_empty_store(db: Path) -> None:
    listed = start(db, "traces", "list", "--json")
    bogus = start(db, "traces", "list", "--since", "bogus")
    missing = start(db, "traces", "show", "nope")

    assert finish(listed).stdout.strip() == "[]"
    assert "'since' must be unix seconds or a duration like 15m, 24h, 7d" in finish(bogus, 1).stderr
    assert "no trace 'nope'" in finish(missing, 1).stderr


def test_usage_errors_exit_2(work: Path) -> None:
    no_tenant = start(work, "keys", "create")
    bad_verb = start(work, "tenants", "frobnicate")
    nothing = start(work)

    assert "the following arguments are required: --tenant" in finish(no_tenant, 2).stderr
    assert "invalid choice: 'frobnicate'" in finish(bad_verb, 2).stderr
    assert "COMMAND" in finish(nothing, 2).stderr
    assert not (work / "k.db").exists()
