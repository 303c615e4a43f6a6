"""Rule-based customer tags from a tags.yaml: safe boolean expressions over score columns, evaluated vectorised.

A tags.yaml holds a list of tags, each a `name` and a `when` expression over the columns of `clv score`
(docs/tags.md has the format, the grammar and the shipped library, experiments/data/tags.yaml):

    tags:
      - name: high value at risk
        when: value_tier in ["top", "high"] and churn_prob_26 > 0.5

Safety: an expression is read with `ast.parse(mode="eval")` (which builds a tree and runs nothing) and
its tree is walked against a whitelist: column names, number/text/true/false literals, lists of
literals, == != < <= > >= in `not in`, and/or/not, + - * / on numbers, and the functions of FUNCTIONS.
Anything else (attributes, subscripts, other calls, lambdas, comprehensions, f-strings, :=, dunder
names) is refused. Nothing the user wrote is ever eval'ed, exec'ed or compiled to code: evaluation walks
the checked tree with numpy over whole columns (text columns are factorised once per call, so ==, in,
has() and contains() are integer operations on codes).

Kinds: every column is a number, text or bool (yes/no); `TagLibrary.check(columns)` checks names and
kinds (no text compared with a number, a `when` that is a yes/no test, a stage that exists) before any
work, and `apply` checks the frame's own columns first. Every problem is one `TagError` line (a
ConfigError) naming the file, the tag's key as the file spells it (`tags[3].when`, 0-based like
every clv-engine file key) and the tag's name.

Missing values (NaN, None, NA): a comparison with a missing value is false, `!=` and `not in`
included; `missing(col)` is true for them (and for "" in a text column). A bare bool column that is
missing counts as false.

`TagLibrary.apply(df)` returns a DataFrame on df's index: one bool column `tag_<slug>` per tag, in the
library's order, then `tags`, the names of the matching tags joined by "; " ("" when none): both
Parquet-friendly (`out["tags"].str.split("; ")` gives lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from experiments.config import read_yaml

from .evaluate import _Eval, _Frame, _joined, _result
from .expressions import _Checker, _names, parse_expression
from .kinds import (
    ANY,
    ENTRY_KEYS,
    FUNCTIONS,
    MAX_NAME,
    MAX_TAGS,
    SCORE_COLUMNS,
    TAGS_FILE_KEYS,
    Tag,
    TagError,
    _cut,
    _near,
    _spec,
    kind_of,
    kinds_of,
    score_columns,
    slug,
)

# ---- the library ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagLibrary:
    """The tags of one tags.yaml, parsed and whitelisted (`load_tags`, `parse_tags`, `default_tags`)."""

    tags: tuple[Tag, ...]
    file: str = "tags.yaml"

    def __len__(self) -> int:
        return len(self.tags)

    def __iter__(self) -> Iterator[Tag]:
        return iter(self.tags)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tags]

    @property
    def columns(self) -> list[str]:
        """The bool columns `apply` writes, one per tag, then "tags"."""
        return [t.column for t in self.tags] + ["tags"]

    def used(self) -> set[str]:
        """Every column name the expressions read."""
        return {n for t in self.tags for n in _names(t.tree)}

    def check(self, columns: Mapping[str, Any]) -> None:
        """Check every tag against `columns` {name: kind}, before any work: unknown columns (with a
        did-you-mean), kinds (text compared with a number, arithmetic on text, a `when` that is not a
        yes/no test), and text values a column never takes (a stage that is not one). A kind is
        "number", "text", "bool" or "any", a dtype, or a list of the values a text column takes."""
        self._annotate({str(k): _spec(v) for k, v in columns.items()})

    def available(self, columns: Mapping[str, Any]) -> tuple["TagLibrary", dict[str, list[str]]]:
        """(the tags whose columns are all in `columns`, {name of a tag left out: the columns it lacks}),
        e.g. for the default library on a score without payment-regularity columns."""
        keep, out = [], {}
        for t in self.tags:
            lacking = sorted(n for n in _names(t.tree) if n not in columns)
            if lacking:
                out[t.name] = lacking
            else:
                keep.append(t)
        return TagLibrary(tuple(keep), self.file), out

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        """One bool column `tag_<slug>` per tag (library order) and `tags`, the matching names joined
        by "; ", on df's index. The tags are checked against df's columns first (`check`)."""
        cols: dict[str, tuple[str, tuple | None]] = {str(c): (ANY, None) for c in df.columns}
        cols.update({c: (kind_of(df[c]), None) for c in self.used() if c in df.columns})  # the kinds read
        kinds = self._annotate(cols)
        frame = _Frame(df)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out: dict[str, Any] = {
                t.column: _result(_Eval(frame, ann).value(t.tree.body), len(df)) for t, ann in zip(self.tags, kinds)
            }
        flags = np.stack(list(out.values())) if out else np.zeros((0, len(df)), dtype=bool)  # (tags, rows)
        out["tags"] = _joined(self.names, flags)
        return pd.DataFrame(out, index=df.index)

    def _annotate(self, columns: dict[str, tuple[str, tuple | None]]) -> list[dict[int, Any]]:
        return [_Checker(self.file, t, columns).check() for t in self.tags]


def parse_tags(raw: Any, file: str = "tags.yaml") -> TagLibrary:
    """The library of a tags document already read from YAML: {tags: [...]} (or the list alone).
    Structure, names and expressions are checked here; columns and kinds by `TagLibrary.check`."""
    if raw is None:
        raise TagError(file, None, "is empty; write a tags: list of name: and when: entries (docs/tags.md)")
    if isinstance(raw, dict):
        for k in raw:
            if k not in TAGS_FILE_KEYS:
                hint = _near(k, TAGS_FILE_KEYS, 0.75)
                raise TagError(file, _cut(k), f"unknown key; {hint}a tags file holds only tags: a list of tags")
        if "tags" not in raw:
            raise TagError(file, None, "has no tags: key; write tags: followed by a list of name: and when: entries")
        raw = raw["tags"]
        where = "tags"
    else:
        where = None
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise TagError(file, where, f"expected a list of tags (- name: ... when: ...), got {_cut(repr(raw))}")
    if len(raw) > MAX_TAGS:
        raise TagError(file, where, f"{len(raw):,} tags is more than {MAX_TAGS:,}; split the library")
    tags: list[Tag] = []
    seen: dict[str, int] = {}
    columns: dict[str, tuple[int, str]] = {}
    for i, item in enumerate(raw):
        key = f"tags[{i}]"
        if not isinstance(item, dict):
            raise TagError(file, key, f"expected a mapping with name: and when:, got {_cut(repr(item))}")
        for k in item:
            if k not in ENTRY_KEYS:
                hint = _near(k, ENTRY_KEYS, 0.75)
                raise TagError(file, f"{key}.{_cut(k)}", f"unknown key; {hint}known: {', '.join(ENTRY_KEYS)}")
        name = _name(file, key, item)
        if name in seen:
            raise TagError(file, f"{key}.name", f"tag {name!r} is given twice (also tags[{seen[name]}]); rename one")
        seen[name] = i
        col = "tag_" + slug(name)
        if col in columns:
            j, other = columns[col]
            raise TagError(
                file, f"{key}.name", f"{name!r} and {other!r} (tags[{j}]) make the same column {col}; rename one"
            )
        columns[col] = (i, name)
        when = item.get("when")
        if when is None:
            raise TagError(file, f"{key}.when", 'missing; give the tag\'s condition, e.g. when: stage == "new"', name)
        if not isinstance(when, str):
            raise TagError(
                file, f"{key}.when", f"expected an expression as text, got {_cut(repr(when))}; quote it", name
            )
        desc = item.get("description", "")
        if desc is None:
            desc = ""
        if not isinstance(desc, str):
            raise TagError(file, f"{key}.description", f"expected text, got {_cut(repr(desc))}", name)
        tree = parse_expression(when, file, f"{key}.when", name)
        tag = Tag(name, when, desc, i, tree)
        _Checker(file, tag, None).check()  # kinds that need no columns: `monetary + 1` is no yes/no test
        tags.append(tag)
    return TagLibrary(tuple(tags), str(file))


def _name(file: str, key: str, item: dict) -> str:
    if "name" not in item or item["name"] is None:
        raise TagError(file, f"{key}.name", "missing; every tag needs a name, e.g. name: dormant saver")
    name = item["name"]
    if not isinstance(name, str):
        raise TagError(file, f"{key}.name", f"expected text, got {_cut(repr(name))}; quote it")
    name = name.strip()
    if not name:
        raise TagError(file, f"{key}.name", "is empty; give the tag a name")
    if len(name) > MAX_NAME:
        raise TagError(file, f"{key}.name", f"longer than {MAX_NAME} characters; shorten it", _cut(name))
    if ";" in name or any(ch in name for ch in "\r\n\t"):
        raise TagError(file, f"{key}.name", "may not hold ';' (it separates tags) or line breaks; rename it")
    if not slug(name):
        raise TagError(file, f"{key}.name", f"{name!r} needs a letter or digit (the tag's column is tag_<name>)")
    return name


def load_tags(path: str | Path, columns: Mapping[str, Any] | None = None) -> TagLibrary:
    """The tags of the YAML file at `path` (read by sim.user_yaml: safe, no aliases, bounded), checked
    against `columns` too when given (`TagLibrary.check`)."""
    path = Path(path)
    raw = read_yaml(path, "tags", "start from experiments/data/tags.yaml (docs/tags.md)")
    lib = parse_tags(raw, str(path))
    if columns is not None:
        lib.check(columns)
    return lib


def default_tags() -> TagLibrary:
    """The shipped library, experiments/data/tags.yaml: the five lifecycle stages, the six journey
    steps and a few value and risk tags."""
    ref = resources.files("experiments.data").joinpath("tags.yaml")
    with resources.as_file(ref) as p:
        lib = load_tags(p)
    return TagLibrary(lib.tags, "experiments/data/tags.yaml")


__all__ = [
    "FUNCTIONS",
    "SCORE_COLUMNS",
    "Tag",
    "TagError",
    "TagLibrary",
    "default_tags",
    "kind_of",
    "kinds_of",
    "load_tags",
    "parse_expression",
    "parse_tags",
    "score_columns",
    "slug",
]
