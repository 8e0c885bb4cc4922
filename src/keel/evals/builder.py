"""The evals capability's builder: the `eval.run` job kind (suite runs through the pipeline), and
`Evals`, what the edges use to create runs. The local embedder (`similar`, `answer-relevance`) loads on
the first run that needs it; without the `semantic` extra those assertions report an error verdict."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from keel.evals.assertions import Embed
from keel.evals.runner import KIND, EvalRunner
from keel.gateway.capability import Context, Contribution, Pipeline
from keel.jobs.queue import JobQueue
from keel.store.protocols import Store

log = logging.getLogger("keel.evals")


class _LazyEmbedder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._embed: Embed | None = None
        self._tried = False

    def __call__(self) -> Embed | None:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    from keel.embedding.model import LocalEmbedder, ModelNotInstalled

                    model = LocalEmbedder()
                    self._embed = lambda texts: model.embed(texts).tolist()
                except (ModelNotInstalled, ImportError) as exc:
                    log.warning("evals: the local embedder is unavailable (%s); similar scores will be errors", exc)
            return self._embed


@dataclass(frozen=True, slots=True)
class Evals:
    store: Store
    queue: JobQueue
    python_modules: tuple[str, ...] = ()


def build(ctx: Context) -> Contribution:
    queue = ctx.get(JobQueue)
    python = tuple(ctx.config.evals.python_modules)
    ctx.add(Evals(ctx.store, queue, python))
    payloads = ctx.config.traces.store_payloads
    runner = EvalRunner(ctx.store, lambda: ctx.get(Pipeline).handler, _LazyEmbedder(), payloads, python)
    return Contribution(jobs={KIND: runner})
