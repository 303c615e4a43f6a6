"""Tag expressions: parsed with `ast` (eval mode), walked against a whitelist, checked for kinds
before any work and evaluated over whole columns with numpy; nothing the user wrote is ever run."""

from __future__ import annotations

import ast
import difflib
import math
import re
import warnings
from typing import Any

from .kinds import (
    ALLOWED,
    ANY,
    BOOL,
    FUNCTIONS,
    MAX_DEPTH,
    MAX_EXPRESSION,
    NUMBER,
    OTHER,
    TEXT,
    Tag,
    TagError,
    _cut,
    _near,
)

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
