"""Evaluation of checked tag expressions over whole columns with numpy (text columns through their
codes): the checked tree is walked, nothing the user wrote is run."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from .expressions import _LITERAL_NAMES
from .kinds import (
    BOOL,
    NUMBER,
)

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
