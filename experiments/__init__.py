"""Experiments: the `clv` command line, scenario sweeps, backtests and reports."""
