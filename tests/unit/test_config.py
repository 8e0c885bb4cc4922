"""keel.yaml is expanded and checked whole: every problem in one ConfigError, each naming its path and fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel import config
from keel.errors import ConfigError, ConfigIssue

GOOD: dict[str, Any] = {
    "server": {"host": "127.0.0.1", "port": 9000},
    "admin_token": "admin-secret",
    "storage": {"url": "sqlite:///keel-test.db"},
    "providers": {
        "oai": {"type": "openai", "api_key": "sk-upstream", "region": "us"},
        "local": {"type": "vllm", "base_url": "http://127.0.0.1:8000/v1"},
        "sim": {"type": "simulated"},
    },
    "models": {
        "fast": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}, {"provider": "local", "model": "llama"}]},
        "sim": {"targets": [{"provider": "sim", "model": "simulated-1"}]},
    },
    "prices": {"llama": {"input": 0.1, "output": 0.2}},
}


def good() -> dict[str, Any]:
    return copy.deepcopy(GOOD)


def problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(raw, env or {})
    return info.value


def issue_at(err: ConfigError, path: str) -> ConfigIssue:
    found = [i for i in err.issues if i.path == path]
    assert len(found) == 1, f"expected one issue at {path}, got:\n{err.message}"
    return found[0]


# ---- what is accepted --------------------------------------------------------------------------


def test_good_config_parses() -> None:
    cfg = config.parse(good(), {})
    assert cfg.server.port == 9000
    assert cfg.admin_token == "admin-secret"
    assert cfg.storage.url == "sqlite:///keel-test.db"
    assert sorted(cfg.providers) == ["local", "oai", "sim"]
    assert cfg.providers["oai"].type == "openai"
    assert [t.provider for t in cfg.models["fast"].targets] == ["oai", "local"]
    assert cfg.prices["llama"].output == 0.2


def test_starter_config_is_valid() -> None:
    cfg = config.parse(yaml.safe_load(config.STARTER), {})
    assert "demo" in cfg.models
    assert cfg.admin_token == ""  # ${KEEL_ADMIN_TOKEN:-} with the variable unset


def test_env_vars_expand() -> None:
    raw = good()
    raw["admin_token"] = "${ADMIN}"
    raw["providers"]["oai"]["api_key"] = "${OPENAI_KEY}"
    raw["providers"]["oai"]["headers"] = {"x-org": "org-${ORG}-${TEAM:-core}"}
    raw["providers"]["local"]["base_url"] = "${VLLM_URL:-http://127.0.0.1:8000/v1}"
    raw["server"]["port"] = "${PORT:-8123}"
    cfg = config.parse(raw, {"ADMIN": "tok", "OPENAI_KEY": "sk-from-env", "ORG": "acme"})
    assert cfg.admin_token == "tok"
    assert cfg.providers["oai"].api_key == "sk-from-env"
    assert cfg.providers["oai"].headers == {"x-org": "org-acme-core"}
    assert cfg.providers["local"].base_url == "http://127.0.0.1:8000/v1"
    assert cfg.server.port == 8123


def test_set_env_var_wins_over_default() -> None:
    raw = good()
    raw["server"]["port"] = "${PORT:-8123}"
    raw["admin_token"] = "${ADMIN:-}"
    cfg = config.parse(raw, {"PORT": "7000", "ADMIN": "set"})
    assert (cfg.server.port, cfg.admin_token) == (7000, "set")


def test_no_providers_gives_the_demo_config() -> None:
    cfg = config.parse({"server": {"port": 9001}}, {})
    assert cfg.server.port == 9001
    assert cfg.providers["simulated"].type == "simulated"
    assert cfg.models["demo"].targets[0].provider == "simulated"


def test_no_file_and_no_keel_yaml_gives_the_demo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None, env={})
    assert list(cfg.providers) == ["simulated"]
    assert cfg.providers["simulated"].type == "simulated"
    assert cfg.models["demo"].targets[0].provider == "simulated"
    assert not (tmp_path / "keel.db").exists()  # loading never touches storage


# ---- load() --------------------------------------------------------------------------------------


def test_load_reads_and_expands_a_file(tmp_path: Path) -> None:
    raw = good()
    raw["providers"]["oai"]["api_key"] = "${OPENAI_KEY}"
    path = tmp_path / "keel.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = config.load(path, env={"OPENAI_KEY": "sk-file"})
    assert cfg.providers["oai"].api_key == "sk-file"


def test_load_finds_keel_yaml_in_cwd_and_keel_config_in_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("keel.yaml").write_text(yaml.safe_dump(good()))
    assert config.load(None, env={}).server.port == 9000
    other = tmp_path / "elsewhere.yaml"
    other.write_text(yaml.safe_dump({**good(), "server": {"port": 9100}}))
    assert config.load(None, env={"KEEL_CONFIG": str(other)}).server.port == 9100


def test_load_reports_a_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "nope.yaml", env={})
    assert "file not found" in info.value.message
    assert "keel init" in info.value.message


def test_load_reports_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text("server: {port: 80\nproviders: [\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert "not valid YAML" in info.value.message


def test_top_level_must_be_a_mapping() -> None:
    err = problems(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert issue_at(err, "(top level)").message == "must be a mapping"


# ---- one problem at a time -------------------------------------------------------------------------


def test_missing_env_var_names_path_and_fix() -> None:
    raw = good()
    raw["providers"]["oai"]["api_key"] = "${OPENAI_API_KEY}"
    err = problems(raw)
    issue = issue_at(err, "providers.oai.api_key")
    assert "OPENAI_API_KEY" in issue.message
    assert "export OPENAI_API_KEY=..." in issue.fix
    assert len(err.issues) == 1


def test_missing_env_var_in_a_typed_field_is_one_problem() -> None:
    raw = good()
    raw["server"]["port"] = "${KEEL_PORT}"  # expands to "", which is also not a port: still one problem
    err = problems(raw)
    assert "export KEEL_PORT=..." in issue_at(err, "server.port").fix
    assert len(err.issues) == 1


@pytest.mark.parametrize(
    ("place", "typo", "meant"),
    [
        ((), "provders", "providers"),
        (("server",), "prot", "port"),
        (("providers", "local"), "base_ur", "base_url"),
        (("traces",), "queue_sise", "queue_size"),
    ],
)
def test_unknown_key_suggests_the_close_one(place: tuple[str, ...], typo: str, meant: str) -> None:
    raw = good()
    node = raw
    for part in place:
        node = node.setdefault(part, {})
    node[typo] = node.get(meant, 1)
    err = problems(raw)
    issue = issue_at(err, ".".join([*place, typo]))
    assert issue.message == "unknown key"
    assert f"did you mean '{meant}'?" in issue.fix
    assert len(err.issues) == 1


def test_misspelt_required_key_is_one_problem_with_a_list_index_path() -> None:
    raw = good()
    raw["models"]["sim"]["targets"][0] = {"provider": "sim", "modle": "simulated-1"}
    err = problems(raw)
    issue = issue_at(err, "models.sim.targets[0].modle")
    assert "did you mean 'model'?" in issue.fix
    assert len(err.issues) == 1, err.message  # not also "models.sim.targets[0].model is missing"


def test_missing_required_key_is_reported() -> None:
    raw = good()
    del raw["models"]["sim"]["targets"][0]["model"]
    err = problems(raw)
    assert issue_at(err, "models.sim.targets[0].model").message == "required key is missing"


@pytest.mark.parametrize(
    ("section", "key", "value", "words"),
    [
        ("server", "port", 70000, "65535"),
        ("server", "port", "eighty", "integer"),
        ("storage", "url", "mysql://db/keel", "sqlite:///"),
        ("traces", "queue_size", 0, "greater than or equal to 1"),
        ("audit", "tool_outcomes", "sometimes", "'durable' or 'fast'"),
    ],
)
def test_bad_value_is_reported(section: str, key: str, value: Any, words: str) -> None:
    raw = good()
    raw.setdefault(section, {})[key] = value
    err = problems(raw)
    issue = issue_at(err, f"{section}.{key}")
    assert words in issue.message
    assert repr(value) in issue.message  # the value the user wrote
    assert len(err.issues) == 1


def test_unknown_provider_type_suggests_a_close_match() -> None:
    raw = good()
    raw["providers"]["oai"]["type"] = "opnai"
    err = problems(raw)
    issue = issue_at(err, "providers.oai.type")
    assert "opnai" in issue.message
    assert "did you mean 'openai'?" in issue.fix
    assert "anthropic" in issue.fix  # and the full list
    assert len(err.issues) == 1


def test_alias_to_unknown_provider_is_reported() -> None:
    raw = good()
    raw["models"]["fast"]["targets"][1]["provider"] = "lokal"
    err = problems(raw)
    issue = issue_at(err, "models.fast.targets[1].provider")
    assert "lokal" in issue.message
    assert "local, oai, sim" in issue.fix
    assert len(err.issues) == 1


def test_providers_without_models_is_reported() -> None:
    raw = good()
    del raw["models"]
    err = problems(raw)
    assert "no model alias" in issue_at(err, "models").message
    assert len(err.issues) == 1


def test_provider_base_url_checks() -> None:
    raw = good()
    raw["providers"]["az"] = {"type": "azure"}  # azure has no default base_url
    raw["providers"]["local"]["base_url"] = "127.0.0.1:8000/v1"
    err = problems(raw)
    assert "required" in issue_at(err, "providers.az.base_url").message
    assert "not an http(s) URL" in issue_at(err, "providers.local.base_url").message
    assert len(err.issues) == 2


# ---- every problem at once ---------------------------------------------------------------------


def test_every_problem_is_reported_in_one_error() -> None:
    raw = good()
    raw["provders"] = {}  # top-level typo
    raw["server"]["port"] = 70000  # out of range
    raw["storage"]["url"] = "mysql://db/keel"  # unsupported scheme
    raw["providers"]["local"]["base_ur"] = raw["providers"]["local"].pop("base_url")  # nested typo
    raw["providers"]["oai"]["type"] = "opnai"  # unknown provider type
    raw["providers"]["oai"]["api_key"] = "${OPENAI_API_KEY}"  # unset variable
    raw["models"]["sim"]["targets"][0] = {"provider": "sim", "modle": "simulated-1"}  # typo in a list item
    raw["models"]["fast"]["targets"][0]["provider"] = "ghost"  # alias to an unknown provider
    expected = {
        "provders": "did you mean 'providers'?",
        "server.port": "",
        "storage.url": "",
        "providers.local.base_ur": "did you mean 'base_url'?",
        "providers.oai.type": "did you mean 'openai'?",
        "providers.oai.api_key": "export OPENAI_API_KEY=...",
        "models.sim.targets[0].modle": "did you mean 'model'?",
        "models.fast.targets[0].provider": "",
    }

    err = problems(raw)

    assert len(err.issues) == len(expected), err.message
    assert err.message.startswith(f"keel.yaml: {len(expected)} problems")
    for path, fix in expected.items():
        assert f"  {path}: " in err.message
        assert fix in issue_at(err, path).fix


def test_error_message_names_the_file(tmp_path: Path) -> None:
    raw = good()
    raw["server"]["port"] = 70000
    raw["storage"]["url"] = "mysql://db/keel"
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert info.value.message.splitlines()[0] == f"{path}: 2 problems"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e9, -1])
def test_a_price_must_be_finite_and_sane(value: float) -> None:
    raw = good()
    raw["prices"]["llama"]["output"] = value
    issue_at(problems(raw), "prices.llama.output")
