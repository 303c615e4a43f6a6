"""The HTML reports: `scenario` (`clv scenarios`' report.html) and `run` (`clv run`'s), both made from
one kit (`kit`: stylesheet, tables, numbers, inline figures) and the world's sections (`world`)."""

from .run import build_run_report_html, write_run_report
from .scenario import build_report_html, write_report

__all__ = ["build_report_html", "build_run_report_html", "write_report", "write_run_report"]
