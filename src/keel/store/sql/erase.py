"""Deleting one subject's rows, store by store, over any SQL dialect (`SubjectErasure`).

A subject is a whole tenant, or one user within a tenant. Each kind (a store) is a list of steps run in
order, children before the rows they hang off, so a crash between two steps leaves nothing a re-run
cannot find again. A delete step picks at most `limit` rows by their key (reporting any blob keys they
hold first, so bytes are deleted before the rows pointing at them: a crash leaves a row a re-run finds,
never bytes nothing points at), deletes them, and repeats until a round picks fewer. An anonymise step
sets a column naming the user to NULL (authorship of a tenant's prompts stays the tenant's data).

What "a user's data" means per store is written in `USER_SCOPE` below and in docs/decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.store.sql.dialect import Database

M = "{m}"  # replaced by the dialect's placeholder
USER_TRACES = "SELECT id FROM traces WHERE tenant = {m} AND user_id = {m}"
USER_KEYS = "SELECT id FROM api_keys WHERE tenant = {m} AND user_id = {m}"
TENANT_KEYS = "SELECT id FROM api_keys WHERE tenant = {m}"
USER_BATCHES = f"SELECT id FROM batches WHERE tenant = {{m}} AND key_id IN ({USER_KEYS})"
USER_RUNS = f"SELECT id FROM eval_runs WHERE tenant = {{m}} AND key_id IN ({USER_KEYS})"
_TU = ("tenant", "user")  # the params of a subquery over (tenant, user)
_PAYLOAD_BY_KEY = (  # a job's JSON payload naming one of the user's keys (orjson: no spaces)
    "EXISTS (SELECT 1 FROM api_keys k WHERE k.tenant = {m} AND k.user_id = {m}"
    " AND jobs.payload LIKE ({m} || k.id || {m}))"
)


@dataclass(frozen=True, slots=True)
class Step:
    """Rows of `table` keyed by `keys` matching `where` (params named by `params`: 'tenant', 'user',
    'like_tenant', 'like_user'); `blob` names a column holding a blob key. `null` set: anonymise that
    column instead of deleting (for a user)."""

    table: str
    keys: tuple[str, ...]
    where: str
    params: tuple[str, ...]
    blob: str | None = None
    null: str | None = None


def _t(table: str, keys: tuple[str, ...], column: str = "tenant", blob: str | None = None) -> Step:
    return Step(table, keys, f"{column} = {{m}}", ("tenant",), blob)


_BATCH_FILES = (
    "SELECT input_file_id FROM batches WHERE id IN ({q}) UNION SELECT output_file_id FROM batches WHERE id IN ({q})"
    " UNION SELECT error_file_id FROM batches WHERE id IN ({q})"
)

# kind -> steps for a whole tenant
TENANT_SCOPE: dict[str, tuple[Step, ...]] = {
    "prompt_feedback": (_t("prompt_feedback", ("trace_id", "rater")),),
    "eval_scores": (_t("eval_scores", ("trace_id", "rule", "scorer")),),
    "datasets": (
        _t("dataset_items", ("tenant", "name", "version", "idx")),
        _t("datasets", ("tenant", "name", "version")),
    ),
    "eval_runs": (
        Step(
            "eval_results",
            ("run_id", "item", "rep"),
            "run_id IN (SELECT id FROM eval_runs WHERE tenant = {m})",
            ("tenant",),
        ),
        _t("eval_runs", ("id",)),
    ),
    "prompts": (
        _t("prompt_label_history", ("tenant", "name", "label", "at")),
        _t("prompt_rollouts", ("tenant", "name", "label")),
        _t("prompt_labels", ("tenant", "name", "label")),
        _t("prompt_versions", ("tenant", "name", "version")),
        _t("prompts", ("tenant", "name")),
    ),
    "agent_runs": (_t("agent_calls", ("id",)), _t("agent_runs", ("id",))),
    "agent_tools": (_t("agent_tools", ("tenant", "name")),),
    "agent_secrets": (_t("agent_secrets", ("tenant", "name")),),
    "jobs": (_t("jobs", ("id",)),),
    "batches": (
        Step(
            "batch_results",
            ("batch_id", "custom_id"),
            "batch_id IN (SELECT id FROM batches WHERE tenant = {m})",
            ("tenant",),
        ),
        _t("batches", ("id",)),
    ),
    "files": (_t("files", ("id",), blob="blob_key"),),
    "limit_alerts": (
        Step("limit_alerts", ("counter", "period", "threshold"), "counter LIKE {m} ESCAPE '!'", ("like_tenant",)),
    ),
    "limit_overrides": (
        Step("limit_overrides", ("scope", "subject"), f"scope = 'key' AND subject IN ({TENANT_KEYS})", ("tenant",)),
        Step("limit_overrides", ("scope", "subject"), "scope = 'tenant' AND subject = {m}", ("tenant",)),
    ),
    "rag_key_groups": (_t("rag_key_groups", ("key_id",)),),
    "keys": (_t("api_keys", ("id",)),),
    "tenancy": (
        Step(
            "tenancy_tokens",
            ("id",),
            "tenant = {m} OR user_id IN (SELECT id FROM tenancy_users WHERE tenant = {m})",
            ("tenant", "tenant"),
        ),
        _t("tenancy_users", ("id",)),
        _t("tenancy_teams", ("tenant", "name")),
    ),
    "agent_defs": (_t("agent_defs", ("tenant", "name")),),
    "tenant": (_t("tenants", ("name",), column="name"),),
}

# kind -> steps for one user within a tenant (a kind absent here holds nothing of a user's own)
USER_SCOPE: dict[str, tuple[Step, ...]] = {
    # feedback the user gave, and any feedback on the user's calls
    "prompt_feedback": (
        Step(
            "prompt_feedback",
            ("trace_id", "rater"),
            f"tenant = {{m}} AND (rater = {{m}} OR trace_id IN ({USER_TRACES}))",
            ("tenant", "user", *_TU),
        ),
    ),
    # online scores of the user's calls
    "eval_scores": (Step("eval_scores", ("trace_id", "rule", "scorer"), f"trace_id IN ({USER_TRACES})", _TU),),
    # dataset items sampled from the user's calls (the dataset itself is the tenant's)
    "datasets": (
        Step(
            "dataset_items",
            ("tenant", "name", "version", "idx"),
            f"tenant = {{m}} AND trace_id IN ({USER_TRACES})",
            ("tenant", *_TU),
        ),
    ),
    # eval runs started with the user's keys
    "eval_runs": (
        Step("eval_results", ("run_id", "item", "rep"), f"run_id IN ({USER_RUNS})", ("tenant", *_TU)),
        Step("eval_runs", ("id",), f"id IN ({USER_RUNS})", ("tenant", *_TU)),
    ),
    # the user's name on the tenant's prompts: anonymised
    "prompts": (
        Step("prompt_versions", (), "tenant = {m} AND author = {m}", _TU, null="author"),
        Step("prompt_labels", (), "tenant = {m} AND updated_by = {m}", _TU, null="updated_by"),
        Step("prompt_rollouts", (), "tenant = {m} AND started_by = {m}", _TU, null="started_by"),
        Step("prompt_label_history", (), "tenant = {m} AND actor = {m}", _TU, null="actor"),
    ),
    # the user's async calls (queued with their keys or naming them), and jobs of their batches and eval runs
    "jobs": (
        Step(
            "jobs",
            ("id",),
            f"tenant = {{m}} AND ({_PAYLOAD_BY_KEY} OR payload LIKE {{m}} ESCAPE '!')",
            ("tenant", *_TU, "key_pre", "key_post", "json_user"),
        ),
        Step(
            "jobs",
            ("id",),
            f"tenant = {{m}} AND id IN (SELECT job_id FROM batches WHERE id IN ({USER_BATCHES}))",
            ("tenant", "tenant", *_TU),
        ),
        Step(
            "jobs",
            ("id",),
            f"tenant = {{m}} AND id IN (SELECT job_id FROM eval_runs WHERE id IN ({USER_RUNS}))",
            ("tenant", "tenant", *_TU),
        ),
    ),
    # the files of the user's batches (input and output), then the batches made with the user's keys
    "files": (
        Step(
            "files",
            ("id",),
            "tenant = {m} AND id IN (" + _BATCH_FILES.format(q=USER_BATCHES) + ")",
            ("tenant", *(("tenant", *_TU) * 3)),
            blob="blob_key",
        ),
    ),
    "batches": (
        Step("batch_results", ("batch_id", "custom_id"), f"batch_id IN ({USER_BATCHES})", ("tenant", *_TU)),
        Step("batches", ("id",), f"id IN ({USER_BATCHES})", ("tenant", *_TU)),
    ),
    "limit_alerts": (
        Step("limit_alerts", ("counter", "period", "threshold"), "counter LIKE {m} ESCAPE '!'", ("like_user",)),
    ),
    "limit_overrides": (
        Step("limit_overrides", ("scope", "subject"), f"scope = 'key' AND subject IN ({USER_KEYS})", _TU),
    ),
    "rag_key_groups": (Step("rag_key_groups", ("key_id",), f"key_id IN ({USER_KEYS})", _TU),),
    # the user's own keys (revoked first, at the start of the purge)
    "keys": (Step("api_keys", ("id",), "tenant = {m} AND user_id = {m}", _TU),),
    # the user's personal access tokens and their record in the directory (USER is both the attribution id of
    # calls and the platform user's id)
    "tenancy": (
        Step(
            "tenancy_tokens", ("id",), "user_id IN (SELECT id FROM tenancy_users WHERE tenant = {m} AND id = {m})", _TU
        ),
        Step("tenancy_users", ("id",), "tenant = {m} AND id = {m}", _TU),
    ),
}


def _like(value: str) -> str:
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _bind(step: Step, tenant: str, user: str | None) -> list[Any]:
    values = {
        "tenant": tenant,
        "user": user,
        "like_tenant": f"%tenant={_like(tenant)}|%",
        "like_user": f"%user={_like(user or '')}|%",
        "key_pre": '%"key_id":"',
        "key_post": '"%',
        "json_user": '%"user":' + _like(orjson.dumps(user).decode()) + "%",
    }
    return [values[p] for p in step.params]


class SqlErasure:
    _db: Database

    def erase_subject(
        self, kind: str, tenant: str, user: str | None, limit: int, drop_blobs: Callable[[Sequence[str]], None]
    ) -> int:
        steps = (TENANT_SCOPE if user is None else USER_SCOPE).get(kind, ())
        total = 0
        for step in steps:
            total += self._run(step, tenant, user, limit, drop_blobs)
        return total

    def _run(
        self, step: Step, tenant: str, user: str | None, limit: int, drop_blobs: Callable[[Sequence[str]], None]
    ) -> int:
        m = self._db.dialect.mark
        where, params = step.where.replace("{m}", m), _bind(step, tenant, user)
        if step.null is not None:
            with self._db.transaction() as s:
                return s.execute(f"UPDATE {step.table} SET {step.null} = NULL WHERE {where}", params)
        cols = ", ".join(step.keys) + (f", {step.blob}" if step.blob else "")
        total = 0
        while True:
            with self._db.session() as s:
                rows = s.fetchall(f"SELECT {cols} FROM {step.table} WHERE {where} LIMIT {int(limit)}", params)
            if not rows:
                return total
            if step.blob:
                drop_blobs([r[-1] for r in rows if r[-1]])
            n = len(step.keys)
            one = "(" + ", ".join([m] * n) + ")"
            match = f"({', '.join(step.keys)}) IN (VALUES {', '.join([one] * len(rows))})"
            if n == 1:
                match = f"{step.keys[0]} IN ({', '.join([m] * len(rows))})"
            with self._db.transaction() as s:
                total += s.execute(f"DELETE FROM {step.table} WHERE {match}", [v for r in rows for v in r[:n]])
            if len(rows) < limit:
                return total
