"""`keel eval run|show|list`: suite runs on the running gateway, and the CI gate.

`keel eval run SUITE.yaml` reads the suite (promptfoo's format; `file://` prompts, tests and vars are read
from the suite's folder), creates a run on the gateway with a virtual key (`--key` or $KEEL_API_KEY), follows
its progress, compares it with `--baseline` (a run id or a label: the latest finished run of the suite with
that label) and exits 0 when the rule holds, 100 when quality regressed, 1 on an error. The gateway runs
the suite as a job: a gateway that restarts resumes it; `--resume RUN` follows a run already created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from keel.cli.output import Failure, emit_json, table, when

POLL_S = 0.5
UNREACHABLE_S = 120.0  # a gateway that restarts mid-run may be away this long before the command gives up


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    run = verbs.add_parser("run", help="run a suite on the gateway and gate it against a baseline")
    run.add_argument("suite", metavar="SUITE.yaml")
    run.add_argument("--repeat", type=int, default=1, help="score every item N times (pass rates, significance)")
    run.add_argument("--concurrency", type=int, default=4)
    run.add_argument("--baseline", help="a run id, or a label: the latest finished run of this suite with it")
    run.add_argument("--label", help="label this run (e.g. the branch), so later runs can name it as baseline")
    run.add_argument("--name", help="the suite's name (default: its description, else the file name)")
    run.add_argument("--max-regressions", type=int, default=0)
    run.add_argument("--min-pass-rate", type=float, help="default without --baseline: 1 (every test passes)")
    run.add_argument("--alpha", type=float, default=0.05, help="significance of a regression over repeats")
    run.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    run.add_argument("--html", metavar="FILE", help="write a self-contained HTML report here")
    run.add_argument("--cache", action="store_true", help="let the aliases' response cache answer (default: skip it)")
    run.add_argument("--resume", metavar="RUN", help="follow this run instead of creating one")
    run.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _common(run)
    run.set_defaults(run=run_eval)
    show = verbs.add_parser("show", help="a run's summary and items")
    show.add_argument("run_id", metavar="RUN")
    show.add_argument("--json", action="store_true")
    _common(show)
    show.set_defaults(run=run_show)
    ls = verbs.add_parser("list", help="recent runs")
    ls.add_argument("--suite")
    ls.add_argument("--label")
    ls.add_argument("--json", action="store_true")
    _common(ls)
    ls.set_defaults(run=run_list)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the gateway's base URL (default: $KEEL_URL, else server.host/port in keel.yaml)")
    p.add_argument("--key", help="a virtual key (default: $KEEL_API_KEY)")


# ---- HTTP ---------------------------------------------------------------------------------------


def _base(args: argparse.Namespace) -> str:
    url = args.url or os.environ.get("KEEL_URL")
    if not url:
        from keel.cli.context import load_config

        cfg = load_config(args)
        url = f"http://{cfg.server.host}:{cfg.server.port}"
    return str(url).rstrip("/")


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    key = args.key or os.environ.get("KEEL_API_KEY")
    if not key:
        raise Failure("no virtual key: pass --key or set KEEL_API_KEY")
    data = None if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    req = urllib.request.Request(_base(args) + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc)["error"]
            message = error["message"] + (f" (at {error['param']})" if error.get("param") else "")
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise Failure(f"the gateway refused: {message}") from None


def _follow(args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """Poll until the run ends, drawing a progress bar on stderr; a gateway away for a while (a
    restart) is waited for."""
    away_since: float | None = None
    last = -1
    while True:
        try:
            run = _call(args, "GET", f"/api/evals/runs/{run_id}")
            away_since = None
        except (urllib.error.URLError, OSError) as exc:
            away_since = away_since or time.monotonic()
            if time.monotonic() - away_since > UNREACHABLE_S:
                raise Failure(f"the gateway at {_base(args)} is unreachable ({exc})") from None
            time.sleep(POLL_S)
            continue
        if run["done"] != last:
            last = run["done"]
            _bar(run["done"], run["total"])
        if run["status"] in ("finished", "failed", "cancelled"):
            sys.stderr.write("\n")
            return run  # type: ignore[no-any-return]
        time.sleep(POLL_S)


def _bar(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


# ---- the suite file -----------------------------------------------------------------------------


def load_suite(path: Path) -> dict[str, Any]:
    """The suite document with its `file://` references read (relative to the suite's folder)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise Failure(f"{path}: {exc}") from None
    if not isinstance(doc, dict):
        raise Failure(f"{path}: a suite is a mapping (prompts, providers, tests)")
    folder = path.parent
    if isinstance(doc.get("prompts"), list | str):
        prompts = doc["prompts"] if isinstance(doc["prompts"], list) else [doc["prompts"]]
        doc["prompts"] = [_prompt_file(folder, p) for p in prompts]
    tests = doc.get("tests")
    if isinstance(tests, str) and tests.startswith("file://"):
        doc["tests"] = _tests_file(folder, tests)
    elif isinstance(tests, list):
        doc["tests"] = [
            t for entry in tests for t in (_tests_file(folder, entry) if isinstance(entry, str) else [entry])
        ]
    listed = doc.get("tests")
    for test in [doc.get("defaultTest") or {}, *(listed if isinstance(listed, list) else [])]:
        if isinstance(test, dict) and isinstance(test.get("vars"), dict):
            test["vars"] = {k: _read(folder, v) if _is_file(v) else v for k, v in test["vars"].items()}
    return doc


def _is_file(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("file://")


def _read(folder: Path, ref: str) -> str:
    target = folder / ref[len("file://") :]
    try:
        return target.read_text()
    except OSError as exc:
        raise Failure(f"{ref}: {exc}") from None


def _prompt_file(folder: Path, p: Any) -> Any:
    if isinstance(p, dict) and _is_file(p.get("id")):
        return {**{k: v for k, v in p.items() if k != "id"}, **_prompt_file_body(folder, p["id"])}
    return _prompt_file_body(folder, p) if _is_file(p) else p


def _prompt_file_body(folder: Path, ref: str) -> dict[str, Any]:
    text = _read(folder, ref)
    if ref.endswith(".json"):
        return {"messages": json.loads(text), "label": Path(ref).name}
    return {"raw": text, "label": Path(ref).name}


def _tests_file(folder: Path, ref: str) -> list[Any]:
    if not _is_file(ref):
        return [ref]
    from keel.evals.assertions import InvalidSuite
    from keel.evals.datasets import read_csv, read_jsonl
    from keel.evals.suite import dataset_tests

    text = _read(folder, ref)
    try:
        if ref.endswith(".csv"):
            return dataset_tests(read_csv(text, ref))
        if ref.endswith(".jsonl"):
            return dataset_tests(read_jsonl(text, ref))
    except InvalidSuite as err:
        raise Failure(str(err)) from None
    import yaml

    loaded = yaml.safe_load(text)
    return loaded if isinstance(loaded, list) else [loaded]


# ---- verbs --------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    if args.resume:
        run_id = args.resume
    else:
        path = Path(args.suite)
        doc = load_suite(path)
        body = {
            "suite": doc, "repeat": args.repeat, "concurrency": args.concurrency, "label": args.label,
            "name": args.name or doc.get("description") or path.stem, "cache": args.cache,
        }  # fmt: skip
        run_id = _call(args, "POST", "/api/evals/runs", body)["id"]
        print(f"run {run_id}", file=sys.stderr)
    run = _follow(args, run_id)
    if run["status"] != "finished":
        raise Failure(f"run {run_id} {run['status']}: {run.get('error') or 'see keel eval show'}")
    query = {"max_regressions": str(args.max_regressions), "alpha": str(args.alpha)}
    if args.baseline:
        query["baseline"] = args.baseline
    if args.min_pass_rate is not None or not args.baseline:  # no baseline: promptfoo's rule, every test passes
        query["min_pass_rate"] = str(1.0 if args.min_pass_rate is None else args.min_pass_rate)
    comparison = _call(args, "GET", f"/api/evals/runs/{run_id}/compare?{urllib.parse.urlencode(query)}")
    if args.junit or args.html:
        _reports(args, run_id, comparison)
    if args.json:
        emit_json(comparison)
    else:
        _print(comparison)
    return int(comparison["exit_code"])


def _reports(args: argparse.Namespace, run_id: str, comparison: dict[str, Any]) -> None:
    from keel.evals.report import junit, page

    full = _call(args, "GET", f"/api/evals/runs/{run_id}?results=1")
    if args.junit:
        Path(args.junit).write_text(junit(full, full["results"], comparison))
    if args.html:
        Path(args.html).write_text(page(full, full["results"], comparison))


def _print(c: dict[str, Any]) -> None:
    s = c["run"].get("summary") or {}
    low, high = s.get("ci95") or (0, 0)
    print(
        f"{c['run']['suite']}: {s.get('passed', 0)}/{s.get('results', 0)} passed ({s.get('pass_rate', 0):.1%}, "
        f"95% CI {low:.1%}-{high:.1%}), cost ${s.get('cost_usd', 0):.4f}"
    )
    if c["baseline"]:
        print(f"baseline {c['baseline']['id']} ({(c['baseline'].get('summary') or {}).get('pass_rate', 0):.1%})")
    for ch in c["changes"]:
        print(
            f"  {ch['change']:<14} {ch['key']}  {ch['base_pass_rate']:.0%} -> {ch['pass_rate']:.0%}  score {ch['delta']:+.3f}"
        )
        for reason in ch.get("reasons") or ():
            print(f"      {reason[:200]}")
    print("gate: holds" if c["holds"] else "gate: REGRESSED — " + "; ".join(c["reasons"]))


def run_show(args: argparse.Namespace) -> int:
    run = _call(args, "GET", f"/api/evals/runs/{args.run_id}?results=1")
    if args.json:
        emit_json(run)
        return 0
    s = run.get("summary") or {}
    print(
        f"{run['id']}  {run['suite']}  {run['status']}  {run['done']}/{run['total']}  pass rate {s.get('pass_rate', 0):.1%}"
    )
    table(
        ["item", "runs", "passes", "score"],
        [[i["key"], i["runs"], i["passes"], f"{i['score']:.3f}"] for i in run["items"]],
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({k: v for k, v in (("suite", args.suite), ("label", args.label)) if v})
    runs = _call(args, "GET", "/api/evals/runs" + (f"?{query}" if query else ""))["data"]
    if args.json:
        emit_json(runs)
        return 0
    rows = [
        [r["id"], r["suite"], r["label"], r["status"], f"{r['done']}/{r['total']}",
         f"{(r.get('summary') or {}).get('pass_rate', 0):.1%}", when(r["created_at"])]
        for r in runs
    ]  # fmt: skip
    table(["id", "suite", "label", "status", "done", "pass rate", "created"], rows)
    return 0
