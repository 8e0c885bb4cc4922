"""What passed the schema, for the checks beyond it: when validation fails, the checks still run, on a
draft of the file with each rejected part cut away, so that schema problems and check problems come
in one report.

The part cut for a bad value is the smallest that can go: an unknown key; else the value itself if
its field has a default (the draft's paths of such values go to `Outline.rejected`, so a check does not
read the default as the file's word); else the dict entry (a provider, an alias) or list item (a
target, a rule) holding it. A cut list item shifts the items after it: `renumber` puts each issue's
path back on the index the file has.
"""

from __future__ import annotations

import copy
import dataclasses
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import ValidationError

from keel.config.root import Config
from keel.errors import ConfigIssue

_MAX_CUTS = 10_000  # each cut removes a part of the file: a draft validates long before this
Loc = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Draft:
    config: Config
    rejected: frozenset[str]  # draft paths of values the schema rejected, now their field's default
    cut_items: tuple[tuple[str, int], ...]  # (list's path, index in the draft then), in cut order

    def renumber(self, issues: list[ConfigIssue]) -> list[ConfigIssue]:
        """Issues about the draft, with each list index as the file has it."""
        return [dataclasses.replace(i, path=self._file_path(i.path)) for i in issues]

    def _file_path(self, path: str) -> str:
        for prefix, cut in reversed(self.cut_items):
            head = f"{prefix}["
            if path.startswith(head):
                index, rest = path[len(head) :].split("]", 1)
                if int(index) >= cut:
                    path = f"{head}{int(index) + 1}]{rest}"
        return path


def draft(expanded: dict[str, Any], errors: list[Any]) -> Draft:
    """Cut the first rejected part and validate again, until the rest passes."""
    raw = copy.deepcopy(expanded)
    rejected: set[str] = set()
    cut_items: list[tuple[str, int]] = []
    for _ in range(_MAX_CUTS):
        loc = tuple(errors[0]["loc"])
        part, is_field = (loc, False) if errors[0]["type"] == "extra_forbidden" else _part(loc)
        holder = _cut(raw, part)
        if holder is None:
            break
        if is_field:
            rejected.add(path_of(part))
        elif isinstance(holder, list) and isinstance(part[-1], int):
            cut_items.append((path_of(part[:-1]), part[-1]))
            rejected = _shift(rejected, *cut_items[-1])
        try:
            return Draft(Config.model_validate(raw), frozenset(rejected), tuple(cut_items))
        except ValidationError as exc:
            errors = exc.errors()
    return Draft(Config(), frozenset(), ())


def _part(loc: Loc) -> tuple[Loc, bool]:
    """The smallest part holding `loc` that can go (a field with a default, a dict entry, a list item),
    and whether it is a field."""
    kind: Any = Config
    deepest, is_field = 0, False
    for i, part in enumerate(loc):
        fields = getattr(kind, "model_fields", None)
        if fields is not None and part in fields:
            if not fields[part].is_required():
                deepest, is_field = i, True
            kind = _optional(fields[part].annotation)
        else:  # a dict's key or a list's index: step into what the mapping or list holds
            deepest, is_field = i, False
            kind = _optional(get_args(kind)[-1]) if get_origin(kind) in (dict, list) else None
    return loc[: deepest + 1], is_field


def _shift(paths: set[str], prefix: str, cut: int) -> set[str]:
    """Draft paths after the item `cut` of the list at `prefix` went: the ones below it go too, the ones
    after it move up one."""
    head, out = f"{prefix}[", set()
    for path in paths:
        if path.startswith(head):
            index, rest = path[len(head) :].split("]", 1)
            if int(index) == cut:
                continue
            if int(index) > cut:
                path = f"{head}{int(index) - 1}]{rest}"
        out.add(path)
    return out


def _optional(kind: Any) -> Any:
    """`X | None` → X."""
    if get_origin(kind) in (Union, UnionType):
        inner = [a for a in get_args(kind) if a is not type(None)]
        return inner[0] if len(inner) == 1 else None
    return kind


def _cut(raw: dict[str, Any], part: Loc) -> Any:
    """Remove `part` from the draft, else the whole section holding it. The container it was cut
    from, or None when nothing was there."""
    node: Any = raw
    try:
        for key in part[:-1]:
            node = node[key]
        del node[part[-1]]
    except (KeyError, IndexError, TypeError):
        return raw if raw.pop(str(part[0]), None) is not None else None
    return node


def path_of(loc: Loc) -> str:
    """Pydantic's loc as written in issues: models.a.targets[0].model."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
