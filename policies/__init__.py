"""Intervention policies (baselines, RL agents, DP optimum) — issue 3; empty until it lands."""
