"""The HTML kit of clv-engine's reports: one stylesheet and the pieces every report page is made of
(escaped text, numbers, means with intervals, tables, inline PNG figures). Pages are self-contained:
figures are inline base64 PNGs drawn with matplotlib's Agg canvas (no pyplot state), the stylesheet
is inline, and nothing dated is written, so the same inputs give the same bytes."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;max-width:1100px;margin:24px auto;
padding:0 16px;line-height:1.45;font-size:15px}
h1{font-size:26px;margin-bottom:4px}
h2{font-size:20px;border-bottom:2px solid #e5e5e5;padding-bottom:4px;margin-top:36px}
h3{font-size:16px;margin-top:22px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top;overflow-wrap:break-word}
th{background:#f4f6f8;font-weight:600}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.ci{color:#777;font-size:11px;white-space:nowrap}
.note{color:#555;font-size:13px}.warn{color:#a15c00}
img{max-width:100%;height:auto;display:block;margin:8px 0}
nav a{margin-right:12px}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
ul.assumptions li{margin:3px 0}
.scroll{max-width:100%;overflow-x:auto;margin:10px 0}.scroll table{margin:0}
.decision{background:#eef5ee;border-left:5px solid #2ca02c;padding:10px 14px;font-size:16px;margin:14px 0}
.decision.doubt{background:#fdf6e7;border-left-color:#d9a300}.decision.no{background:#fbeaea;border-left-color:#d62728}
.decision p{margin:4px 0}
"""


# ---- small helpers -----------------------------------------------------------------------------
def escape(x: Any) -> str:
    return html.escape(str(x), quote=True)


def number(v: Any, fmt: str = "{:,.2f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)) and fmt == "{:,.2f}":
        return f"{int(v):,}"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return escape(v)


def ci_cell(d: dict | None, fmt: str = "{:,.2f}") -> str:
    """A mean with its interval below it, from {"mean", "ci_low", "ci_high"}."""
    if not d or d.get("mean") is None:
        return "–"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = "" if lo is None or hi is None else f'<br><span class="ci">[{number(lo, fmt)}, {number(hi, fmt)}]</span>'
    return number(d["mean"], fmt) + ci


def table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """An HTML table; cells are HTML already; the first `left` columns are left-aligned. A header of
    empty cells is left out (a two-column table of labels and values); a wide table scrolls inside
    its own box instead of widening the page."""
    h = "".join(f'<th class="l">{c}</th>' if i < left else f"<th>{c}</th>" for i, c in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    head = f"<thead><tr>{h}</tr></thead>" if any(str(c).strip() for c in header) else ""
    return f'<div class="scroll"><table>{head}<tbody>{body}</tbody></table></div>'


def is_zero(v: Any) -> bool:
    """A number that is 0 (or missing); an interval {"mean", ...} is zero when all its numbers are."""
    if isinstance(v, dict):
        return all(is_zero(x) for k, x in v.items() if k in ("mean", "ci_low", "ci_high", "value"))
    if v is None:
        return True
    try:
        return abs(float(v)) < 1e-12
    except (TypeError, ValueError):
        return False


def table_of_nonzero(
    header: list[str],
    rows: list[tuple[str, list, list[str]]],
    all_zero: str,
    left: int = 1,
    some_zero: str = "All zero, left out of the table: {names}.",
) -> str:
    """A table whose rows are (name, the row's numbers, its cells): rows whose numbers are all zero
    are left out and named in one sentence; when every row is zero the table is the sentence
    `all_zero` alone (no panel of zeros)."""
    keep = [cells for name, nums, cells in rows if not all(is_zero(x) for x in nums)]
    zero = [name for name, nums, cells in rows if all(is_zero(x) for x in nums)]
    if not keep:
        return f'<p class="note">{all_zero}</p>'
    note = f'<p class="note">{some_zero.format(names=escape(", ".join(zero)))}</p>' if zero else ""
    return table(header, keep, left) + note


def unit_of(world: Any) -> str:
    """The money unit of the numbers: economics.yaml's currency, else "margin units"."""
    econ = getattr(world, "economics", None)
    return econ.money_unit if econ is not None else "margin units"


def words(key: str) -> str:
    """A snake_case key in words, for a heading or a table header."""
    return str(key).replace("_", " ")


def inline_png(fig, alt: str) -> str:
    """The figure as an inline base64 PNG (no metadata: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def figure(w: float, h: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def png_file(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


def color(policies: list[str], p: str) -> str:
    return PALETTE[policies.index(p) % len(PALETTE)] if p in policies else "#444"
