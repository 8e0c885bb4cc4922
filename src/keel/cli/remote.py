"""Asking the running gateway's admin API, for state that lives in its process or in Redis (not the database)."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from keel.cli.context import load_config
from keel.cli.output import Failure


def add_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the gateway's base URL (default: from server.host/port in keel.yaml)")


def admin_get(args: argparse.Namespace, path: str, params: dict[str, str | None] | None = None) -> Any:
    """GET `path` from the gateway's admin API (with the query `params` that are set); its decoded JSON."""
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
    return _admin(args, "GET", path + (f"?{query}" if query else ""), None, timeout=5)


def admin_post(args: argparse.Namespace, path: str, body: Any, *, timeout: float = 300) -> Any:
    """POST `body` as JSON to `path` of the gateway's admin API; its decoded JSON."""
    return _admin(args, "POST", path, json.dumps(body).encode(), timeout=timeout)


def _admin(args: argparse.Namespace, method: str, path: str, data: bytes | None, *, timeout: float) -> Any:
    cfg = load_config(args)
    if not cfg.admin_token:
        raise Failure("the admin API is disabled: set admin_token in keel.yaml")
    base = (args.url or f"http://{cfg.server.host}:{cfg.server.port}").rstrip("/")
    headers = {"authorization": f"Bearer {cfg.admin_token}"}
    if data is not None:
        headers["content-type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise Failure(_refused(base, exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Failure(f"cannot reach the gateway at {base} ({exc}); is `keel serve` running? try --url") from None


def _refused(base: str, exc: urllib.error.HTTPError) -> str:
    if exc.code in (401, 403):
        return f"the gateway at {base} answered HTTP {exc.code}; check admin_token"
    try:
        message = json.load(exc)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"the gateway at {base} answered HTTP {exc.code}"
    return f"the gateway at {base} answered HTTP {exc.code}: {message}"
