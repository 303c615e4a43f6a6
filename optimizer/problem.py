"""The allocation problem: a value table plus coupling constraints, in one linear form every solver shares.

Decision: x[i, j] = how many of row i's `count` customers get action j (0/1 for a customer-level
table); at most `count[i]` per row in all (one action per customer per period), only where
eligible. Maximise sum value[i, j] * x[i, j] subject to K coupling constraints, each written as

    sum_ij (P[k, seg_i, j] + Q[k, seg_i] * cost[i, j]) * x[i, j]  <=  b[k]

which covers every constraint the CLI offers:

- budget B:                        Q = 1,                              b = B
- capacity channel:c=N             P[:, j] = 1 for actions on channel c, b = N
- capacity action:a=N              P[:, a] = 1,                        b = N
- min-coverage segment:s=f         P[s, :] = -1 (covered customers),   b = -ceil(f * size_s)
- max-share segment:s=f (of spend) Q[s] = 1 - f, Q[other] = -f,        b = 0

Keeping coefficients per (segment, action) plus a cost term lets the Lagrangian engine price a
million customers with a few vector operations and lets usage be computed from (segment x
action) counts and per-segment spend.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sim.errors import ConfigError

from .values import ValueTable

KINDS = ("budget", "capacity", "min-coverage", "max-share")
_SPEC = re.compile(r"^\s*(channel|action|segment)\s*:\s*(.+?)\s*=\s*([^=]+?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """One coupling constraint as the user wrote it: kind, scope (total/channel/action/segment),
    key, limit. `name` is the stable label used in JSON (e.g. "capacity channel:rm")."""

    kind: str
    scope: str
    key: str | None
    limit: float

    @property
    def name(self) -> str:
        return self.kind if self.scope == "total" else f"{self.kind} {self.scope}:{self.key}"

    @property
    def spec(self) -> str:
        """The CLI option that states it."""
        if self.kind == "budget":
            return f"--budget {self.limit:g}"
        return f"--{self.kind} {self.scope}:{self.key}={self.limit:g}"


def constraint_targets(world) -> dict[str, list[str]]:
    """What a constraint on `world` may name, by scope: its segments, channels and contact actions."""
    return {
        "segment": [seg.name for seg in world.segments],
        "channel": world.catalogue.contact_channels,
        "action": list(world.catalogue.names[1:]),
    }


def unknown_target(c: "Constraint", world, which: str = "the world") -> str | None:
    """Why constraint `c` cannot apply to `world` (it names a segment, channel or action the world
    does not have), or None when it can."""
    known = constraint_targets(world)[c.scope]
    return None if c.key in known else f"no {c.scope} {c.key!r} in {which} (it has {', '.join(known)})"


def parse_constraint(kind: str, text: str) -> Constraint:
    """'channel:rm=5000' under --capacity, 'segment:small=0.6' under --min-coverage, ..."""
    opt = f"--{kind}"
    m = _SPEC.match(text)
    if not m:
        raise ConfigError(
            f"{opt} {text!r}: expected SCOPE:NAME=LIMIT, e.g. "
            + {
                "capacity": "channel:rm_call=50 or action:rm_call_wealth=20",
                "min-coverage": "segment:small=0.6",
                "max-share": "segment:affluent=0.5",
            }[kind]
        )
    scope, key, raw = m.groups()
    try:
        limit = float(raw)
    except ValueError:
        raise ConfigError(f"{opt} {text!r}: limit {raw!r} is not a number") from None
    if not math.isfinite(limit) or limit < 0:
        raise ConfigError(f"{opt} {text!r}: limit must be a finite number >= 0")
    allowed = {"capacity": ("channel", "action"), "min-coverage": ("segment",), "max-share": ("segment",)}[kind]
    if scope not in allowed:
        raise ConfigError(f"{opt} {text!r}: scope must be {' or '.join(allowed)}")
    if kind in ("min-coverage", "max-share") and limit > 1:
        raise ConfigError(f"{opt} {text!r}: a share is between 0 and 1")
    return Constraint(kind, scope, key, limit)


def budget_constraint(budget: float) -> Constraint:
    if not math.isfinite(budget) or budget < 0:
        raise ConfigError(f"--budget {budget!r}: must be a finite number >= 0")  # the constraint's spec
    return Constraint("budget", "total", None, float(budget))


@dataclass
class AllocationProblem:
    """A value table with its coupling constraints in the shared linear form (module docstring)."""

    table: ValueTable
    constraints: list[Constraint]
    P: np.ndarray = field(init=False)  # (K, S, J)
    Q: np.ndarray = field(init=False)  # (K, S)
    b: np.ndarray = field(init=False)  # (K,)

    def __post_init__(self) -> None:
        t = self.table
        S, J, K = len(t.segments), t.n_actions, len(self.constraints)
        self.P = np.zeros((K, S, J))
        self.Q = np.zeros((K, S))
        self.b = np.zeros(K)
        sizes = t.segment_sizes()
        seen: set[str] = set()
        for k, c in enumerate(self.constraints):
            if c.name in seen:
                raise ConfigError(f"{c.name} is given twice")
            seen.add(c.name)
            if c.kind == "budget":
                self.Q[k] = 1.0
                self.b[k] = c.limit
            elif c.kind == "capacity":
                names = t.channels if c.scope == "channel" else t.actions
                if c.key not in names:
                    raise ConfigError(
                        f"--capacity {c.scope}:{c.key}: no {c.scope} {c.key!r} in {t.source} "
                        f"(it has {', '.join(names)})"
                    )
                cols = (
                    (t.action_channel == names.index(c.key))
                    if c.scope == "channel"
                    else (np.arange(J) == t.actions.index(c.key))
                )
                self.P[k][:, cols] = 1.0
                self.b[k] = c.limit
            else:
                if c.key not in t.segments:
                    raise ConfigError(
                        f"--{c.kind} segment:{c.key}: no segment {c.key!r} in {t.source} "
                        f"(it has {', '.join(t.segments)})"
                    )
                s = t.segments.index(c.key)
                if c.kind == "min-coverage":
                    self.P[k, s, :] = -1.0
                    self.b[k] = -math.ceil(c.limit * sizes[s] - 1e-9)
                else:
                    self.Q[k] = -c.limit
                    self.Q[k, s] = 1.0 - c.limit
                    self.b[k] = 0.0

    @property
    def K(self) -> int:
        return len(self.constraints)

    def budget_index(self) -> int | None:
        for k, c in enumerate(self.constraints):
            if c.kind == "budget":
                return k
        return None

    def with_limit(self, k: int, limit: float) -> "AllocationProblem":
        """The same problem with constraint k's limit changed (frontier sweeps, diagnosis)."""
        cons = list(self.constraints)
        c = cons[k]
        cons[k] = Constraint(c.kind, c.scope, c.key, float(limit))
        return AllocationProblem(self.table, cons)

    def without(self, ks: set[int]) -> "AllocationProblem":
        return AllocationProblem(self.table, [c for k, c in enumerate(self.constraints) if k not in ks])

    # --- evaluating a plan -------------------------------------------------------------------
    def usage_from_counts(self, counts: np.ndarray, seg_spend: np.ndarray) -> np.ndarray:
        """Left-hand sides of all constraints from (S, J) assigned counts and (S,) spend."""
        return np.einsum("ksj,sj->k", self.P, counts) + self.Q @ seg_spend

    def plan_counts(self, choice: np.ndarray, units: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(S, J) counts and (S,) spend of a plan given as one action per row (-1 = none) with
        `units` customers of the row taking it (default: the row's count)."""
        t = self.table
        S, J = len(t.segments), t.n_actions
        units = t.count if units is None else units
        on = choice >= 0
        rows = np.flatnonzero(on)
        j = choice[rows]
        w = units[rows].astype(np.float64)
        counts = np.bincount(t.segment[rows] * J + j, weights=w, minlength=S * J).reshape(S, J)
        spend = np.bincount(t.segment[rows], weights=w * t.cost[rows, j], minlength=S)
        return counts, spend

    def evaluate_choice(self, choice: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and constraint usage of a one-action-per-row plan."""
        t = self.table
        rows = np.flatnonzero(choice >= 0)
        obj = float((t.value[rows, choice[rows]] * t.count[rows]).sum())
        counts, spend = self.plan_counts(choice)
        return obj, self.usage_from_counts(counts, spend)

    def feasible(self, usage: np.ndarray, rtol: float = 1e-9) -> bool:
        return bool((usage <= self.b + rtol * np.maximum(1.0, np.abs(self.b))).all())

    def describe_usage(self, usage: np.ndarray, counts: np.ndarray, seg_spend: np.ndarray) -> list[dict]:
        """Per constraint: what is used against its limit, in the units the user wrote."""
        t = self.table
        sizes = t.segment_sizes()
        total_spend = float(seg_spend.sum())
        out = []
        for k, c in enumerate(self.constraints):
            row = {"constraint": c.name, "kind": c.kind, "limit": c.limit}
            if c.kind == "budget":
                row.update(used=float(seg_spend.sum()), slack=float(c.limit - seg_spend.sum()))
            elif c.kind == "capacity":
                row.update(used=float(usage[k]), slack=float(c.limit - usage[k]))
            elif c.kind == "min-coverage":
                s = t.segments.index(c.key)
                covered = float(counts[s].sum())
                row.update(
                    used=covered / sizes[s] if sizes[s] else 0.0,
                    covered=covered,
                    required=float(-self.b[k]),
                    size=int(sizes[s]),
                    slack=float(covered + self.b[k]),
                )
            else:
                s = t.segments.index(c.key)
                share = float(seg_spend[s] / total_spend) if total_spend > 0 else 0.0
                row.update(used=share, spend=float(seg_spend[s]), slack=float(c.limit - share))
            out.append(row)
        return out

    def shadow_prices(self, lam: np.ndarray, seg_spend: np.ndarray) -> list[dict]:
        """d(objective)/d(limit) per constraint, in the units of the limit as written (so a
        min-coverage price is negative: asking for more coverage costs value), from multipliers
        `lam` >= 0 of the <= form."""
        t = self.table
        sizes = t.segment_sizes()
        total = float(seg_spend.sum())
        out = []
        for k, c in enumerate(self.constraints):
            lk = float(lam[k])
            row = {"constraint": c.name, "multiplier": lk}
            if c.kind in ("budget", "capacity"):
                row.update(shadow_price=lk, per="unit of " + ("budget" if c.kind == "budget" else "capacity"))
            elif c.kind == "min-coverage":
                s = t.segments.index(c.key)
                row.update(
                    shadow_price=-lk * float(sizes[s]) + 0.0, per="unit of coverage share", per_customer=-lk + 0.0
                )  # + 0.0: no "-0" when the row does not bind
            else:
                row.update(shadow_price=lk * total, per="unit of spend share")
            out.append(row)
        return out
