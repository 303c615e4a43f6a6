"""The `clv` command line (`clv = "experiments.cli:main"`): the app and its entry point.

main.py is the entry point `main()`; the commands are registered by group: world.py
(make-data, calibrate, validate, simulate), score.py (score), agents.py (train, evaluate),
plan.py (values, allocate, frontier), budget.py (plan), offline.py (ope, backtest), readout.py
(readout), jobs.py (scenarios, run); common.py holds the app and what they share (error rendering, --json output, progress bars, output and input checks, options).
Nothing outside this package imports it: the documents the commands print are built by the
library (e.g. experiments.results).
"""

from .main import app, main

__all__ = ["app", "main"]
