"""experiments.tags: rule-based customer tags from a tags.yaml. Known answers of evaluation on a small
frame (missing values included), the shipped library, tables of (bad file, message) and (bad
expression, message), and malicious expressions refused without anything being run."""

from __future__ import annotations

import ast
import builtins
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.tags import (
    SCORE_COLUMNS,
    TagError,
    TagLibrary,
    default_tags,
    kinds_of,
    load_tags,
    parse_expression,
    parse_tags,
    score_columns,
    slug,
)
from sim.catalogue import STAGES
from sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _frame() -> pd.DataFrame:
    """Six customers of a score table, with a missing value in most columns."""
    return pd.DataFrame(
        {
            "customer_id": [11, 12, 13, 14, 15, 16],
            "stage": ["new", "growth", "maturity", "dormancy", "churned", None],
            "value_tier": pd.Categorical(["top", "high", "medium", "low", "top", None]),
            "churn_prob_26": [0.1, 0.6, 0.7, 0.9, np.nan, 0.2],
            "cross_holding": [1, 2, 3, 0, 1, 1],
            "products": ["savings", "credit_card,savings", "credit_card,loan,wealth", "", "car_loan", None],
            "prod_savings": [True, True, False, False, False, False],
            "turned_irregular": pd.array([False, True, None, True, False, False], dtype="boolean"),
            "next_product": ["loan", "", "savings", None, "", "wealth"],
            "periods_since_contact": [-1, 3, 0, 12, -1, 5],
        },
        index=pd.Index([101, 102, 103, 104, 105, 106], name="row"),
    )


def _lib(*whens: str, file: str = "tags.yaml") -> TagLibrary:
    return parse_tags({"tags": [{"name": f"t{i}", "when": w} for i, w in enumerate(whens)]}, file)


def _one(when: str) -> list[bool]:
    return _lib(when).apply(_frame())["tag_t0"].tolist()


# ---- known answers -------------------------------------------------------------------------------
F, T = False, True


@pytest.mark.parametrize(
    "when, want",
    [
        ('stage == "new"', [T, F, F, F, F, F]),
        ('stage != "new"', [F, T, T, T, T, F]),  # a missing stage matches no comparison, != included
        ('stage in ["dormancy", "churned"]', [F, F, F, T, T, F]),
        ('stage not in ["dormancy", "churned"]', [T, T, T, F, F, F]),
        ('value_tier in ["top", "high"] and churn_prob_26 > 0.5', [F, T, F, F, F, F]),
        ("churn_prob_26 <= 0.6", [T, T, F, F, F, T]),
        ("churn_prob_26 != 0.1", [F, T, T, T, F, T]),  # NaN is missing: not "different"
        ("0.15 < churn_prob_26 <= 0.7", [F, T, T, F, F, T]),  # chained
        ("churn_prob_26 * 10 - cross_holding >= 6", [F, F, F, T, F, F]),
        ("churn_prob_26 / 0 > 1", [T, T, T, T, F, T]),  # x / 0 is inf, NaN stays missing
        ("-cross_holding < -2", [F, F, T, F, F, F]),
        ("cross_holding in [0, 3]", [F, F, T, T, F, F]),
        ('stage == "dormancy" and prod_savings', [F, F, F, F, F, F]),
        ("prod_savings", [T, T, F, F, F, F]),
        ("prod_savings == true", [T, T, F, F, F, F]),
        ("not prod_savings or cross_holding == 2", [F, T, T, T, T, T]),
        ("turned_irregular", [F, T, F, T, F, F]),  # a missing yes/no counts as no
        ("turned_irregular == False", [T, F, F, F, T, T]),  # and matches no comparison
        ("missing(turned_irregular)", [F, F, T, F, F, F]),
        ('has(products, "loan")', [F, F, T, F, F, F]),  # an item of the list: car_loan is not a loan
        ('contains(products, "loan")', [F, F, T, F, T, F]),  # a part of the text
        ('has(products, "savings") and cross_holding == 1', [T, F, F, F, F, F]),
        ("missing(next_product)", [F, T, F, T, T, F]),  # "" counts as missing in text
        ("missing(stage) or missing(churn_prob_26)", [F, F, F, F, T, T]),
        ('next_product == ""', [F, T, F, F, T, F]),  # but == "" still finds it
        ("periods_since_contact < 0", [T, F, F, F, T, F]),
        ("abs(periods_since_contact) == 1", [T, F, F, F, T, F]),
        ("max(cross_holding, periods_since_contact) >= 3", [F, T, T, T, F, T]),
        ("min(cross_holding, 1, periods_since_contact) == 1", [F, T, F, F, F, T]),
        ('(stage == "new" or stage == "growth") and not (cross_holding > 1)', [T, F, F, F, F, F]),
        ("true", [T] * 6),
        ("false or False", [F] * 6),
        ('stage == value_tier or stage == "churned"', [F, F, F, F, T, F]),
        ('stage in ("new", "growth")', [T, T, F, F, F, F]),
        ('value_tier in {"low"}', [F, F, F, T, F, F]),
        ("customer_id in [12, 16]", [F, T, F, F, F, T]),
    ],
)
def test_known_answers(when, want):
    assert _one(when) == want


def test_apply_gives_a_column_per_tag_and_the_names_joined():
    lib = parse_tags(
        {
            "tags": [
                {"name": "High value at risk", "when": 'value_tier in ["top", "high"] and churn_prob_26 > 0.5'},
                {"name": "single-product new customer", "when": 'stage == "new" and cross_holding == 1'},
                {"name": "saver", "when": "prod_savings", "description": "holds savings"},
            ]
        }
    )
    df = _frame()
    out = lib.apply(df)
    assert (
        list(out.columns)
        == [
            "tag_high_value_at_risk",
            "tag_single_product_new_customer",
            "tag_saver",
            "tags",
        ]
        == lib.columns
    )
    assert out.index.equals(df.index)
    assert all(out[c].dtype == bool for c in lib.columns[:-1])
    assert out["tags"].tolist() == [
        "single-product new customer; saver",
        "High value at risk; saver",
        "",
        "",
        "",
        "",
    ]
    assert out["tags"].str.split("; ").iloc[0] == ["single-product new customer", "saver"]
    assert lib.tags[2].description == "holds savings" and lib.tags[2].where == "tags[2]"


def test_the_output_goes_to_parquet_and_back(tmp_path):
    out = default_tags().apply(_big(500, 1))
    out.to_parquet(tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["tags"].astype(object).tolist() == out["tags"].astype(object).tolist()
    assert (back.drop(columns="tags") == out.drop(columns="tags")).all().all()


def _big(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    prods = np.array(["", "savings", "credit_card", "credit_card,savings", "credit_card,loan,savings", "wealth"])
    p = rng.integers(0, len(prods), n)
    cols = {}
    for c, kind in score_columns().items():
        if isinstance(kind, tuple):
            cols[c] = rng.choice(list(kind), n)
        elif kind == "number":
            cols[c] = rng.random(n) if "prob" in c or c == "p_alive" else rng.integers(-1, 6, n)
        elif kind == "bool":
            cols[c] = rng.random(n) < 0.3
        else:
            cols[c] = rng.choice(["none", "sms_x", "rm_call", ""], n)
    cols["products"] = prods[p]
    cols["next_product"] = rng.choice(["", "loan", "wealth"], n)
    return pd.DataFrame(cols)


def test_many_tags_join_as_a_row_by_row_reference_does():
    # 80 tags: the flags are packed into two 64-bit words per row before grouping
    df = _big(3000, 2)
    base = default_tags()
    lib = parse_tags({"tags": [{"name": f"{t.name} {i}", "when": t.when} for i in range(4) for t in base][:80]})
    out = lib.apply(df)
    flags = out[lib.columns[:-1]].to_numpy()
    want = ["; ".join(n for n, f in zip(lib.names, row) if f) for row in flags]
    assert out["tags"].tolist() == want
    assert len(set(want)) > 50  # many patterns, not one


def test_an_empty_library_and_an_empty_frame():
    assert parse_tags({"tags": []}).apply(_frame())["tags"].tolist() == [""] * 6
    assert list(parse_tags({"tags": None}).apply(_frame()).columns) == ["tags"]
    out = _lib('stage == "new"').apply(_frame().iloc[:0])
    assert len(out) == 0 and list(out.columns) == ["tag_t0", "tags"]


# ---- the shipped library ---------------------------------------------------------------------------
STAGE_TAGS = {
    "new": "new customer",
    "growth": "growing customer",
    "maturity": "mature customer",
    "dormancy": "dormant customer",
    "churned": "churned customer",
}
JOURNEY = (
    "onboarding and activation",
    "engagement",
    "cross-sell candidate",
    "retention at risk",
    "win-back",
    "loyalty and advocacy",
)


def test_the_default_library_covers_stages_journey_and_risk():
    lib = default_tags()
    assert lib.file == "experiments/data/tags.yaml"
    assert set(STAGE_TAGS) == set(STAGES)
    names = set(lib.names)
    assert set(STAGE_TAGS.values()) | set(JOURNEY) <= names
    assert {"high value at risk", "dormant saver", "single-product new customer", "irregular payer"} <= names
    lib.check(score_columns())  # every name, kind and stage value is right
    lib.check(score_columns(["mortgage"]))  # has(products, ...) needs no prod_ column
    out = lib.apply(_big(2000, 3))
    for stage, name in STAGE_TAGS.items():  # the stage tags partition the book
        assert out["tag_" + slug(name)].sum() > 0
    assert (out[["tag_" + slug(n) for n in STAGE_TAGS.values()]].sum(axis=1) == 1).all()
    assert all(out["tag_" + slug(n)].any() for n in JOURNEY)


def test_the_default_file_is_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"experiments.data" = ["*.yaml"]' in text
    assert (ROOT / "experiments" / "data" / "__init__.py").exists()
    assert default_tags().names == load_tags(ROOT / "experiments" / "data" / "tags.yaml").names


def test_tags_without_their_columns_can_be_left_out():
    cols = {k: v for k, v in score_columns().items() if not k.startswith("payment_") and k != "turned_irregular"}
    lib, left = default_tags().available(cols)
    assert left == {"irregular payer": ["turned_irregular"]}
    lib.check(cols)
    assert len(lib) == len(default_tags()) - 1
    with pytest.raises(
        TagError, match=r"tags\[\d+\]\.when \(tag 'irregular payer'\): unknown column 'turned_irregular'"
    ):
        default_tags().check(cols)


# ---- bad files -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ("", "t.yaml: is empty; write a tags: list"),
        ("tags: 3", "t.yaml: tags: expected a list of tags"),
        ("tag: []", "t.yaml: tag: unknown key; did you mean tags?"),
        ("version: 1", "t.yaml: version: unknown key; a tags file holds only tags"),
        ("{}", "t.yaml: has no tags: key"),
        ("tags:\n  - just a name", "t.yaml: tags[0]: expected a mapping with name: and when:, got 'just a name'"),
        (
            "tags:\n  - name: a\n    wen: stage == 'new'",
            "t.yaml: tags[0].wen: unknown key; did you mean when? known: name",
        ),
        ("tags:\n  - when: stage == 'new'", "t.yaml: tags[0].name: missing; every tag needs a name"),
        ("tags:\n  - name: '  '\n    when: 'true'", "t.yaml: tags[0].name: is empty; give the tag a name"),
        ("tags:\n  - name: 2024\n    when: 'true'", "t.yaml: tags[0].name: expected text, got 2024; quote it"),
        ("tags:\n  - name: a; b\n    when: 'true'", "t.yaml: tags[0].name: may not hold ';'"),
        ("tags:\n  - name: '!!!'\n    when: 'true'", "t.yaml: tags[0].name: '!!!' needs a letter or digit"),
        (f"tags:\n  - name: {'x' * 81}\n    when: 'true'", "t.yaml: tags[0].name (tag 'xxxxx"),
        (
            "tags:\n  - name: a\n    when: 'true'\n  - name: b\n    when: 'true'\n  - name: a\n    when: 'false'",
            "t.yaml: tags[2].name: tag 'a' is given twice (also tags[0]); rename one",
        ),
        (
            "tags:\n  - name: High value\n    when: 'true'\n  - name: high-value\n    when: 'true'",
            "t.yaml: tags[1].name: 'high-value' and 'High value' (tags[0]) make the same column tag_high_value",
        ),
        ("tags:\n  - name: a", "t.yaml: tags[0].when (tag 'a'): missing; give the tag's condition"),
        (
            "tags:\n  - name: a\n    when: true",
            "t.yaml: tags[0].when (tag 'a'): expected an expression as text, got True",
        ),
        ("tags:\n  - name: a\n    when: ''", "t.yaml: tags[0].when (tag 'a'): is empty; give a condition"),
        (
            "tags:\n  - name: a\n    when: 'true'\n    description: [1]",
            "t.yaml: tags[0].description (tag 'a'): expected text",
        ),
        (
            "tags:\n  - name: a\n    when: 'stage == \"new\" and and x'",
            "t.yaml: tags[0].when (tag 'a'): not a valid expression at column 20 of",
        ),
        (
            "tags:\n  - name: a\n    when: 'x > 1 && y'",
            "not a valid expression at column 8 of 'x > 1 && y': invalid syntax; write and instead of &&",
        ),
        ("tags:\n  - name: a\n    when: 'stage = 1'", "compare with == (a single = assigns)"),
        ("tags:\n  - &a {name: a, when: 'true'}\n  - *a", "t.yaml: line 3: an alias (*a) is not accepted"),
        ("tags: [", "t.yaml: not valid YAML"),
        (
            "tags:\n  - name: a\n    when: monetary + 1",
            "t.yaml: tags[0].when (tag 'a'): 'monetary + 1' is a number, not a yes/no test",
        ),
    ],
)
def test_bad_files_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_tags(path)
    got = str(e.value).replace(str(tmp_path) + "/", "")
    assert message in got and "\n" not in got, got


def test_a_missing_file_or_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="tags file not found; start from experiments/data/tags.yaml"):
        load_tags(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a tags YAML file"):
        load_tags(tmp_path)


def test_the_error_carries_file_key_and_tag_and_crosses_processes():
    with pytest.raises(TagError) as e:
        _lib('stage == "new"', "churn_prob_25 > 0.5", file="bank/tags.yaml").check(score_columns())
    err = e.value
    assert isinstance(err, ConfigError) and err.key is None  # a file's key, not an option to render
    assert (err.file, err.where, err.tag) == ("bank/tags.yaml", "tags[1].when", "t1")
    assert str(err).startswith("bank/tags.yaml: tags[1].when (tag 't1'): unknown column 'churn_prob_25' at column 1;")
    assert "did you mean churn_prob_52 or churn_prob_26" in str(err) or "did you mean churn_prob_26" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TagError and str(back) == str(err) and back.where == err.where
    assert err.about(lambda k: "--" + k) == str(err)


# ---- bad expressions, checked against the score's columns ------------------------------------------------
@pytest.mark.parametrize(
    "when, message",
    [
        ("churn_prob_25 > 0.5", "unknown column 'churn_prob_25' at column 1; did you mean churn_prob_"),
        (
            "prod_mortgage",
            "unknown column 'prod_mortgage' at column 1; did you mean prod_loan? (has(products, \"mortgage\")",
        ),
        ("Stage == 'new'", "unknown column 'Stage' at column 1; did you mean stage"),
        ("monetary + 1", "'monetary + 1' is a number, not a yes/no test; compare it, e.g. monetary + 1 > 0"),
        ("stage", "'stage' is text, not a yes/no test; compare it, e.g. stage == \"new\""),
        ("stage == 3", "'stage == 3' compares stage (text) with a number; compare like with like"),
        ("recency > 'high'", "compares recency (a number) with text"),
        ("prod_savings > 0", "compares prod_savings (a yes/no value) with a number"),
        ("stage >= 'new'", "orders text; only numbers are ordered; use == or in [...]"),
        (
            "stage == 'dormant'",
            "stage is never 'dormant' in \"stage == 'dormant'\"; did you mean \"dormancy\"? values: new",
        ),
        ("value_tier in ['top', 'hihg']", "value_tier is never 'hihg'"),
        ("stage_next not in ['gone']", "stage_next is never 'gone'"),
        ("'loan' in products", "to look inside a text write has(products, 'loan') or contains(products, 'loan')"),
        ("recency in 3", "in needs a list after it"),
        ("stage == ['new']", "compares with a list; use in [...] or not in [...]"),
        ("stage in []", "an empty list"),
        ("stage in ['new', 1]", "mixes numbers, text and true/false"),
        ("stage in [recency]", "a list holds only numbers, \"text\" or true/false, not 'recency'"),
        ("recency + stage > 1", "arithmetic (+ - * /) needs a number, but 'stage' is text"),
        ("not monetary", "not needs a yes/no test, but 'monetary' is a number; compare it, e.g. monetary > 0"),
        ("prod_savings and recency", "and needs a yes/no test, but 'recency' is a number"),
        ("has(products)", 'is not how has() is called; write has(text_column, "item")'),
        ("has(products, next_product)", "is not how has() is called"),
        ("has(recency, 'x')", "has() needs text, but 'recency' is a number"),
        ("missing(1)", "'missing(1)' is not how missing() is called; write missing(column)"),
        ("abs(stage) > 1", "abs() needs a number, but 'stage' is text"),
        ("max(recency) > 1", "is not how max() is called"),
        ("has", "has is a function, not a column"),
        ("stage is None", "is at column 1 is not allowed in a tag expression; use == or missing(column)"),
        ("stage == None", "null/None (use missing(column)) at column 10 is not a value a tag can use"),
        ("monetary ** 2 > 1", "** at column 1 is not allowed in a tag expression; use *"),
        ("monetary // 2 > 1", "// at column 1 is not allowed in a tag expression; use /"),
        ("monetary % 2 == 1", "% at column 1 is not allowed in a tag expression; allowed: column names"),
        ("~prod_savings", "~ at column 1 is not allowed in a tag expression; use not"),
        ("recency if prod_savings else 1", "x if c else y at column 1 is not allowed"),
        ("monetary[0] > 1", "indexing or slicing ([...] after a value) at column 1 is not allowed"),
        ("{'a': 1}", "a dict {...: ...} at column 1 is not allowed"),
        ("1e999 > recency", "the number at column 1 is too large; numbers must be finite"),
        ("1j == recency", "1j at column 1 is not a value a tag can use"),
        ("b'x' == stage", "b'x' at column 1 is not a value a tag can use"),
        ("stage == 'new' and", "not a valid expression at column"),
        ("(" * 300 + "true" + ")" * 300, "not a valid expression"),  # too many nested parentheses
        ("not " * 150 + "true", f"nested more than {100} levels deep"),
        ("x" * 2001, "longer than 2000 characters"),
        ("contains(products, 'loan', 1)", "is not how contains() is called"),
        ("has(products, 'loan', sep=',')", "has() at column 1 takes no name=value arguments"),
    ],
)
def test_bad_expressions_are_refused_before_any_work(when, message):
    with pytest.raises(TagError) as e:
        _lib(when).check(score_columns())
    got = str(e.value)
    assert got.startswith("tags.yaml: tags[0].when (tag 't0'): "), got
    assert message in got and "\n" not in got, got


def test_kinds_come_from_the_frame_when_applied():
    df = pd.DataFrame(
        {"stage": ["new", "growth"], "recency": ["3", "4"], "when_seen": pd.to_datetime(["2024-01-01"] * 2)}
    )
    assert kinds_of(df) == {"stage": "text", "recency": "text", "when_seen": "other"}
    with pytest.raises(TagError, match="'recency > 2' compares recency \\(text\\) with a number"):
        _lib("recency > 2").apply(df)
    with pytest.raises(TagError, match="column 'when_seen' holds neither numbers, text nor yes/no"):
        _lib("when_seen > 2").apply(df)
    with pytest.raises(
        TagError, match="unknown column 'stag' at column 1; did you mean stage\\? columns: recency, stage"
    ):
        _lib("stag == 'new'").apply(df)
    # the check names kinds in words, dtypes or lists of values
    _lib("x > 1 and y == 'a' and z").check({"x": np.dtype("int64"), "y": ("a", "b"), "z": "bool"})
    with pytest.raises(TagError, match="y is never 'c'"):
        _lib("y == 'c'").check({"y": ["a", "b"]})


# ---- safety ----------------------------------------------------------------------------------------------
MALICIOUS = [
    ('__import__("os").system("touch {flag}")', "calling .system() at column 1 is not allowed"),
    ("().__class__", "attribute access (.) at column 1 is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "calling .__subclasses__() at column 1 is not allowed"),
    ('open("{flag}", "w")', "open() at column 1 is not a tag function"),
    ("exec(\"open('{flag}', 'w')\")", "exec() at column 1 is not a tag function"),
    ('eval("1")', "eval() at column 1 is not a tag function"),
    ("__builtins__", "name '__builtins__' at column 1 is not allowed"),
    ("(lambda: 1)() == 1", "this call at column 1 is not allowed"),
    ("[x for x in [1]] == [1]", "a comprehension at column 1 is not allowed"),
    ('f"{{stage}}" == "new"', "an f-string at column 1 is not allowed"),
    ("(y := 1) == 1", "the walrus := at column 2 is not allowed"),
    ("stage.upper() == 'NEW'", "calling .upper() at column 1 is not allowed"),
    ("getattr(stage, 'x')", "getattr() at column 1 is not a tag function"),
    ("min.__self__", "attribute access (.) at column 1 is not allowed"),
    ("[*stage] == 1", "*unpacking at column 2 is not allowed"),
]


@pytest.mark.parametrize("when, message", MALICIOUS)
def test_malicious_expressions_are_refused_without_being_run(tmp_path, monkeypatch, when, message):
    flag = tmp_path / "ran"
    when = when.format(flag=flag)
    ran: list[str] = []
    real_compile = builtins.compile

    def only_ast(source, filename, mode, flags=0, *a, **k):  # ast.parse's compile builds a tree and runs nothing
        if not flags & ast.PyCF_ONLY_AST:
            ran.append(str(source))
        return real_compile(source, filename, mode, flags, *a, **k)

    monkeypatch.setattr(builtins, "compile", only_ast)
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: ran.append("eval"))
    monkeypatch.setattr(builtins, "exec", lambda *a, **k: ran.append("exec"))
    for attempt in (lambda: _lib(when), lambda: _lib(when).apply(_frame()), lambda: parse_expression(when)):
        with pytest.raises(TagError) as e:
            attempt()
        assert message in str(e.value), str(e.value)
    assert not ran and not flag.exists()


@pytest.mark.parametrize("module", ["__init__.py", "kinds.py", "expressions.py", "evaluate.py"])
def test_the_module_never_runs_text(module):
    tree = ast.parse((ROOT / "experiments" / "tags" / module).read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    attrs = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not calls & {"eval", "exec", "compile", "__import__", "getattr"}
    assert not attrs & {"eval", "query", "literal_eval"}  # no pandas eval/query either


def test_score_columns_list_the_brief_and_the_products():
    cols = score_columns(["credit_card", "savings"])
    assert cols["prod_savings"] == "bool" and "prod_loan" not in cols
    assert cols["stage"] == tuple(STAGES) and set(SCORE_COLUMNS) <= set(cols)


@pytest.mark.slow
def test_a_million_rows_by_twenty_tags_in_well_under_ten_seconds():
    df = _big(1_000_000, 4)
    base = default_tags()
    lib = parse_tags({"tags": [{"name": t.name, "when": t.when} for t in base][:20]})
    t0 = time.perf_counter()
    out = lib.apply(df)
    assert time.perf_counter() - t0 < 5.0 and len(out) == 1_000_000


def test_without_missing_values_the_tags_agree_with_python_row_by_row():
    # a reference for trusted test text only: Python's own evaluation of each row
    df = _big(400, 5)
    helpers = {
        "has": lambda s, x: x in [p.strip() for p in s.split(",")],
        "contains": lambda s, x: x in s,
        "missing": lambda v: v == "",
        "abs": abs,
        "min": min,
        "max": max,
        "true": True,
        "false": False,
    }
    whens = [t.when for t in default_tags()] + [
        "0.2 < p_alive <= 0.8 and not (recency in [1, 2] or frequency / 2 >= 2)",
        "max(recency, frequency) - min(monetary, 3) * 2 > abs(nba_value - 3)",
        'stage != stage_next and next_best_action not in ["none", ""]',
        "prod_savings or (prod_loan and not prod_wealth) == true",
    ]
    lib = _lib(*whens)
    out = lib.apply(df)
    rows = df.to_dict("records")
    for i, w in enumerate(whens):
        want = [bool(eval(w, {"__builtins__": {}}, {**helpers, **r})) for r in rows]  # noqa: S307 - test text
        assert out[f"tag_t{i}"].tolist() == want, w
