"""The vocabulary of tag expressions: the kinds of columns, the score columns, the limits, and TagError."""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

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
