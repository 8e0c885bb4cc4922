"""Prompts and RAG collections belong to a team, as keys do (decision 0064), over real HTTP on SQLite and
PostgreSQL: a developer of team ml makes ml's, changes and lists only ml's (another team's, or a
tenant-wide one, is 403 naming its owner); an owner or admin reaches every one and sets or clears `team`;
a call that uses a prompt with a key is unchanged."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

from keel.tenancy.directory import Directory
from keel.testing import FakeUpstream
from tests.conftest import Gateway
from tests.e2e.test_rag_ingest import MODEL, config


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _people(gw: Gateway) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Teams ml and web in t1; a developer of each, and an admin: their headers."""
    d = gw.runtime.get(Directory)

    async def make() -> list[str]:
        tokens = []
        for team in ("ml", "web"):
            await d.add_team("t1", team)
        for uid, roles, team in (("dev", "developer", "ml"), ("webdev", "developer", "web"), ("ada", "admin", None)):
            await d.add_user("t1", (roles,), user_id=uid, team=team)
            tokens.append((await d.issue_token(uid)).token)
        return tokens

    dev, webdev, ada = asyncio.run(make())
    return _auth(dev), _auth(webdev), _auth(ada)


def _prompt(name: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"name": name, "messages": [{"role": "user", "content": text}], "alias": "sim", **extra}


def test_a_developer_reaches_only_their_teams_prompts(gateway: Gateway) -> None:
    gw = gateway
    dev, webdev, ada = _people(gw)
    post = lambda body, who: httpx.post(gw.url + "/api/prompts", json=body, headers=who)  # noqa: E731

    old = post({**_prompt("old"), "tenant": "t1"}, _auth(gw.admin))  # the admin token: tenant-wide
    assert old.status_code == 201 and old.json()["team"] is None
    mine = post(_prompt("mine", label="production"), dev)
    assert mine.status_code == 201 and mine.json()["team"] == "ml"
    assert post(_prompt("theirs"), webdev).json()["team"] == "web"

    refused = post(_prompt("other", team="web"), dev)
    assert refused.status_code == 403 and "'team'" in refused.json()["error"]["message"]
    for name, owner in (("theirs", "team 'web'"), ("old", "the whole tenant")):
        pushed = post(_prompt(name, "v2"), dev)
        assert pushed.status_code == 403 and owner in pushed.json()["error"]["message"], pushed.text
        moved = httpx.put(f"{gw.url}/api/prompts/{name}/labels/production", json={"version": 1}, headers=dev)
        assert moved.status_code == 403 and owner in moved.json()["error"]["message"]
        back = httpx.post(f"{gw.url}/api/prompts/{name}/labels/production/rollback", headers=dev)
        assert back.status_code == 403
        rollout = {"label": "production", "to": 1, "weight": 10}
        assert httpx.post(f"{gw.url}/api/prompts/{name}/rollouts", json=rollout, headers=dev).status_code == 403
    assert [v["version"] for v in httpx.get(gw.url + "/api/prompts/theirs/versions", headers=dev).json()["data"]] == [1]
    assert post(_prompt("mine", "v2"), dev).json()["version"] == 2
    moved = httpx.put(f"{gw.url}/api/prompts/mine/labels/production", json={"version": 2}, headers=dev)
    assert moved.status_code == 200

    listed = lambda who: {p["name"]: p["team"] for p in httpx.get(gw.url + "/api/prompts", headers=who).json()["data"]}  # noqa: E731
    assert listed(dev) == {"mine": "ml"}
    assert listed(ada) == {"old": None, "mine": "ml", "theirs": "web"}
    page = lambda who: set(re.findall(r'data-prompt="([^"]+)"', httpx.get(gw.url + "/ui/prompts", headers=who).text))  # noqa: E731
    assert (page(dev), page(ada)) == ({"mine"}, {"old", "mine", "theirs"})  # the dashboard lists as the API does

    # an admin gives a prompt to a team (or back to the tenant) by pushing it with `team`
    given = post(_prompt("old", team="ml"), ada)
    assert (given.status_code, given.json()["team"], given.json()["created"]) == (200, "ml", False)
    assert post(_prompt("old", "v2"), dev).status_code == 201
    assert post(_prompt("x", team="nope"), ada).status_code == 404
    assert post(_prompt("old", team=None), ada).json()["team"] is None
    assert post(_prompt("old", "v3"), dev).status_code == 403

    # using a prompt is unchanged: a key of no team calls team ml's prompt
    body = {"model": "sim", "prompt": {"id": "mine", "label": "production"}}
    call = httpx.post(gw.base_url + "/chat/completions", json=body, headers=_auth(gw.key))
    assert call.status_code == 200, call.text


def test_a_developer_reaches_only_their_teams_collections(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    gw: Gateway = make_gateway(config(up, storage_url, tmp_path))
    dev, webdev, ada = _people(gw)
    base = gw.url + "/api/rag/collections"
    post = lambda body, who: httpx.post(base, json={"model": MODEL, **body}, headers=who)  # noqa: E731

    assert post({"name": "old", "tenant": "t1"}, _auth(gw.admin)).json()["team"] is None
    mine = post({"name": "mine"}, dev)
    assert mine.status_code == 201 and mine.json()["team"] == "ml"
    assert post({"name": "theirs"}, webdev).json()["team"] == "web"
    refused = post({"name": "other", "team": "web"}, dev)
    assert refused.status_code == 403 and "'team'" in refused.json()["error"]["message"]

    doc = {"text": "Keel is a gateway."}
    for name, owner in (("theirs", "team 'web'"), ("old", "the whole tenant")):
        put = httpx.put(f"{base}/{name}/documents/a.txt", json=doc, headers=dev)
        assert put.status_code == 403 and owner in put.json()["error"]["message"], put.text
        assert post({"name": name}, dev).status_code == 403
        assert httpx.put(f"{base}/{name}/rerank", json={"model": "hash:64"}, headers=dev).status_code == 403
        assert httpx.delete(f"{base}/{name}/rerank", headers=dev).status_code == 403
        rechunk = {"chunking": {"max_tokens": 64, "overlap": 0}}
        assert httpx.post(f"{base}/{name}/rechunk", json=rechunk, headers=dev).status_code == 403
        assert httpx.delete(f"{base}/{name}/documents/a.txt", headers=dev).status_code == 403
        assert httpx.delete(f"{base}/{name}", headers=dev).status_code == 403
        assert httpx.get(f"{base}/{name}", headers=dev).status_code == 200  # reading is unchanged
    assert httpx.put(f"{base}/mine/documents/a.txt", json=doc, headers=dev).status_code == 201

    listed = lambda who: {c["name"]: c["team"] for c in httpx.get(base, headers=who).json()["data"]}  # noqa: E731
    assert listed(dev) == {"mine": "ml"}
    assert listed(ada) == {"old": None, "mine": "ml", "theirs": "web"}

    # an admin gives a collection to a team, or back to the tenant, by creating it again with `team`
    assert post({"name": "old", "team": "ml"}, ada).json()["team"] == "ml"
    assert httpx.put(f"{base}/old/documents/a.txt", json=doc, headers=dev).status_code == 201
    assert post({"name": "old", "team": None}, ada).json()["team"] is None
    assert post({"name": "x", "team": "nope"}, ada).status_code == 404
    assert httpx.delete(f"{base}/mine", headers=dev).status_code == 200


def test_a_developer_runs_evals_as_their_teams_keys_only(gateway: Gateway) -> None:
    gw = gateway
    dev, _, _ = _people(gw)
    admin = _auth(gw.admin)
    keys = {t: httpx.post(gw.url + "/api/keys", json={"tenant": "t1", "team": t}, headers=admin).json()["id"]
            for t in ("ml", "web")}  # fmt: skip
    suite = {"prompts": ["{{q}}"], "providers": ["openai:sim"], "tests": [{"vars": {"q": "x"}}]}
    run = lambda key_id: httpx.post(gw.url + "/api/evals/runs", json={"suite": suite, "key_id": key_id}, headers=dev)  # noqa: E731
    assert run(keys["web"]).status_code == 404  # as the keys API: another team's key is not theirs to name
    assert run(keys["ml"]).status_code == 201
