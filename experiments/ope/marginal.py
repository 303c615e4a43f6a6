"""State cells for marginalized importance sampling (the `mis` and `drl` estimators).

Finite-horizon MIS (Xie, Ma & Wang 2019) replaces the product of a trajectory's step ratios by
the ratio of the candidate's to the logging policy's distribution of the state at that step,
estimated on a discrete state space. The cells come from the observations the OPE already rebuilt
at every logged decision (`experiments.ope.observations.DecisionStates.obs`), by this rule:

    cell = stage (5) x segment x products held (0, 1, 2, 3+) x contacted at the previous decision
    (last_contact < `contact_periods`, default 4 = the synthetic bank's decision interval)

On the synthetic bank that is 5 x 3 x 4 x 2 = 120 cells. Why these coordinates: the candidates act
through exactly these channels. Contacts change activity (recency, hence the stage, which the
world's stage rules compute from tenure and recency) and dropout (the dormancy and churned
stages), product offers change the products held, and the contact rules and fatigue depend on
the last contact; the segment sets the response to all of them. Tenure is not a coordinate: the
ratios are indexed by the decision index t (`MIS.index`, the customer's t-th decision, which on a
calendar of a decision every few periods from signup is the tenure), so every customer in a cell
at index t has lived under t of the candidate's decisions.

Cells with too little logged mass are merged, coarsest coordinate last: a cell holding fewer than
`min_decisions` (1,000: about 40 per step over a median 26 steps) logged decisions (pooled over
steps) drops its last coordinate (contact, then
products, then segment), and so on up to the stage alone, which is kept whatever its mass. The
merging is decided once on the whole sample (it is part of the estimator's design, not
re-decided on a bootstrap resample); the ratios themselves are re-estimated on every resample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRODUCT_BUCKETS = 4  # 0, 1, 2, 3+ products held


@dataclass(frozen=True)
class CellRule:
    """The discretisation of rebuilt observations into MIS cells (see the module docstring).

    min_decisions: a cell with fewer logged decisions (all steps pooled) is merged into its parent;
    contact_periods: "contacted at the previous decision" means last_contact < contact_periods."""

    min_decisions: int = 1000
    contact_periods: int = 4

    def __post_init__(self):
        for key in ("min_decisions", "contact_periods"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"CellRule.{key}: must be an integer >= 1, got {v!r}")

    def coordinates(self, obs: dict) -> np.ndarray:
        """(n, 4) int: stage, segment, product bucket, contacted, per decision."""
        missing = [k for k in ("stage", "segment", "products", "last_contact") if k not in obs]
        if missing:
            raise ValueError(f"CellRule: observations lack {', '.join(missing)}")
        stage = np.asarray(obs["stage"], dtype=np.int64)
        n = stage.shape[0]
        products = np.asarray(obs["products"]).reshape(n, -1)
        held = np.minimum(products.sum(axis=1), PRODUCT_BUCKETS - 1)
        contacted = np.asarray(obs["last_contact"]) < self.contact_periods
        segment = np.asarray(obs["segment"], dtype=np.int64)
        for name, v in (("stage", stage), ("segment", segment)):
            if v.shape != (n,) or (v < 0).any():
                raise ValueError(f"CellRule: {name} must be non-negative integers, one per decision")
        return np.column_stack([stage, segment, held, contacted.astype(np.int64)])

    def cells(self, obs: dict) -> tuple[np.ndarray, list[tuple]]:
        """Cell code (n,) of every decision, 0..C-1, and each code's label: a tuple of
        (stage, segment, product bucket, contacted) with the merged coordinates left out."""
        coords = self.coordinates(obs)
        n, k = coords.shape
        level = np.zeros(n, np.int64)  # coordinates dropped so far
        for drop in range(k - 1):  # the stage alone (k - 1 dropped) is always kept
            at = level == drop
            if not at.any():
                break
            keys = coords[at][:, : k - drop]
            _, inv, cnt = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
            small = cnt[inv.ravel()] < self.min_decisions
            rows = np.flatnonzero(at)
            level[rows[small]] += 1
        key = np.column_stack([level, np.where(np.arange(k)[None, :] < (k - level)[:, None], coords, -1)])
        uniq, code = np.unique(key, axis=0, return_inverse=True)
        labels = [tuple(int(x) for x in row[1:] if x >= 0) for row in uniq]
        return code.ravel().astype(np.int64), labels

    def fit(self, obs: dict) -> tuple[np.ndarray, dict]:
        """`cells(obs)`'s codes and a description for the result's `models`: the rule, its knobs,
        the number of cells and how many decisions sit in merged cells."""
        code, labels = self.cells(obs)
        merged = np.array([len(lab) < 4 for lab in labels])
        return code, {
            "rule": "stage x segment x products held (0, 1, 2, 3+) x contacted at the previous decision, "
            "cells with fewer than min_decisions logged decisions merged into their parent",
            "min_decisions": self.min_decisions,
            "contact_periods": self.contact_periods,
            "cells": len(labels),
            "merged_cells": int(merged.sum()),
            "decisions_in_merged_cells": int(merged[code].sum()),
        }


def state_cells(obs: dict, rule: CellRule | None = None) -> tuple[np.ndarray, list[tuple]]:
    """`rule.cells(obs)` with the default rule when none is given."""
    return (rule or CellRule()).cells(obs)


__all__ = ["CellRule", "state_cells", "PRODUCT_BUCKETS"]
