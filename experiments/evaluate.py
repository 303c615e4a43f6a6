"""Compare policies in a calibrated world by simulation, with common random numbers across policies
and 95% confidence intervals over seeds (`clv evaluate`).

For each seed every policy runs on the same customers: the same digital twins (latent rates and
alive state drawn from the same uniforms) and the same world random streams, with each policy's
own randomness on a separate stream (PopulationSimulator.policy_rng). Differences between
policies are then paired by seed, which removes the between-customer variance from them.

Metrics per policy (means per customer over the horizon):
- clv: discounted margin minus contact cost;
- retention: share of customers still alive at the horizon (known in simulation);
- marketing_roi: (clv - clv of "none") / discounted contact cost, i.e. incremental margin net of
  cost per unit of cost; undefined for a policy that spends nothing;
- cross_sell_rate: share of customers who opened at least one product;
- active_share: share in the active stages (new, growth, maturity) at the horizon;
- contacts: contacts per customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

METRICS = ("clv", "retention", "marketing_roi", "cross_sell_rate", "active_share", "contacts")
ACTIVE_STAGES = ("new", "growth", "maturity")


@dataclass
class Interval:
    mean: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}


def mean_ci(values: np.ndarray, level: float = 0.95) -> Interval:
    """Mean and Student-t interval over seeds (NaN entries dropped; a point when only one)."""
    from scipy import stats

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    m = float(v.mean())
    if v.size < 2:
        return Interval(m, m, m)
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return Interval(m, m - half, m + half)


def seed_metrics(c, clv_none: np.ndarray | None) -> dict[str, float]:
    cost = float(c["discounted_cost"].mean())
    clv = float(c["clv"].mean())
    roi = float("nan") if clv_none is None or cost <= 0 else (clv - float(clv_none.mean())) / cost
    return {
        "clv": clv,
        "retention": float(c["alive_end"].mean()),
        "marketing_roi": roi,
        "cross_sell_rate": float((c["products_opened"] > 0).mean()),
        "active_share": float(c["end_stage"].isin(ACTIVE_STAGES).mean()),
        "contacts": float(c["contacts"].mean()),
    }


def as_policies(world, policies: Any) -> dict[str, Any]:
    """{name: policy} from what a user passes: a dict of policies or models, a list of them, or one
    (`policies.registry.as_policy` adapts SB3 models and anything with `predict`; a policy's
    `name`, else its class, names it)."""
    from collections.abc import Mapping

    from policies.registry import as_policy

    if isinstance(policies, Mapping):
        return {str(n): as_policy(p, world, name=str(n)) for n, p in policies.items()}
    items = list(policies) if isinstance(policies, (list, tuple)) else [policies]
    out: dict[str, Any] = {}
    for p in items:
        pol = as_policy(p, world)
        name = str(getattr(pol, "name", None) or type(p).__name__.lower())
        if name in out:
            raise ValueError(f"two policies are called {name!r}; pass a dict {{name: policy}}")
        out[name] = pol
    return out


def evaluate(
    world,
    policies: Any,
    customers: int,
    periods: int,
    seeds: int,
    seed: int = 0,
    book=None,
    reference: str | None = None,
    progress: Callable[[int], None] | None = None,
    keep_customers: bool = False,
    crn: bool = False,
) -> dict[str, Any]:
    """Simulate each policy for `seeds` seeds (seed, seed+1, ...) on `customers` customers for
    `periods` periods. `policies`: {name: policy}, a list, or one policy; a value may be any
    policy, an SB3 model (e.g. a bare `PPO(...)` trained on PopulationVecEnv) or anything with
    `predict(obs, deterministic=...)` (see `as_policies`). `reference` (default: "bau" if
    evaluated, else the first policy) is the policy every other is compared with, paired by seed.
    `crn`: the simulator's common random numbers (every customer draws the same uniforms each
    period whatever the policy did), which shrinks the paired differences' noise
    (`sim.population.simulate`)."""
    from policies.base import as_simulator_policy
    from policies.baselines import make_baseline
    from sim.population import simulate

    policies = as_policies(world, policies)
    names = list(policies)
    if reference is None:
        reference = "bau" if "bau" in policies else names[0]
    if reference not in policies:
        raise ValueError(f"reference policy {reference!r} is not among the evaluated ones: {names}")
    none_policy = policies.get("none") or make_baseline("none", world)
    per_seed: dict[str, dict[str, list[float]]] = {n: {m: [] for m in METRICS} for n in names}
    timing: dict[str, list[float]] = {n: [] for n in names}
    stage_contacts: dict[str, np.ndarray] = {}
    kept: dict[str, Any] = {}
    import time

    for k in range(seeds):
        s = seed + k
        res_none = simulate(
            world, as_simulator_policy(none_policy), periods, s, book=book, customers=customers, crn=crn
        )
        clv_none = res_none.customers["clv"].to_numpy()
        for n in names:
            t0 = time.perf_counter()
            res = (
                res_none
                if n == "none" and none_policy is policies[n]
                else simulate(
                    world, as_simulator_policy(policies[n]), periods, s, book=book, customers=customers, crn=crn
                )
            )
            timing[n].append(time.perf_counter() - t0)
            for m, v in seed_metrics(res.customers, clv_none).items():
                per_seed[n][m].append(v)
            cols = [c for c in res.periods.columns if c.startswith("contacts_stage_")]
            if cols:
                stage_contacts[n] = stage_contacts.get(n, 0) + res.periods[cols].to_numpy().sum(axis=0)
            if keep_customers and k == 0:
                kept[n] = res.customers
            if progress:
                progress(1)
    out: dict[str, Any] = {
        "customers": customers,
        "periods": periods,
        "seeds": seeds,
        "seed": seed,
        "reference": reference,
        "discount_per_period": world.economics.discount_per_period,
        "world_hash": world.hash(),
        "policies": {},
        "vs_reference": {},
    }
    for n in names:
        out["policies"][n] = {m: mean_ci(np.array(per_seed[n][m])).to_dict() for m in METRICS}
        out["policies"][n]["per_seed"] = per_seed[n]
    out["seconds_per_run"] = {n: float(np.median(timing[n])) for n in names}
    ref = per_seed[reference]
    for n in names:
        if n == reference:
            continue
        d = {}
        for m in METRICS:
            a, b = np.array(per_seed[n][m]), np.array(ref[m])
            iv = mean_ci(a - b)
            base = float(np.nanmean(b)) if np.isfinite(b).any() else float("nan")
            rel = iv.mean / abs(base) if base and np.isfinite(base) else float("nan")
            d[m] = {
                **iv.to_dict(),
                "relative": rel,
                "ci_excludes_zero": bool(np.isfinite(iv.ci_low) and (iv.ci_low > 0 or iv.ci_high < 0)),
            }
        out["vs_reference"][n] = d
    if stage_contacts:
        out["contacts_by_stage"] = {
            n: dict(zip([c.removeprefix("contacts_stage_") for c in cols], (v / (seeds * customers)).tolist()))
            for n, v in stage_contacts.items()
        }
    notes = {n: p.note for n, p in policies.items() if getattr(p, "note", "")}
    if notes:  # e.g. the observation layout assumed for a model without a card
        out["notes"] = notes
    if keep_customers:
        out["_customers"] = kept
    return out


def paired_difference(result: dict[str, Any], a: str, b: str, metric: str = "clv") -> dict[str, Any]:
    """Policy a minus policy b on one metric, paired by seed (common random numbers), with its 95%
    interval and the difference relative to b."""
    x = np.array(result["policies"][a]["per_seed"][metric], float)
    y = np.array(result["policies"][b]["per_seed"][metric], float)
    iv = mean_ci(x - y)
    base = float(np.nanmean(y))
    return {
        **iv.to_dict(),
        "relative": iv.mean / abs(base) if base else float("nan"),
        "ci_excludes_zero": bool(iv.ci_low > 0 or iv.ci_high < 0),
    }


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Bar charts with 95% intervals: CLV, retention and marketing ROI per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.atomic import atomic_path

    names = list(result["policies"])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (m, label) in zip(
        axes,
        (
            ("clv", "CLV per customer (discounted)"),
            ("retention", "retention at horizon"),
            ("marketing_roi", "marketing ROI"),
            ("contacts", "contacts per customer"),
        ),
    ):
        mean = np.array([result["policies"][n][m]["mean"] for n in names])
        lo = np.array([result["policies"][n][m]["ci_low"] for n in names])
        hi = np.array([result["policies"][n][m]["ci_high"] for n in names])
        ok = np.isfinite(mean)
        x = np.arange(len(names))
        ax.bar(
            x[ok],
            mean[ok],
            yerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]],
            capsize=4,
            color=["#4c72b0" if n != result["reference"] else "#dd8452" for n in np.array(names)[ok]],
        )
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(label, fontsize=10)
        if m == "retention":
            ax.set_ylim(max(0.0, float(np.nanmin(lo)) - 0.05), min(1.0, float(np.nanmax(hi)) + 0.02))
    fig.suptitle(
        f"{result['customers']:,} customers x {result['periods']} periods, {result['seeds']} seeds "
        f"(95% CI over seeds; reference {result['reference']})",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---- timing: when in the lifecycle each policy makes contact ------------------------------------
RECENCY_BUCKETS = (0, 1, 2, 4, 8, 16, 10**9)  # periods since the last transaction: [0], [1], [2,3], ...


class PlaybookTiming:
    """Counterfactual for the worth of timing: contact exactly when `timing` (e.g. the playbook)
    would, but with the contact `offers` (e.g. the learned policy) likes best among the allowed
    ones. The learned policy minus this one is what its own timing adds."""

    def __init__(self, offers, timing, name: str = "offers_at_playbook_timing"):
        self.offers, self.timing, self.name = offers, timing, name

    def action_probs(self, obs, masks: np.ndarray) -> np.ndarray:
        from policies.base import one_hot

        when = self.timing.act(obs, masks, None) > 0
        contact_masks = masks.copy()
        contact_masks[:, 0] = False
        scores = self.offers.scores(obs) if hasattr(self.offers, "scores") else self.offers.action_probs(obs, masks)
        best = np.argmax(np.where(contact_masks, scores, -np.inf), axis=1)
        return one_hot(np.where(when & contact_masks.any(axis=1), best, 0), masks.shape[1])

    def act(self, obs, masks: np.ndarray, rng=None) -> np.ndarray:
        return np.argmax(self.action_probs(obs, masks), axis=1).astype(np.int16)


def contact_profile(world, policy, periods: int, seed: int, customers: int, book=None) -> dict[str, Any]:
    """Where a policy's contacts fall: share by lifecycle stage, by periods since the customer's
    last transaction, and by action, over one CRN simulation."""
    from policies.base import as_simulator_policy
    from sim.catalogue import STAGES
    from sim.population import PopulationSimulator, WorldTables, sample_book
    from sim.posterior import ObservablePosterior

    tables = WorldTables.from_world(world)
    if book is not None:
        sim = PopulationSimulator.from_book(world, sample_book(book, customers, seed), seed, tables=tables)
    else:
        sim = PopulationSimulator.new_customers(world, customers, seed, tables=tables)
    sim.crn = True
    fn = as_simulator_policy(policy)
    post = ObservablePosterior(world)
    by_stage = np.zeros(len(STAGES))
    by_recency = np.zeros(len(RECENCY_BUCKETS) - 1)
    by_action = np.zeros(tables.n_actions)
    p_alive_sum = 0.0
    for _ in range(periods):
        obs = sim.observe()
        stage, recency = obs["stage"].copy(), obs["recency"].copy()
        out = sim.step(fn(sim))
        c = out.contacted
        if c.any():
            by_stage += np.bincount(stage[c], minlength=len(STAGES))
            by_recency += np.histogram(recency[c], bins=RECENCY_BUCKETS)[0]
            by_action += np.bincount(out.actions[c], minlength=tables.n_actions)
            p_alive_sum += float(post.p_alive({k: np.asarray(v)[c] for k, v in obs.items()}).sum())
    total = max(by_stage.sum(), 1.0)
    labels = [
        f"{a}" if b - a == 1 else (f"{a}-{b - 1}" if b < 10**9 else f"{a}+")
        for a, b in zip(RECENCY_BUCKETS[:-1], RECENCY_BUCKETS[1:])
    ]
    return {
        "contacts_per_customer": float(by_stage.sum() / customers),
        "by_stage": dict(zip(STAGES, (by_stage / total).tolist())),
        "by_recency": dict(zip(labels, (by_recency / total).tolist())),
        "by_action": dict(zip(world.catalogue.names, (by_action / total).tolist())),
        "mean_p_alive_at_contact": p_alive_sum / total,
    }


def plot_timing(profiles: dict[str, dict[str, Any]], path: str | Path) -> None:
    """Side-by-side shares of contacts by lifecycle stage and by periods since last transaction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.atomic import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    names = list(profiles)
    for ax, key, title in zip(
        axes,
        ("by_stage", "by_recency", "by_action"),
        ("stage at contact", "periods since last transaction at contact", "action"),
    ):
        cats = list(next(iter(profiles.values()))[key])
        x = np.arange(len(cats))
        width = 0.8 / max(len(names), 1)
        for i, n in enumerate(names):
            ax.bar(
                x + i * width,
                [profiles[n][key][c] for c in cats],
                width,
                label=f"{n} ({profiles[n]['contacts_per_customer']:.2f}/customer)",
            )
        ax.set_xticks(
            x + 0.4 - width / 2,
            cats,
            rotation=30 if key == "by_action" else 0,
            ha="right" if key == "by_action" else "center",
            fontsize=8,
        )
        ax.set_title(f"share of contacts by {title}", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
