"""A plan's deployment with a randomised control group, and the experiment's power before launch
(`clv plan --control-share`; docs/deployment.md).

**Who is in scope.** Every book customer at the plan's first decision point, contacted by the plan
or not: a customer the plan does not contact gets the action "none". The control group and the
treatment group are then random parts of the same population, and a read-out compares them as
they are (intention to treat over the whole book).

**The randomisation.** Customer i has a control share c_i (the overall `control_share`, or its
segment's in `segment_shares`), the plan's action a_i for the first period ("none" when the plan
does not contact i), and the set E_i of actions allowed at that decision point ("none" included,
a_i included; m_i = |E_i|). Three independent uniforms per customer, from `seed` only:

- control with probability c_i: action "none", group `control`;
- otherwise, when the plan contacts i (a_i != none), with probability e (`explore_share`): an
  action drawn uniformly from E_i, group `explore` (the draw may give a_i or "none" back);
- otherwise a_i, group `treatment` (a customer the plan does not contact is in `treatment` with
  action "none" unless drawn into control).

So the propensity of each outcome is exact:

    a_i = none:  P(none) = 1
    a_i != none: P(a_i)  = (1 - c_i)(1 - e) + (1 - c_i) e / m_i
                 P(b)    = (1 - c_i) e / m_i          for every other b in E_i, b != none
                 P(none) = c_i + (1 - c_i) e / m_i
                 P(b)    = 0                          for b outside E_i

and they sum to 1: c_i + (1 - c_i)(1 - e) + (1 - c_i) e m_i / m_i = 1. `propensity` in the file is
the probability of the action the customer was given (it does not depend on the group label).

**The file.** `deployment.csv` is a decisions table of the data contract: customer_id (in the
user's own type), date (the plan's start: the day after the world's calibration end), action,
propensity in (0, 1], cost (the catalogue's cost of the action; 0 for none), plus the extra
columns group, planned_action, segment (the book segment the share was taken from) and
control_share (c_i), which the history loader keeps as they are. The last two let a read-out
stratify by segment when the shares differ (experiments.readout_strata).

**Power before launch** (`experiment_power`). The treatment arm gets the plan (its price, pacing
and constraints) for `horizon_periods` periods, the control arm no contact; both are simulated on
the book's twins with common random numbers on seeds of their own (seed + 20000 + k, used for
nothing else). Y = a customer's discounted reward over those periods (the contract reward, cost
included). With sd_t, sd_c the per-customer standard deviations of Y under the plan and under
"none" (within a seed, averaged over seeds) and n_t, n_c the arms' sizes in the deployment,

    se  = sqrt(sd_t^2 / n_t + sd_c^2 / n_c)        (difference in means)
    mde = (z_{1 - alpha/2} + z_{power}) se          (two-sided 5 % level, 80 % power: 2.8016 se)

With control shares that differ by segment the difference in means is stratified by segment
(weights N_s / N over the segments with both arms): se^2 = sum_s w_s^2 (sd_ts^2 / n_ts + sd_cs^2 / n_cs).
`control_share_needed` is the smallest overall share c with mde(c) <= the predicted lift, where
n_c = c N, n_t = (1 - c) N: the smaller root of k c^2 + (sd_t^2 - sd_c^2 - k) c + sd_c^2 = 0 with
k = N lift^2 / (z_{1 - alpha/2} + z_{power})^2; none exists when k < (sd_t + sd_c)^2 (the best share,
sd_c / (sd_t + sd_c), still misses the lift) or the lift is not positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.errors import ConfigError
from sim.response import DEPLOYMENT_GROUPS

EXPERIMENT_SEED_OFFSET = 20_000  # the power simulation's seeds: apart from planning (0+) and fresh (10000+)
DEFAULT_EXPERIMENT_HORIZON = 13
_STREAM = 0xDE910  # the deployment's own random stream: SeedSequence([seed, _STREAM])
GROUPS = DEPLOYMENT_GROUPS  # treatment, control, explore: the one list, which calibration checks too
COLUMNS = ("customer_id", "date", "action", "propensity", "cost", "group", "planned_action", "segment", "control_share")


@dataclass(frozen=True)
class DeploymentSettings:
    """How a plan is deployed: the control share (overall, and per segment), the explore share, the
    seed of the draw, and the power calculation's horizon, level and power."""

    control_share: float = 0.0
    segment_shares: dict[str, float] = field(default_factory=dict)
    explore_share: float = 0.0
    seed: int = 0
    horizon_periods: int = DEFAULT_EXPERIMENT_HORIZON
    alpha: float = 0.05
    power: float = 0.80

    def __post_init__(self) -> None:
        _check_share("control_share", self.control_share)
        for name, share in self.segment_shares.items():
            _check_share("control_share", share, f"segment:{name}={share}")
        _check_share("explore_share", self.explore_share)
        if isinstance(self.horizon_periods, bool) or int(self.horizon_periods) < 1:
            raise ConfigError("experiment_horizon", value=self.horizon_periods, message="must be >= 1")
        if not 0 < self.alpha < 1:
            raise ConfigError("alpha", value=self.alpha, message="must be in (0, 1)")
        if not 0 < self.power < 1:
            raise ConfigError("power", value=self.power, message="must be in (0, 1)")


def _check_share(key: str, share: float, shown: object = None) -> None:
    ok = isinstance(share, (int, float)) and not isinstance(share, bool) and np.isfinite(share)
    if not ok or not 0.0 <= float(share) < 1.0:
        raise ConfigError(key, value=shown if shown is not None else share, message="must be in [0, 1)")


def parse_control_shares(specs: list[str]) -> tuple[float, dict[str, float]]:
    """`--control-share` values: a number F (the overall share, at most once) and `segment:NAME=F`
    overrides. Returns (overall, {segment: share}); the overall share defaults to 0 when only
    segments are given."""
    overall: float | None = None
    segments: dict[str, float] = {}
    for spec in specs:
        text = str(spec).strip()
        if text.startswith("segment:"):
            name, eq, value = text[len("segment:") :].partition("=")
            share = _number(value.strip(), text) if eq and name.strip() else None
            if share is None:
                raise ConfigError("control_share", value=text, message="expected F or segment:NAME=F, e.g. 0.2")
            if name.strip() in segments:
                raise ConfigError("control_share", value=text, message=f"segment {name.strip()!r} given twice")
            _check_share("control_share", share, text)
            segments[name.strip()] = share
            continue
        share = _number(text, text)
        if share is None:
            raise ConfigError("control_share", value=text, message="expected F or segment:NAME=F, e.g. 0.2")
        if overall is not None:
            raise ConfigError("control_share", value=text, message="the overall share is given twice")
        _check_share("control_share", share, text)
        overall = share
    return (0.0 if overall is None else overall), segments


def _number(text: str, shown: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def customer_shares(world, book: pd.DataFrame, settings: DeploymentSettings) -> np.ndarray:
    """(N,) control share of every book customer: its segment's override, else the overall share.
    An override naming no segment of the world is refused."""
    names = [s.name for s in world.segments]
    for name in settings.segment_shares:
        if name not in names:
            raise ConfigError(
                "control_share",
                value=f"segment:{name}={settings.segment_shares[name]}",
                message=f"no segment {name!r} in the world; its segments: {', '.join(names)}",
            )
    seg = _segments(book)
    by_segment = np.array([settings.segment_shares.get(n, settings.control_share) for n in names] or [0.0], float)
    return by_segment[np.clip(seg, 0, len(by_segment) - 1)]


def _segments(book: pd.DataFrame) -> np.ndarray:
    return book["segment"].to_numpy(np.int64) if "segment" in book.columns else np.zeros(len(book), np.int64)


def uniforms(n: int, seed: int) -> np.ndarray:
    """(3, n) uniforms of the draw (control, explore, which alternative), from `seed` only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM])).random((3, n))


def check_control_group(world, book: pd.DataFrame, settings: DeploymentSettings) -> None:
    """Before any work: the draw must leave control customers overall and in every segment given a
    positive share of its own (ConfigError naming control_share otherwise)."""
    shares = customer_shares(world, book, settings)
    control = uniforms(len(book), settings.seed)[0] < shares
    if not control.any():
        raise ConfigError(
            "control_share",
            value=_shown(settings),
            message=f"leaves no control customers among the {len(book):,} of the book (seed {settings.seed}); "
            "give a larger share",
        )
    seg, names = _segments(book), [s.name for s in world.segments]
    for name, share in settings.segment_shares.items():
        k = names.index(name)
        if share > 0 and not control[seg == k].any():
            raise ConfigError(
                "control_share",
                value=f"segment:{name}={share}",
                message=f"leaves no control customers among the segment's {int((seg == k).sum()):,}; "
                "give a larger share",
            )


def _shown(settings: DeploymentSettings) -> str:
    parts = [str(settings.control_share)] + [f"segment:{n}={v}" for n, v in settings.segment_shares.items()]
    return " ".join(parts)


def action_probabilities(planned: np.ndarray, eligible: np.ndarray, control: np.ndarray, explore: float) -> np.ndarray:
    """(N, A) probability of every action for every customer under the randomisation (module
    docstring): `planned` (N,) action indices (0 = none), `eligible` (N, A) allowed actions,
    `control` (N,) control shares, `explore` the explore share."""
    planned = np.asarray(planned, np.int64)
    elig = _eligible(planned, eligible)
    c = np.asarray(control, float)
    n, a = elig.shape
    p = np.zeros((n, a))
    contacted = planned > 0
    m = elig.sum(axis=1)
    spread = np.where(contacted, (1 - c) * explore / m, 0.0)
    p[elig] = np.repeat(spread, m)
    rows = np.arange(n)
    p[rows[contacted], planned[contacted]] += (1 - c[contacted]) * (1 - explore)
    p[:, 0] += np.where(contacted, c, 1.0)
    return p


def _eligible(planned: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    elig = np.array(eligible, bool, copy=True)
    elig[:, 0] = True  # "none" is always allowed
    elig[np.arange(len(planned)), planned] = True  # the plan's own action is allowed where it was chosen
    return elig


def draw(
    planned: np.ndarray, eligible: np.ndarray, control: np.ndarray, explore: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(action index, group index into GROUPS) of every customer, drawn from `seed` only."""
    planned = np.asarray(planned, np.int64)
    elig = _eligible(planned, eligible)
    u_control, u_explore, u_pick = uniforms(len(planned), seed)
    is_control = u_control < np.asarray(control, float)
    is_explore = ~is_control & (planned > 0) & (u_explore < explore)
    m = elig.sum(axis=1)
    k = np.minimum((u_pick * m).astype(np.int64), m - 1)  # the k-th allowed action (0-based)
    pick = np.argmax(np.cumsum(elig, axis=1) > k[:, None], axis=1)
    action = np.where(is_control, 0, np.where(is_explore, pick, planned))
    group = np.where(is_control, 1, np.where(is_explore, 2, 0))
    return action.astype(np.int64), group.astype(np.int64)


def first_period_eligibility(world, book: pd.DataFrame, seed: int, tables=None) -> np.ndarray:
    """(N, A) actions allowed at the plan's first decision point for every book customer, in book
    order (the contact rules on the book's observable state, as the plan's first period saw them on
    its first planning seed)."""
    from sim.population import DEFAULT_CHUNK, PopulationSimulator, WorldTables, chunk_seeds, sample_book

    tables = tables or WorldTables.from_world(world)
    src = sample_book(book, len(book), seed)
    parts = []
    for start, stop, seq in chunk_seeds(seed, len(src), DEFAULT_CHUNK):
        sim = PopulationSimulator.from_book(world, src.iloc[start:stop], seq, tables=tables)
        parts.append(sim.action_masks())
    return np.concatenate(parts) if parts else np.zeros((0, world.n_actions), bool)


def planned_actions(world, book: pd.DataFrame, contacts: pd.DataFrame) -> np.ndarray:
    """(N,) the plan's first-period action of every book customer (0 = none), from contacts.parquet's
    frame (its customer ids in the user's type, its action names)."""
    out = np.zeros(len(book), np.int64)
    if len(contacts) == 0:
        return out
    index = pd.Index(book["customer_id"].astype(str).to_numpy())
    rows = index.get_indexer(pd.Series(contacts["customer_id"]).astype(str).to_numpy())
    if (rows < 0).any():
        raise ValueError("the plan's contacts name customers outside the book (was it made with --customers?)")
    names = {n: i for i, n in enumerate(world.catalogue.names)}
    out[rows] = [names[a] for a in contacts["action"]]
    return out


def start_date(world) -> str:
    """The plan's start: the day after the world's calibration end (YYYY-MM-DD)."""
    if not world.calibration_end:
        raise ConfigError("the world has no calibration end date; recalibrate it with `clv calibrate`")
    return str((pd.Timestamp(world.calibration_end) + pd.Timedelta(days=1)).date())


@dataclass
class Deployment:
    """The deployment record (`frame`, deployment.csv) and what it was drawn from."""

    frame: pd.DataFrame
    probabilities: np.ndarray  # (N, A): every action's probability for every customer
    planned: np.ndarray  # (N,) plan's action index
    action: np.ndarray  # (N,) assigned action index
    group: np.ndarray  # (N,) index into GROUPS
    segment: np.ndarray  # (N,) segment index
    shares: np.ndarray  # (N,) control share


def deploy(
    world, book: pd.DataFrame, contacts: pd.DataFrame, settings: DeploymentSettings, eligible: np.ndarray | None = None
) -> Deployment:
    """The deployment of a plan's first period (`contacts`: the plan's contact list) to every book
    customer with the randomisation of `settings` (module docstring). `eligible`: (N, A) allowed
    actions (default: `first_period_eligibility` on seed `settings.seed`, the plan's first seed)."""
    from sim.history import restore_customer_ids

    check_control_group(world, book, settings)
    planned = planned_actions(world, book, contacts)
    if eligible is None:
        eligible = first_period_eligibility(world, book, settings.seed)
    shares = customer_shares(world, book, settings)
    probs = action_probabilities(planned, eligible, shares, settings.explore_share)
    action, group = draw(planned, eligible, shares, settings.explore_share, settings.seed)
    names = np.asarray(world.catalogue.names, dtype=object)
    cost = np.asarray(world.catalogue.costs, float)
    segment = _segments(book)
    seg_names = np.asarray([s.name for s in world.segments] or ["all"], dtype=object)
    frame = pd.DataFrame(
        {
            "customer_id": restore_customer_ids(book["customer_id"].to_numpy(), world.customer_id_type),
            "date": start_date(world),
            "action": names[action],
            "propensity": probs[np.arange(len(book)), action],
            "cost": cost[action],
            "group": np.asarray(GROUPS, dtype=object)[group],
            "planned_action": names[planned],
            # the stratum of the randomisation: a read-out weights segments whose shares differ
            "segment": seg_names[np.clip(segment, 0, len(seg_names) - 1)],
            "control_share": shares,
        },
        columns=list(COLUMNS),
    )
    return Deployment(frame, probs, planned, action, group, segment, shares)


def write_deployment(dep: Deployment, path: Path) -> str:
    """deployment.csv, written atomically."""
    from sim.atomic import atomic_path

    with atomic_path(path) as tmp:
        dep.frame.to_csv(tmp, index=False)  # shortest repr: round-trips exactly, 0.2 stays 0.2
    return str(path)


# ---- power before launch ----------------------------------------------------------------------
def z_total(alpha: float = 0.05, power: float = 0.80) -> float:
    """z_{1 - alpha/2} + z_{power}: 1.95996 + 0.84162 = 2.80158 at the defaults."""
    nd = NormalDist()
    return nd.inv_cdf(1 - alpha / 2) + nd.inv_cdf(power)


def minimal_detectable_effect(
    sd_t: float, sd_c: float, n_t: float, n_c: float, alpha: float = 0.05, power: float = 0.80
) -> float:
    """The smallest difference in means a two-sided level-`alpha` test detects with probability
    `power`: (z_{1-alpha/2} + z_power) sqrt(sd_t^2 / n_t + sd_c^2 / n_c); inf without one of the arms."""
    if n_t <= 0 or n_c <= 0:
        return float("inf")
    return z_total(alpha, power) * float(np.sqrt(sd_t**2 / n_t + sd_c**2 / n_c))


def control_share_needed(
    lift: float, sd_t: float, sd_c: float, n: int, alpha: float = 0.05, power: float = 0.80
) -> float | None:
    """The smallest overall control share whose MDE (n_c = c n, n_t = (1 - c) n) is at most `lift`;
    None when no share can (module docstring)."""
    if not lift > 0 or n <= 0:
        return None
    k = n * lift**2 / z_total(alpha, power) ** 2
    if sd_c == 0:
        return 0.0 if sd_t**2 <= k else None
    if k < (sd_t + sd_c) ** 2:
        return None
    b = k + sd_c**2 - sd_t**2
    disc = max(b * b - 4 * k * sd_c**2, 0.0)
    return float(2 * sd_c**2 / (b + np.sqrt(disc)))  # the smaller root, written without cancellation


def experiment_power(
    ctx,
    plan_doc: dict[str, Any],
    dep: Deployment,
    settings: DeploymentSettings,
    constraints: list | None = None,
    executor=None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The `experiment` entry of plan.json: the plan's predicted lift per customer over
    `settings.horizon_periods`, the per-customer standard deviations, the MDE at the deployment's
    arm sizes, the control share needed, and a warning when the chosen share cannot detect the
    lift (module docstring)."""
    from optimizer.budgeted import BudgetRule, run_jobs

    H = int(settings.horizon_periods)
    K = ctx.settings.seeds
    seeds = [ctx.settings.seed + EXPERIMENT_SEED_OFFSET + k for k in range(K)]
    rule = BudgetRule(
        float(plan_doc["budget"]),
        int(plan_doc["horizon"]),
        plan_doc["pacing"],
        price=plan_doc["price"],
        constraints=list(constraints or []),
    )
    jobs = [(0, "budgeted", rule, False, s) for s in seeds] + [(None, "none", None, False, s) for s in seeds]
    runs = run_jobs(ctx.world, ctx.book, (ctx.policy_fn,), H, jobs, ctx.values, None, ctx.tables, executor, progress)
    treated, none = np.stack([r.clv for r in runs[:K]]), np.stack([r.clv for r in runs[K:]])  # (K, N)
    segments = [s.name for s in ctx.world.segments]
    return power_from_outcomes(treated, none, dep, settings, seeds, segments, ctx.world.economics.money_unit)


def power_from_outcomes(
    treated: np.ndarray,
    none: np.ndarray,
    dep: Deployment,
    settings: DeploymentSettings,
    seeds: list[int] | None = None,
    segment_names: list[str] | None = None,
    unit: str = "margin units",
) -> dict[str, Any]:
    """The power entry from simulated outcomes: `treated`, `none` (K, N) per-customer outcomes over
    the horizon under the plan and under no contact, per seed, in book order (common random numbers);
    `unit`: what the outcomes are in, for the warning (economics.yaml's currency, else margin units)."""
    treated, none = np.atleast_2d(treated), np.atleast_2d(none)
    is_control = dep.group == 1
    n_c_all, n_t_all = int(is_control.sum()), int((~is_control).sum())
    uniform = bool(np.all(dep.shares == dep.shares[0])) if len(dep.shares) else True
    alpha, power = settings.alpha, settings.power
    if uniform:
        strata = [np.ones(len(dep.group), bool)]
    else:
        strata = [dep.segment == s for s in np.unique(dep.segment)]
        strata = [m for m in strata if is_control[m].any() and (~is_control[m]).any()]
    scope = np.zeros(len(dep.group), bool)
    for m in strata:
        scope |= m
    n_scope = int(scope.sum())

    def sd(y: np.ndarray, m: np.ndarray) -> float:
        return float(np.sqrt(np.mean(y[:, m].var(axis=1, ddof=1)))) if m.sum() > 1 else 0.0

    lifts = treated[:, scope].mean(axis=1) - none[:, scope].mean(axis=1)
    lift = float(lifts.mean())
    sd_t, sd_c = sd(treated, scope), sd(none, scope)
    if uniform:
        mde = minimal_detectable_effect(sd_t, sd_c, n_t_all, n_c_all, alpha, power)
        estimator = "difference in means between treatment (treatment + explore) and control"
    else:
        var = 0.0
        for m in strata:
            w = m.sum() / n_scope
            nt, nc = int((m & ~is_control).sum()), int((m & is_control).sum())
            var += w**2 * (sd(treated, m) ** 2 / nt + sd(none, m) ** 2 / nc)
        mde = z_total(alpha, power) * float(np.sqrt(var)) if strata else float("inf")
        estimator = "difference in means stratified by segment (weights: segment sizes), segments with a control group"
    needed = control_share_needed(lift, sd_t, sd_c, n_scope, alpha, power)
    detectable = bool(lift > 0 and np.isfinite(mde) and mde <= lift)
    warning = None
    shown = _shown(settings)
    if not lift > 0:
        warning = (
            f"the plan predicts no positive lift over {settings.horizon_periods} periods ({lift:+.4f} {unit} per "
            "customer): no control share can detect it"
        )
    elif not detectable:
        warning = (
            f"a control share of {shown} gives a minimal detectable effect of {mde:.4f} {unit} per customer over "
            f"{settings.horizon_periods} periods, above the predicted lift of {lift:.4f} {unit}: the read-out is unlikely "
            "to detect it; "
            + (
                f"a control share of {needed:.3f} would"
                if needed is not None
                else f"no control share can with {n_scope:,} customers (a longer experiment horizon or a larger "
                "book may)"
            )
        )
    by_segment = None
    if segment_names is not None:  # the read-out puts each segment's measured lift beside its prediction
        by_segment = {}
        for k in np.unique(dep.segment):
            m = dep.segment == k
            name = segment_names[int(k)] if 0 <= int(k) < len(segment_names) else str(int(k))
            by_segment[name] = float((treated[:, m].mean(axis=1) - none[:, m].mean(axis=1)).mean())
    in_scope_segments = (
        None if uniform or segment_names is None else [segment_names[int(dep.segment[m][0])] for m in strata if m.any()]
    )
    return {
        "control_share": settings.control_share,
        "segment_control_shares": dict(settings.segment_shares),
        "explore_share": settings.explore_share,
        "seed": settings.seed,
        "customers": int(len(dep.group)),
        "treatment_customers": int((dep.group == 0).sum()),
        "explore_customers": int((dep.group == 2).sum()),
        "control_customers": n_c_all,
        "treatment_arm_customers": n_t_all,
        "horizon_periods": int(settings.horizon_periods),
        "outcome": "discounted reward per customer over the horizon (margin minus contact cost), "
        "treatment arm: the plan; control arm: no contact",
        "estimator": estimator,
        "segments_in_scope": in_scope_segments,
        "predicted_lift_per_customer": lift,
        "predicted_lift_by_seed": [float(x) for x in lifts],
        "predicted_lift_by_segment": by_segment,
        "sd_per_customer": float(np.sqrt((sd_t**2 + sd_c**2) / 2)),
        "sd_treatment": sd_t,
        "sd_control": sd_c,
        "alpha": alpha,
        "power": power,
        "mde": mde if np.isfinite(mde) else None,
        "control_share_needed": needed,
        "detectable": detectable,
        "warning": warning,
        "seeds": list(seeds or []),
        "note": "treatment_arm_customers = treatment + explore customers (the arm a read-out compares with "
        "control); the predicted lift assumes the whole arm follows the plan (explore draws in the first "
        "period are not simulated); the control group is held out for the whole horizon",
    }
