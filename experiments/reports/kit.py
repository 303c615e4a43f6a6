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
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f6f8;font-weight:600}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.ci{color:#777;font-size:11px;white-space:nowrap}
.note{color:#555;font-size:13px}.warn{color:#a15c00}
img{max-width:100%;height:auto;display:block;margin:8px 0}
nav a{margin-right:12px}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
ul.assumptions li{margin:3px 0}
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
    """An HTML table; cells are HTML already; the first `left` columns are left-aligned."""
    h = "".join(f'<th class="l">{c}</th>' if i < left else f"<th>{c}</th>" for i, c in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


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
