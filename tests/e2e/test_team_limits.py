"""Keys belong to a team, and limits per team hold across its keys: a `team` rule in keel.yaml and a team
override over the admin API, charged from the key's team (Principal.team, from the key cache: no query
per call). A key of another team, or of none, is not charged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.tenancy.directory import Directory
from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config


def _gateway(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> tuple[Gateway, dict[str, str]]:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["limits"] = {"defaults": [{"scope": ["team"], "rpm": 3}]}
    gw: Gateway = make_gateway(raw)
    return gw, {"authorization": f"Bearer {gw.admin}"}


def _key(gw: Gateway, admin: dict[str, str], team: str | None) -> str:
    r = httpx.post(gw.url + "/api/keys", json={"tenant": "t1", "name": f"k-{team}", "team": team}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["team"] == team
    return str(r.json()["key"])


def _chat(gw: Gateway, key: str) -> httpx.Response:
    body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gw.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def test_a_team_limit_holds_across_its_keys(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw, admin = _gateway(make_gateway, up, tmp_path)
    for team in ("ml", "web"):
        assert httpx.post(gw.url + "/api/teams", json={"tenant": "t1", "name": team}, headers=admin).status_code == 201
    a, b, other = _key(gw, admin, "ml"), _key(gw, admin, "ml"), _key(gw, admin, "web")
    assert [_chat(gw, k).status_code for k in (a, a, b)] == [200, 200, 200]
    refused = _chat(gw, b)
    assert refused.status_code == 429
    assert "rpm 3 for team=t1:ml" in refused.json()["error"]["message"]
    assert _chat(gw, a).status_code == 429  # the team's, not the key's: both keys are out
    assert _chat(gw, other).status_code == 200  # another team counts on its own
    assert _chat(gw, gw.key).status_code == 200  # a key in no team has no team limit

    usage = httpx.get(gw.url + "/api/limits/usage", params={"tenant": "t1", "team": "ml"}, headers=admin).json()
    [team_counter] = [c for c in usage["data"] if c["counter"].startswith("team=t1:ml|")]
    assert (team_counter["limit"], team_counter["used"]) == (3, 3)

    # an override for the team replaces the default for it, once the overrides are refreshed
    r = httpx.put(gw.url + "/api/limits/team/t1:ml", json={"limits": {"rpm": 5}}, headers=admin)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while _chat(gw, a).status_code != 200:
        assert time.monotonic() < deadline, "the team override never applied"
        time.sleep(0.05)
    assert httpx.put(gw.url + "/api/limits/team/t1:nope", json={"limits": {"rpm": 5}}, headers=admin).status_code == 404


def test_a_developer_makes_and_sees_only_their_teams_keys(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw, admin = _gateway(make_gateway, up, tmp_path)
    for team in ("ml", "web"):
        httpx.post(gw.url + "/api/teams", json={"tenant": "t1", "name": team}, headers=admin)
    web_key = httpx.post(gw.url + "/api/keys", json={"tenant": "t1", "team": "web"}, headers=admin).json()
    d = gw.runtime.get(Directory)

    async def token() -> str:
        await d.add_user("t1", ("developer",), user_id="dev", team="ml")
        return (await d.issue_token("dev")).token

    dev = {"authorization": f"Bearer {asyncio.run(token())}"}
    mine = httpx.post(gw.url + "/api/keys", json={"team": "ml", "name": "mine"}, headers=dev)
    assert mine.status_code == 201 and mine.json()["tenant"] == "t1"
    assert httpx.post(gw.url + "/api/keys", json={"team": "web"}, headers=dev).status_code == 403
    assert httpx.post(gw.url + "/api/keys", json={}, headers=dev).status_code == 403
    listed = httpx.get(gw.url + "/api/keys", headers=dev).json()["data"]
    assert [k["id"] for k in listed] == [mine.json()["id"]]
    assert httpx.post(f"{gw.url}/api/keys/{web_key['id']}/revoke", headers=dev).status_code == 404
    assert httpx.post(f"{gw.url}/api/keys/{mine.json()['id']}/revoke", headers=dev).status_code == 200


@pytest.mark.parametrize("team", ["nope", "a:b"])
def test_a_key_names_a_team_that_exists(make_gateway: Any, up: FakeUpstream, tmp_path: Path, team: str) -> None:
    gw, admin = _gateway(make_gateway, up, tmp_path)
    r = httpx.post(gw.url + "/api/keys", json={"tenant": "t1", "team": team}, headers=admin)
    assert r.status_code == 404 and "No team" in r.json()["error"]["message"]
