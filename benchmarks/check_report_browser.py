"""A run's report in a real browser at 1,400 px: headless Chromium renders OUT/report.html, a small
script measures the page, and the page is screenshotted into PNG tiles a reader can look at.

The check fails (exit 1) when anything is wider than the window: the page's scroll width beyond
1,400 px, or an element (a table, a figure, a line of code) whose right edge passes the window or
whose own content is wider than its box (a table cut by its container). The measurement runs on a
copy of the report with the measuring script appended (the report itself holds no script); the
screenshots are of the report as shipped.

    python benchmarks/check_report_browser.py OUT [--width 1400] [--png-dir OUT/report_png] [--json]

Needs Chromium (Debian: `apt-get install -y chromium`); `--chromium PATH` names another binary.
Prints the page width, height, every overflowing element and the PNG files written.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
TILE = 2000  # pixels of page height per PNG tile

# Runs after the page has loaded: writes what it measured, as JSON, into a <pre> that --dump-dom returns.
MEASURE = """
<script>
window.addEventListener("load", function () {
  var W = window.innerWidth, doc = document.documentElement, bad = [];
  document.querySelectorAll("body *").forEach(function (e) {
    if (e.id === "clv-measure") return;
    var r = e.getBoundingClientRect();
    var own = e.scrollWidth - e.clientWidth;
    var cut = (e.tagName === "TABLE" || e.tagName === "PRE" || e.tagName === "DIV") && own > 1;
    if (r.right > W + 1 || cut) {
      bad.push({tag: e.tagName.toLowerCase(), text: (e.textContent || "").trim().slice(0, 80),
                right: Math.round(r.right), scroll_width: e.scrollWidth, client_width: e.clientWidth});
    }
  });
  var out = document.createElement("pre");
  out.id = "clv-measure";
  out.textContent = JSON.stringify({window_width: W, page_width: doc.scrollWidth,
                                    page_height: doc.scrollHeight, overflowing: bad.slice(0, 50)});
  document.body.appendChild(out);
});
</script>
"""


def _chromium(path: str | None) -> str:
    for name in ([path] if path else []) + ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(name) if name else None
        if found:
            return found
    sys.exit("error: no Chromium found; install it (apt-get install -y chromium) or pass --chromium PATH")


def _run(binary: str, args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def measure(binary: str, report: Path, width: int) -> dict:
    """The page's width and height at `width` px and the elements wider than the window."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "report.html"  # beside nothing: links are not followed, images are inline
        copy.write_text(report.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        r = _run(binary, [f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()])
    m = re.search(r'<pre id="clv-measure">(.*?)</pre>', r.stdout, re.S)
    if not m:
        sys.exit(f"error: Chromium did not render {report}: {r.stderr.strip()[-400:]}")
    import html

    return json.loads(html.unescape(m.group(1)))


def screenshots(binary: str, report: Path, width: int, height: int, out: Path) -> list[Path]:
    """The whole page at `width` px, cut into tiles of TILE px height (report-01.png, ...)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    full = out / "report-full.png"
    _run(binary, [f"--window-size={width},{height}", f"--screenshot={full}", report.resolve().as_uri()])
    if not full.is_file():
        sys.exit("error: Chromium wrote no screenshot")
    img = Image.open(full)
    tiles = []
    for i, top in enumerate(range(0, img.height, TILE)):
        path = out / f"report-{i + 1:02d}.png"
        img.crop((0, top, img.width, min(top + TILE, img.height))).save(path)
        tiles.append(path)
    return [full, *tiles]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a `clv run` output folder (its report.html) or an HTML file")
    ap.add_argument("--width", type=int, default=1400, help="window width in CSS pixels (default 1400)")
    ap.add_argument("--png-dir", type=Path, default=None, help="where the PNGs go (default RUN/report_png)")
    ap.add_argument("--chromium", default=None, help="the Chromium binary (default: chromium on PATH)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON document")
    a = ap.parse_args(argv)
    report = a.run if a.run.suffix == ".html" else a.run / "report.html"
    if not report.is_file():
        sys.exit(f"error: {report}: not found; give a `clv run` output folder")
    binary = _chromium(a.chromium)
    m = measure(binary, report, a.width)
    pngs = screenshots(binary, report, a.width, m["page_height"] + 40, a.png_dir or report.parent / "report_png")
    ok = m["page_width"] <= a.width and not m["overflowing"]
    doc = {**m, "ok": ok, "pngs": [str(p) for p in pngs], "report": str(report)}
    if a.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{report}: page {m['page_width']} x {m['page_height']} px in a {m['window_width']} px window")
        for e in m["overflowing"]:
            print(
                f"  too wide: <{e['tag']}> right edge {e['right']} px, content {e['scroll_width']} px "
                f"in {e['client_width']} px: {e['text']!r}"
            )
        print(f"{'ok' if ok else 'FAILED'}: {len(pngs)} PNGs in {pngs[0].parent}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
