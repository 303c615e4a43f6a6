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

import ast
import difflib
import math
import re
import warnings
from dataclasses import dataclass, field
from functools import reduce
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from experiments.config import read_yaml
from sim.catalogue import PRODUCTS_DEFAULT, STAGES
from sim.errors import ConfigError

NUMBER, TEXT, BOOL, ANY, OTHER = "number", "text", "bool", "any", "other"
KINDS = (NUMBER, TEXT, BOOL, ANY)  # ANY: a column whose kind is not known (compatible with every kind)
TIERS = ("top", "high", "medium", "low")  # experiments.score's value_tier layers
TAGS_FILE_KEYS = ("tags",)
ENTRY_KEYS = ("name", "when", "description")
FUNCTIONS = {  # name: how it is called (shown in messages; docs/tags.md says what each does)
    "has": 'has(text_column, "item"), e.g. has(products, "loan")',  # an item of a comma-separated list
    "contains": 'contains(text_column, "part"), e.g. contains(segment, "rfm")',  # a part of a text
    "missing": "missing(column), e.g. missing(next_product)",  # NaN, None, NA, or "" in a text column
    "abs": "abs(number)",
    "min": "min(number, number, ...)",
    "max": "max(number, number, ...)",
}
MAX_TAGS = 1000
MAX_NAME = 80
MAX_EXPRESSION = 2000  # characters of one `when`
MAX_DEPTH = 100  # nesting of one expression's tree
ALLOWED = (
    'column names, numbers, "text", true/false, [lists], == != < <= > >= in, not in, and/or/not, + - * /, '
    "and the functions " + ", ".join(FUNCTIONS)
)

# the columns `clv score` writes: a kind, or the values a text column can take; prod_<name> per product
SCORE_COLUMNS: dict[str, Any] = {
    "customer_id": ANY,
    "segment": TEXT,
    "stage": STAGES,
    "stage_next": STAGES,
    **{k: NUMBER for k in ("stage_next_prob", "p_alive", "churn_prob_13", "churn_prob_26", "churn_prob_52")},
    **{k: NUMBER for k in ("expected_transactions_h", "expected_clv_h", "clv_p10", "clv_p90")},
    **{k: NUMBER for k in ("recency", "frequency", "monetary", "r_score", "f_score", "m_score")},
    "value_tier": TIERS,
    "products": TEXT,
    "cross_holding": NUMBER,
    "next_product": TEXT,
    "next_product_prob": NUMBER,
    "payment_period": NUMBER,
    "payment_strength": NUMBER,
    "turned_irregular": BOOL,
    "next_best_action": TEXT,
    "nba_value": NUMBER,
    "nba_cost": NUMBER,
    "runner_up": TEXT,
    "runner_up_value": NUMBER,
    "reason": TEXT,
    "eligible_channels": TEXT,
    "periods_since_contact": NUMBER,
    "opted_out": TEXT,
    "tenure": NUMBER,
}


def score_columns(products: tuple[str, ...] | list[str] = PRODUCTS_DEFAULT) -> dict[str, Any]:
    """The columns of a `clv score` table for a world with these products (SCORE_COLUMNS + prod_<name>)."""
    return {**SCORE_COLUMNS, **{f"prod_{p}": BOOL for p in products}}


# ---- errors --------------------------------------------------------------------------------------


class TagError(ConfigError):
    """One line about a tags file: "tags.yaml: tags[3].when (tag 'x'): what is wrong; what to do".

    `file`; `where`, the key as the file spells it (`tags[3].when`; None: the file as a whole); `tag`,
    the tag's name when known; `problem`, the message alone. (ConfigError.key stays None: these keys are
    a file's, not settings a front end renders as options.)
    """

    def __init__(self, file: str, where: str | None, problem: str, tag: str | None = None):
        self.file, self.where, self.tag, self.problem = str(file), where, tag, " ".join(str(problem).split())
        head = self.file if where is None else f"{self.file}: {where}"
        if tag:
            head += f" (tag {_cut(tag)!r})"
        super().__init__(f"{head}: {self.problem}")

    def about(self, render=str) -> str:  # the user's text is shown as written: no {key:...} rendering
        return self.message

    def __reduce__(self):
        return (self.__class__, (self.file, self.where, self.problem, self.tag))


def _cut(v: Any, n: int = 80) -> str:
    s = str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def _near(word: str, options, cutoff: float = 0.6) -> str:
    near = difflib.get_close_matches(str(word), list(options), n=1, cutoff=cutoff)
    return f"did you mean {near[0]}? " if near else ""


# ---- kinds of columns ----------------------------------------------------------------------------


def kind_of(s: pd.Series) -> str:
    """The kind of a column's values: number, text, bool, or other (dates and the like: not usable)."""
    d = s.dtype
    if isinstance(d, pd.CategoricalDtype):
        return kind_of(pd.Series(d.categories)) if len(d.categories) else TEXT
    if pd.api.types.is_bool_dtype(d):
        return BOOL
    if pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_complex_dtype(d):
        return NUMBER
    if pd.api.types.is_object_dtype(d) or pd.api.types.is_string_dtype(d):
        inferred = pd.api.types.infer_dtype(s, skipna=True)
        if inferred == "boolean":
            return BOOL
        if inferred in ("string", "empty"):
            return TEXT
        if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
            return NUMBER
    return OTHER


def kinds_of(df: pd.DataFrame) -> dict[str, str]:
    """{column: kind} of a frame (see `kind_of`)."""
    return {str(c): kind_of(df[c]) for c in df.columns}


def _spec(v: Any) -> tuple[str, tuple | None]:
    """(kind, the values a text column can take or None) of one entry of a `columns` mapping."""
    if isinstance(v, str):
        if v not in KINDS + (OTHER,):
            raise ValueError(f"unknown column kind {v!r}; kinds: {', '.join(KINDS)}")
        return v, None
    if isinstance(v, (tuple, list, set, frozenset)):
        return TEXT, tuple(sorted(map(str, v))) if isinstance(v, (set, frozenset)) else tuple(map(str, v))
    if isinstance(v, pd.Series):
        return kind_of(v), None
    return kind_of(pd.Series([], dtype=v)), None


# ---- the library ---------------------------------------------------------------------------------


def slug(name: str) -> str:
    """The column-name form of a tag name: lower case, runs of anything but letters and digits as "_"."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Tag:
    """One tag: its name, its `when` expression, and where it stands in its file (0-based)."""

    name: str
    when: str
    description: str = ""
    position: int = 0
    tree: ast.Expression | None = field(default=None, repr=False, compare=False)

    @property
    def column(self) -> str:
        return "tag_" + slug(self.name)

    @property
    def where(self) -> str:
        return f"tags[{self.position}]"


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


# ---- parsing and the whitelist -------------------------------------------------------------------

_NODES = {  # every node an expression may hold; anything else is refused with these words
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp, ast.Add,
    ast.Sub, ast.Mult, ast.Div, ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In,
    ast.NotIn, ast.Call, ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple, ast.Set,
}  # fmt: skip
_REFUSED = {
    ast.Attribute: "attribute access (.)",
    ast.Subscript: "indexing or slicing ([...] after a value)",
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.NamedExpr: "the walrus :=",
    ast.IfExp: "x if c else y",
    ast.Dict: "a dict {...: ...}",
    ast.Starred: "*unpacking",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.Invert: "~",
    ast.Pow: "**",
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slicing",
}
_INSTEAD = {
    ast.Is: "use == or missing(column)",
    ast.IsNot: "use != or not missing(column)",
    ast.Invert: "use not",
    ast.Pow: "use *",
    ast.FloorDiv: "use /",
    ast.IfExp: "write two tags, or (c and x) or (not c and y)",
}
_HINTS = (
    ("&&", "write and instead of &&"),
    ("||", "write or instead of ||"),
    (re.compile(r"(?<![=!<>])=(?!=)"), "compare with == (a single = assigns)"),
    (re.compile(r"!(?!=)"), "write not instead of !"),
)


def parse_expression(text: str, file: str = "tags.yaml", where: str = "when", tag: str | None = None) -> ast.Expression:
    """The whitelisted tree of one `when` expression (nothing is run). A syntax error names its column."""
    if len(text) > MAX_EXPRESSION:
        raise TagError(file, where, f"longer than {MAX_EXPRESSION} characters; split it into simpler tags", tag)
    src = re.sub(r"[\r\n\t]", " ", text)  # YAML's folded lines; the same length, so columns stay put
    if not src.strip():
        raise TagError(file, where, 'is empty; give a condition, e.g. stage == "new"', tag)
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning on "\d": the tree is all we want
            warnings.simplefilter("ignore")
            tree = ast.parse(src.strip(), mode="eval")
    except SyntaxError as e:
        lead = len(src) - len(src.lstrip())
        col = (e.offset or 1) + lead
        hint = next((h for pat, h in _HINTS if (pat in src if isinstance(pat, str) else pat.search(src))), "")
        hint = hint or f'write e.g. stage == "new" and cross_holding == 1; allowed: {ALLOWED}'
        raise TagError(file, where, f"not a valid expression at column {col} of {_cut(text)!r}: {e.msg}; {hint}", tag)
    except (RecursionError, MemoryError, ValueError) as e:  # ValueError: a NUL character
        raise TagError(file, where, f"cannot be read ({type(e).__name__}); simplify it", tag) from None
    _whitelist(tree, src.strip(), file, where, tag)
    return tree


def _whitelist(tree: ast.Expression, text: str, file: str, where: str, tag: str | None) -> None:
    todo: list[tuple[ast.AST, int, int]] = [(tree, 0, 0)]  # (node, depth, column of it or its parent)
    while todo:  # breadth first: the outermost offence is named (a call of a method before its parts)
        node, depth, col = todo.pop(0)
        if depth > MAX_DEPTH:
            raise TagError(file, where, f"nested more than {MAX_DEPTH} levels deep; split it into simpler tags", tag)
        col = node.col_offset if isinstance(node, ast.expr) else col  # an operator has none: its expression's
        at = f" at column {col + 1}"
        if type(node) not in _NODES:
            what = _REFUSED.get(type(node), type(node).__name__)
            instead = _INSTEAD.get(type(node), f"allowed: {ALLOWED}")
            raise TagError(file, where, f"{what}{at} is not allowed in a tag expression; {instead}", tag)
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise TagError(file, where, f"name {_cut(node.id)!r}{at} is not allowed (names start with a letter)", tag)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                what = f"calling .{node.func.attr}()" if isinstance(node.func, ast.Attribute) else "this call"
                raise TagError(file, where, f"{what}{at} is not allowed; functions: {', '.join(FUNCTIONS)}", tag)
            if node.func.id not in FUNCTIONS:
                hint = _near(node.func.id, FUNCTIONS) + "functions: " + ", ".join(FUNCTIONS)
                raise TagError(file, where, f"{_cut(node.func.id)}(){at} is not a tag function; {hint}", tag)
            if node.keywords:
                raise TagError(file, where, f"{node.func.id}(){at} takes no name=value arguments", tag)
        if isinstance(node, ast.Constant) and not isinstance(node.value, (bool, int, float, str)):
            what = "null/None (use missing(column))" if node.value is None else repr(node.value)[:40]
            raise TagError(
                file, where, f'{what}{at} is not a value a tag can use; values: numbers, "text", true, false', tag
            )
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            try:
                finite = math.isfinite(float(node.value))
            except OverflowError:
                finite = False
            if not finite:
                raise TagError(file, where, f"the number{at} is too large; numbers must be finite", tag)
        todo.extend((c, depth + 1, col) for c in ast.iter_child_nodes(node))


def _names(tree: ast.Expression | None) -> set[str]:
    """The column names an expression reads (not functions, not true/false)."""
    if tree is None:
        return set()
    funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in funcs and n.id not in _LITERAL_NAMES
    }


_LITERAL_NAMES = {"true": True, "false": False, "True": True, "False": False}  # YAML's spelling is welcome


# ---- kinds: the check before any work ------------------------------------------------------------


class _Checker:
    """The kind of every node of one tag's tree ({id(node): kind}, a kind being number, text, bool, any,
    or ("list", kind)); each misuse is a TagError. `columns` None: column kinds are not known yet."""

    def __init__(self, file: str, tag: Tag, columns: dict[str, tuple[str, tuple | None]] | None):
        self.file, self.tag, self.columns = file, tag, columns
        self.text = re.sub(r"[\r\n\t]", " ", tag.when).strip()
        self.kinds: dict[int, Any] = {}

    def fail(self, msg: str) -> None:
        raise TagError(self.file, f"{self.tag.where}.when", msg, self.tag.name)

    def src(self, node: ast.AST) -> str:
        return _cut(ast.get_source_segment(self.text, node) or ast.unparse(node), 60)

    def check(self) -> dict[int, Any]:
        k = self.kind(self.tag.tree.body)
        if k not in (BOOL, ANY):
            what = "a list" if isinstance(k, tuple) else f"{'a number' if k == NUMBER else 'text'}"
            eg = f"{self.src(self.tag.tree.body)} > 0" if k == NUMBER else 'stage == "new"'
            self.fail(f"{self.src(self.tag.tree.body)!r} is {what}, not a yes/no test; compare it, e.g. {eg}")
        return self.kinds

    def kind(self, node: ast.AST) -> Any:
        k = self._kind(node)
        self.kinds[id(node)] = k
        return k

    def _kind(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            v = node.value
            return BOOL if isinstance(v, bool) else TEXT if isinstance(v, str) else NUMBER
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return self.list(node)
        if isinstance(node, ast.UnaryOp):
            k = self.kind(node.operand)
            want = BOOL if isinstance(node.op, ast.Not) else NUMBER
            self.want(node.operand, k, want, "not" if want == BOOL else "a sign")
            return want
        if isinstance(node, ast.BinOp):
            for side in (node.left, node.right):
                self.want(side, self.kind(side), NUMBER, "arithmetic (+ - * /)")
            return NUMBER
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            for v in node.values:
                self.want(v, self.kind(v), BOOL, word)
            return BOOL
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise AssertionError(type(node))  # the whitelist let nothing else through

    def name(self, node: ast.Name) -> Any:
        n = node.id
        if n in _LITERAL_NAMES:  # true/false are values, never columns
            return BOOL
        if self.columns is not None and n in self.columns:
            kind = self.columns[n][0]
        elif n in FUNCTIONS:
            return self.fail(f"{n} is a function, not a column; write {FUNCTIONS[n]}")
        elif self.columns is None:
            return ANY
        else:
            near = difflib.get_close_matches(n, list(self.columns), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            if n.startswith("prod_"):
                hint += f'(has(products, "{_cut(n[5:], 40)}") works for any product) '
            known = _cut(", ".join(sorted(self.columns)), 300)
            return self.fail(f"unknown column {_cut(n)!r} at column {node.col_offset + 1}; {hint}columns: {known}")
        if kind == OTHER:
            self.fail(f"column {n!r} holds neither numbers, text nor yes/no values (dates?); tags cannot use it")
        return kind

    def list(self, node: ast.AST) -> Any:
        if not node.elts:
            self.fail(f"an empty list in {self.src(node)!r}; give at least one value")
        kinds = set()
        for e in node.elts:
            neg = (
                isinstance(e, ast.UnaryOp)
                and isinstance(e.op, (ast.USub, ast.UAdd))
                and isinstance(e.operand, ast.Constant)
            )
            if not (isinstance(e, ast.Constant) or neg) or (neg and self._kind(e.operand) != NUMBER):
                self.fail(f'a list holds only numbers, "text" or true/false, not {self.src(e)!r}')
            kinds.add(self.kind(e))
        if len(kinds) > 1:
            self.fail(f"the list {self.src(node)!r} mixes numbers, text and true/false; give one kind")
        return ("list", kinds.pop())

    def want(self, node: ast.AST, got: Any, want: str, what: str) -> None:
        if got == want or got == ANY:
            return
        words = {NUMBER: "a number", TEXT: "text", BOOL: "a yes/no test"}
        got_w = "a list" if isinstance(got, tuple) else words[got]
        if want == BOOL:
            fix = f"compare it, e.g. {self.src(node)} " + ("> 0" if got == NUMBER else '== "..."')
        else:
            fix = f"give {words[want]}"
        self.fail(f"{what} needs {words[want]}, but {self.src(node)!r} is {got_w}; {fix}")

    def compare(self, node: ast.Compare) -> str:
        sides = [node.left, *node.comparators]
        kinds = [self.kind(s) for s in sides]
        for i, op in enumerate(node.ops):
            a, b, ka, kb = sides[i], sides[i + 1], kinds[i], kinds[i + 1]
            text = f"{self.src(a)} {_OP_WORDS[type(op)]} {self.src(b)}"
            if isinstance(ka, tuple):
                self.fail(f"a list can only follow in / not in, in {text!r}")
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(kb, tuple):
                    if ka == TEXT and kb in (TEXT, ANY):
                        fix = f"has({self.src(b)}, {self.src(a)}) or contains({self.src(b)}, {self.src(a)})"
                        self.fail(f"{text!r}: in needs a list after it; to look inside a text write {fix}")
                    self.fail(f'{text!r}: in needs a list after it, e.g. stage in ["new", "growth"]')
                self.same(a, ka, kb[1], text)
                self.values(a, b, text)
                continue
            if isinstance(kb, tuple):
                self.fail(f"{text!r} compares with a list; use in [...] or not in [...]")
            self.same(a, ka, kb, text)
            if not isinstance(op, (ast.Eq, ast.NotEq)) and ANY not in (ka, kb) and ka != NUMBER:
                what = "text" if ka == TEXT else "yes/no values"
                self.fail(f"{text!r} orders {what}; only numbers are ordered; use == or in [...]")
            self.values(a, b, text)
            self.values(b, a, text)
        return BOOL

    def same(self, a: ast.AST, ka: Any, kb: Any, text: str) -> None:
        if ANY in (ka, kb) or ka == kb:
            return
        words = {NUMBER: "a number", TEXT: "text", BOOL: "a yes/no value"}
        self.fail(f"{text!r} compares {self.src(a)} ({words[ka]}) with {words[kb]}; compare like with like")

    def values(self, col: ast.AST, lits: ast.AST, text: str) -> None:
        """A text column with known values compared with a text it never takes (a stage that is no stage)."""
        if self.columns is None or not isinstance(col, ast.Name) or col.id not in self.columns:
            return
        allowed = self.columns[col.id][1]
        if not allowed:
            return
        elts = lits.elts if isinstance(lits, (ast.List, ast.Tuple, ast.Set)) else [lits]
        for e in elts:
            if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value not in allowed:
                hint = _near(e.value, allowed).replace("did you mean ", 'did you mean "').replace("? ", '"? ')
                self.fail(f"{col.id} is never {_cut(e.value)!r} in {text!r}; {hint}values: {', '.join(allowed)}")

    def usage(self, node: ast.Call) -> None:
        self.fail(f"{self.src(node)!r} is not how {node.func.id}() is called; write {FUNCTIONS[node.func.id]}")

    def call(self, node: ast.Call) -> str:
        f, args = node.func.id, node.args
        self.kinds[id(node.func)] = "function"
        if f in ("has", "contains"):
            if len(args) != 2 or not (isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)):
                self.usage(node)
            self.want(args[0], self.kind(args[0]), TEXT, f"{f}()")
            self.kind(args[1])
            return BOOL
        if f == "missing":
            if len(args) != 1 or not isinstance(args[0], ast.Name) or args[0].id in _LITERAL_NAMES:
                self.usage(node)
            self.kind(args[0])
            return BOOL
        if not args or (f == "abs" and len(args) != 1) or (f != "abs" and len(args) < 2):
            self.usage(node)
        for a in args:
            self.want(a, self.kind(a), NUMBER, f"{f}()")
        return NUMBER


_OP_WORDS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
    ast.NotIn: "not in",
}  # fmt: skip


# ---- evaluation over whole columns ---------------------------------------------------------------


class _Frame:
    """A frame's columns as numpy, converted once per `apply` however many tags read them."""

    def __init__(self, df: pd.DataFrame):
        self.df, self.n = df, len(df)
        self._num: dict[str, np.ndarray] = {}
        self._bool: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._text: dict[str, tuple[np.ndarray, list, dict]] = {}

    def number(self, name: str) -> np.ndarray:
        if name not in self._num:
            s = self.df[name]
            if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(s.dtype):
                s = pd.to_numeric(s.astype(object), errors="coerce")
            self._num[name] = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return self._num[name]

    def boolean(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values with missing as False, missing)."""
        if name not in self._bool:
            s = self.df[name]
            miss = s.isna().to_numpy()
            if s.dtype == bool:
                vals = s.to_numpy()
            else:
                vals = np.zeros(self.n, bool)
                vals[~miss] = s.to_numpy(dtype=object)[~miss].astype(bool)
            self._bool[name] = (vals, miss)
        return self._bool[name]

    def text(self, name: str) -> tuple[np.ndarray, list, dict]:
        """(codes, -1 where missing; the distinct values; {value: code})."""
        if name not in self._text:
            s = self.df[name]
            if isinstance(s.dtype, pd.CategoricalDtype):
                codes, uniq = s.cat.codes.to_numpy(), [str(c) for c in s.cat.categories]
            else:
                codes, u = pd.factorize(s, use_na_sentinel=True)
                uniq = [str(x) for x in u]
            self._text[name] = (np.asarray(codes, dtype=np.int64), uniq, {v: i for i, v in enumerate(uniq)})
        return self._text[name]

    def per_value(self, name: str, test) -> np.ndarray:
        """test(value) for each row's text, computed once per distinct value (missing: False)."""
        codes, uniq, _ = self.text(name)
        lut = np.array([bool(test(u)) for u in uniq] + [False], dtype=bool)
        return lut[codes]  # code -1 reads the trailing False


@dataclass
class _Col:  # a text column inside an expression (compared through its codes)
    name: str


class _Eval:
    """The value of every node of one checked tree: numbers as float arrays (or floats), yes/no as
    bool arrays (or bools), text as a _Col or a str, lists as tuples."""

    def __init__(self, frame: _Frame, kinds: dict[int, Any]):
        self.fr, self.kinds = frame, kinds

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            v = node.value
            return v if isinstance(v, (bool, str)) else float(v)
        if isinstance(node, ast.Name):
            k = self.kinds[id(node)]
            if node.id in _LITERAL_NAMES:
                return _LITERAL_NAMES[node.id]
            return (
                self.fr.number(node.id) if k == NUMBER else self.fr.boolean(node.id)[0] if k == BOOL else _Col(node.id)
            )
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp):
            v = self.value(node.operand)
            if isinstance(node.op, ast.Not):
                return (not v) if isinstance(v, bool) else ~v
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            a, b = self.value(node.left), self.value(node.right)
            op = type(node.op)
            return a + b if op is ast.Add else a - b if op is ast.Sub else a * b if op is ast.Mult else np.divide(a, b)
        if isinstance(node, ast.BoolOp):
            vals = [self.value(v) for v in node.values]
            return reduce((lambda x, y: x & y) if isinstance(node.op, ast.And) else (lambda x, y: x | y), vals)
        if isinstance(node, ast.Compare):
            sides = [self.value(s) for s in [node.left, *node.comparators]]
            nodes = [node.left, *node.comparators]
            out: Any = True
            for i, op in enumerate(node.ops):
                out = out & self.compare(op, nodes[i], sides[i], nodes[i + 1], sides[i + 1])
            return out
        if isinstance(node, ast.Call):
            return self.call(node)
        raise AssertionError(type(node))

    def present(self, node: ast.AST, v: Any) -> Any:
        """True where a compared value is there (not NaN, NA or None)."""
        if isinstance(v, _Col):
            return self.fr.text(v.name)[0] >= 0
        if isinstance(node, ast.Name) and self.kinds[id(node)] == BOOL and not isinstance(v, bool):
            return ~self.fr.boolean(node.id)[1]
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            return ~np.isnan(v)
        if isinstance(v, float):
            return not np.isnan(v)
        return True

    def compare(self, op: ast.cmpop, an: ast.AST, a: Any, bn: ast.AST, b: Any) -> Any:
        t = type(op)
        here = self.present(an, a)
        if t in (ast.In, ast.NotIn):
            if isinstance(a, _Col):
                codes, uniq, index = self.fr.text(a.name)
                lut = np.zeros(len(uniq) + 1, dtype=bool)  # the last entry is read by missing (-1)
                lut[[index[x] for x in b if x in index]] = True
                hit = lut[codes]
            elif isinstance(a, np.ndarray):
                hit = np.isin(a, np.asarray(b, dtype=a.dtype if a.dtype == bool else float))
            else:
                hit = a in b
            if t is ast.NotIn:
                hit = ~hit if isinstance(hit, np.ndarray) else not hit
            return hit & here
        here = here & self.present(bn, b)
        if isinstance(a, _Col) or isinstance(b, _Col):
            assert t in (ast.Eq, ast.NotEq), "the check lets only numbers be ordered"
            eq = self.text_equal(a, b)
            return eq & here if t is ast.Eq else ~eq & here
        if t is ast.Eq:
            r = a == b
        elif t is ast.NotEq:
            r = a != b
        elif t is ast.Lt:
            r = a < b
        elif t is ast.LtE:
            r = a <= b
        elif t is ast.Gt:
            r = a > b
        else:
            r = a >= b
        return r & here

    def text_equal(self, a: Any, b: Any) -> Any:
        if isinstance(b, _Col) and not isinstance(a, _Col):
            a, b = b, a
        codes, _, index = self.fr.text(a.name)
        if not isinstance(b, _Col):
            return codes == index.get(b, -2)
        other = self.fr.df[b.name].to_numpy(dtype=object)
        return self.fr.df[a.name].to_numpy(dtype=object) == other

    def call(self, node: ast.Call) -> Any:
        f, args = node.func.id, node.args
        if f in ("has", "contains"):
            v, item = self.value(args[0]), args[1].value
            test = (lambda u: item in [p.strip() for p in u.split(",")]) if f == "has" else (lambda u: item in u)
            return self.fr.per_value(v.name, test) if isinstance(v, _Col) else test(v)
        if f == "missing":
            name, k = args[0].id, self.kinds[id(args[0])]
            if k == NUMBER:
                return np.isnan(self.fr.number(name))
            if k == BOOL:
                return self.fr.boolean(name)[1].copy()
            codes, _, index = self.fr.text(name)
            return (codes < 0) | (codes == index.get("", -2))
        vals = [self.value(a) for a in args]
        if f == "abs":
            return np.abs(vals[0])
        return reduce(np.minimum if f == "min" else np.maximum, vals)


def _result(v: Any, n: int) -> np.ndarray:
    out = np.asarray(v, dtype=bool)
    return np.full(n, bool(out)) if out.shape != (n,) else out


def _joined(names: list[str], flags: np.ndarray) -> Any:
    """Per row, the names of its true flags joined by "; " (pandas' default string array): one string
    per distinct pattern of flags (rows grouped by their flags packed into 64-bit words), then taken."""
    t, n = flags.shape
    if t == 0 or n == 0:
        return pd.Series([""] * n, dtype=object).astype(pd.Series([""]).dtype).array
    packed = np.packbits(flags, axis=0, bitorder="little")  # (ceil(t / 8), n)
    packed = np.pad(packed, ((0, (-packed.shape[0]) % 8), (0, 0)))
    words = np.ascontiguousarray(packed.T).view(np.uint64)  # (n, ceil(t / 64))
    codes = pd.factorize(words[:, 0])[0]
    for j in range(1, words.shape[1]):
        w = pd.factorize(words[:, j])[0]
        codes = pd.factorize(codes.astype(np.int64) * (int(w.max()) + 1) + w)[0]
    first = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(n - 1, -1, -1)
    named = np.asarray(names, dtype=object)
    labels = pd.Series(["; ".join(named[flags[:, r]]) for r in first])  # str (pandas 3) or object (2.x)
    return labels.array.take(codes)


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
