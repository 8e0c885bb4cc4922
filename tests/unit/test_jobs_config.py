"""`jobs:` in keel.yaml: defaults, and the checks that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel import config as keel_config
from keel.errors import ConfigError


def load(tmp_path: Path, text: str) -> keel_config.Config:
    path = tmp_path / "keel.yaml"
    path.write_text(text)
    return keel_config.load(path, env={})


def test_defaults_and_the_heartbeat_a_third_of_the_lease(tmp_path: Path) -> None:
    cfg = load(tmp_path, "jobs:\n  lease_s: 9\n  kinds: {rag.ingest: {concurrency: 2}}\n")
    assert (cfg.jobs.enabled, cfg.jobs.workers, cfg.jobs.queues, cfg.jobs.beat_s) == (True, 4, ["default"], 3.0)
    assert cfg.jobs.kinds["rag.ingest"].concurrency == 2


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("jobs:\n  lease_s: 5\n  heartbeat_s: 9\n", "jobs.heartbeat_s", "not below lease_s"),
        ("jobs:\n  plugins: [mypackage.jobs]\n", "jobs.plugins[0]", "not module:attr"),
        ("jobs:\n  workers: 0\n", "jobs.workers", ""),
        ("jobs:\n  kinds: {k: {concurency: 2}}\n", "jobs.kinds.k.concurency", "unknown key"),
    ],
)
def test_bad_jobs_settings_name_the_key(tmp_path: Path, text: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert f"  {path}:" in err.value.message and words in err.value.message
