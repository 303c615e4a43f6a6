"""Result documents of the `clv` commands, built here rather than in the command line (which only
parses options and renders these), and shared with the `clv run` job where both print one:

- CalibrationResult: a calibrated world as written. `to_dict()` is `clv calibrate`'s document,
  `summary()` the "calibration" section of run.json (experiments.pipeline);
- ValueTableResult: a value table as written. `to_dict()` is `clv values`' document, `summary()`
  the "values" section of run.json;
- SimulationSummary: `clv simulate`'s document (the run's settings and per-customer means);
- TrainingResult: `clv train`'s document (the agent's card and where its files are).

Light to import: the standard library only (the worlds, frames and cards are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# sim.calibrate's report counts that `clv calibrate` prints, in its document's order
CALIBRATION_REPORT_KEYS = (
    "same_day_merged",
    "transactions_used",
    "transactions_after_calibration_end",
    "customers_born_after_calibration_end",
)


@dataclass
class CalibrationResult:
    """A calibrated world model, written to `world_path` with its book at `book_path`.

    `customers` is the number of customers in the book and `seconds` the time taken, as each
    caller counts them; `report` is sim.calibrate's report (needed by `to_dict()`, None when the
    world came out of sim.validate)."""

    world: Any  # sim.world.WorldModel
    world_path: str
    book_path: str
    customers: int
    seconds: float
    report: dict[str, Any] | None = None

    def _head(self) -> dict[str, Any]:
        w = self.world
        return {
            "world": self.world_path,
            "book": self.book_path,
            "world_hash": w.hash(),
            "customers": self.customers,
            "segments": [s.name for s in w.segments],
            "activity_model": w.activity_model,
        }

    def to_dict(self) -> dict[str, Any]:
        """`clv calibrate`'s document: the world, its fitted activity and stage rules, and what the
        calibration left out or merged."""
        if self.report is None:
            raise ValueError("CalibrationResult.to_dict() needs the calibration report (sim.calibrate)")
        w = self.world
        return {
            **self._head(),
            "activity": w.segments[0].activity if len(w.segments) == 1 else {s.name: s.activity for s in w.segments},
            "stage_rules": w.stage_rules.__dict__,
            "seasonality_modelled": w.seasonality is not None,
            **{k: self.report[k] for k in CALIBRATION_REPORT_KEYS},
            "assumptions": w.assumptions,
            "seconds": self.seconds,
        }

    def summary(self) -> dict[str, Any]:
        """The "calibration" section of run.json (`clv run`)."""
        w = self.world
        return {
            **self._head(),
            "calibration_end": w.calibration_end,
            "seasonality_modelled": w.seasonality is not None,
            "assumptions": list(w.assumptions),
            "seconds": self.seconds,
        }


@dataclass
class ValueTableResult:
    """A value table (optimizer.value_sources, its diagnostics in `table.attrs`) written to `out`.

    `policy` is the policy spec or label the table follows: the continuation after the first
    period for source "sim", the policy whose advantages are the values for source "policy".
    `world`, `world_path`, `seed` and `seconds` (unrounded) are needed by `to_dict()` only."""

    table: Any = field(repr=False)  # pandas.DataFrame
    out: str
    source: str
    policy: str
    horizon: int
    replications: int
    world: Any = None  # sim.world.WorldModel
    world_path: str | None = None
    seed: int | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """`clv values`' document: rows, customers and mean value, cost and standard error per action
        (and, for source "policy", the advantage fit's diagnostics)."""
        if self.world is None:
            raise ValueError("ValueTableResult.to_dict() needs the world the table was built on")
        df, world = self.table, self.world
        diag = df.attrs["diagnostics"]
        rows_by_action = df["action"].value_counts(sort=False)
        actions = [a for a in world.catalogue.names[1:] if rows_by_action.get(a, 0) > 0]
        doc = {
            "out": self.out,
            "world": self.world_path,
            "world_hash": world.hash(),
            "source": self.source,
            **({"continuation": self.policy} if self.source == "sim" else {"policy": self.policy}),
            "rows": int(len(df)),
            "customers": int(diag["customers"]),
            "customers_with_options": int(df["customer_id"].nunique()),
            "actions": actions,
            "horizon": self.horizon,
            "replications": self.replications,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "rows_by_action": {a: int(rows_by_action.get(a, 0)) for a in world.catalogue.names[1:]},
            "mean_value_by_action": diag["mean_value_by_action"],
            "mean_cost_by_action": diag["mean_cost_by_action"],
            "mean_standard_error_by_action": diag["mean_standard_error_by_action"],
            "cost_clipped_rows": diag["cost_clipped_rows"],
            "resampled": diag["resampled"],
        }
        if self.source == "policy":
            doc["diagnostics"] = {k: v for k, v in diag.items() if k not in doc}
        return doc

    def summary(self) -> dict[str, Any]:
        """The "values" section of run.json (`clv run`): there the policy is named "continuation"
        whatever the source."""
        df = self.table
        diag = df.attrs["diagnostics"]
        return {
            "out": self.out,
            "rows": int(len(df)),
            "customers": int(diag["customers"]),
            "customers_with_options": int(df["customer_id"].nunique()),
            "horizon": self.horizon,
            "replications": self.replications,
            "continuation": self.policy,
            "source": self.source,
            **(
                {"fit": {k: diag[k] for k in ("heldout_r2", "smoothed") if k in diag}}
                if self.source == "policy"
                else {}
            ),
            "mean_value_by_action": diag["mean_value_by_action"],
            "mean_cost_by_action": diag["mean_cost_by_action"],
            "mean_standard_error_by_action": diag["mean_standard_error_by_action"],
        }


@dataclass
class SimulationSummary:
    """`clv simulate`'s run: `customers` is sim.population's per-customer frame, `seconds` the
    simulation's wall time (unrounded), `out` and `periods_out` the Parquet files written."""

    world: Any  # sim.world.WorldModel
    world_path: str
    policy: str
    population: str
    periods: int
    seed: int
    out: str
    periods_out: str
    customers: Any = field(repr=False)  # pandas.DataFrame, one row per simulated customer
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        c, world, secs = self.customers, self.world, self.seconds
        return {
            "world": self.world_path,
            "world_hash": world.hash(),
            "policy": self.policy,
            "population": self.population,
            "customers": int(len(c)),
            "periods": self.periods,
            "seed": self.seed,
            "out": self.out,
            "periods_out": self.periods_out,
            "clv_per_customer": float(c["clv"].mean()),
            "margin_per_customer": float(c["reward"].mean()),
            "transactions_per_customer": float(c["transactions"].mean()),
            "retention_at_horizon": float(c["alive_end"].mean()),
            "active_share_at_horizon": float((c["end_stage"].isin(["new", "growth", "maturity"])).mean()),
            "contacts_per_customer": float(c["contacts"].mean()),
            "discount_per_period": world.economics.discount_per_period,
            "customer_steps_per_second": float(len(c) * self.periods / max(secs, 1e-9)),
            "seconds": round(secs, 3),
        }


@dataclass
class TrainingResult:
    """A trained agent: its card (policies.rl.train) and the folder `out` holding model.zip and card.json."""

    card: dict[str, Any]
    out: str

    def to_dict(self) -> dict[str, Any]:
        card = self.card
        curve = card["training_curve"]
        doc = {k: card[k] for k in ("algo", "seed", "steps", "world_hash", "hyperparameters", "seconds")}
        doc.update(
            out=str(self.out),
            model=str(Path(self.out) / "model.zip"),
            card=str(Path(self.out) / "card.json"),
            final_mean_episode_return=curve[-1]["mean_episode_return"] if curve else None,
            training_curve=curve,
        )
        return doc


__all__ = ["CalibrationResult", "ValueTableResult", "SimulationSummary", "TrainingResult", "CALIBRATION_REPORT_KEYS"]
