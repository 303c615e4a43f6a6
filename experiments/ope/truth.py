"""True values of candidate policies in the synthetic bank's generating world: what off-policy
evaluation (experiments/ope/estimators.py on experiments/ope/data.py's rewards) is checked against.

The reward of a decision is experiments/ope/data.py's, the data contract's: margin_rate x the
amount of the customer's transactions from the decision's week (inclusive) to their next
decision's week (exclusive), or to the end of the window for their last decision, plus the
margins of the products held at each of those weeks' ends, minus the action's catalogue cost.
A week's amount is taken as its expected value given the simulated count,
min(count, 7) x spend_p[segment] / nu (the history writes min(count, 7) rows, each
~ Gamma(spend_p) / nu), so the truths are unbiased for what the history records and carry
none of the Gamma-amount noise.

Two truths per candidate policy pi (`true_values`):

- per_customer: the generating world run exactly as `sim.synthetic.generate_bank_history` runs
  it (same signups, latent customers, decision calendar, start date and seasonality; the
  world's random stream starts from the same seed) but with pi choosing the action at every
  decision point (drawn from pi.action_probs with a stream of its own). The decision rewards
  are summed along each customer's trajectory (times discount**step when a discount is given,
  step = 0, 1, .. the decision's position in the trajectory) and averaged over the customers
  with at least one decision.
- per_decision (one-step): the logged trajectories (the logging policy acts: with the same
  config they are exactly the history's), and at every logged decision point s the value of pi
  choosing this one decision, sum_a pi(a|s) E[reward | s, a]. E[reward | s, a] is one draw of a
  branch: the deciding customers' full simulator state (latent rate, alive flag, effect in
  force, ...) copied into a sub-simulator at the same clock and start date, a applied in the
  first week, no contact in the weeks after, up to the customer's next decision point
  (decision_every weeks later) or the end of the window. Averaged over all logged decisions.
  The same branches give the logging policy's own one-step value ("logging"), which agrees
  with the mean observed reward of the history up to Monte Carlo error.

Standard errors ("se"): customers are independent draws of the generating process, so the
per-customer SE is the sample SD over customers / sqrt(customers) and the per-decision SE is
clustered by customer (delta method for the ratio of sums). They measure how far a truth
computed on this many customers can be from the value in an infinite population. With
`replicates` >= 2 every branch is drawn that many times and "per_decision_branch" is the part
of the per-decision SE due to the branches alone: the error of the one-step truth as the value
*on these logged states*, which is what an estimator run on the history of the same config
estimates (up to its own error). "per_decision_minus_logging" is the SE of the candidate's
one-step value minus the logging policy's (paired on the same branches).

Control variate ("cv", "cv_se"): most of the spread between customers comes from their latent
draws. X = margin_rate x lam x spend_p / nu x expected weeks alive from the first decision to
the end (`control_variate`) has a closed-form mean under the generating process
(`control_mean`), so theta - b (mean X - E[X]) (b fitted by regression) estimates the same
population value with a 2.3-2.5x smaller SE (5-6x fewer customers for the same accuracy).
Use "cv" for population truths (per_customer, and per_decision when the history has another
seed or size), the plain sample means for the same-config paired comparison.

Measured (2 cores, BankConfig(customers=20000), 156 weeks, seed 7): one policy 12-22 s
(the logging run with its branches, then the policy's own run); four policies sharing the logging
run (`true_values_many`, replicates=2) 48 s. Population SEs at 20,000 customers: ~1.4 % of the
value plain, ~0.6 % with the control variate; about 120,000 customers bring the latter to 0.25 %.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Mapping

import numpy as np
import pandas as pd

from policies.base import sample_actions
from sim.population import PopulationSimulator
from sim.synthetic import BankConfig, BankRun, logging_chooser, run_bank_weeks, start_bank_run

BRANCH_KEY = 0x0B5E  # seed-sequence words of the branch stream and of the candidates' own streams:
CANDIDATE_KEY = 0xCA9D  # both independent of the generator's two streams (SeedSequence(seed).spawn(2))
TX_CAP = 7  # the history writes at most 7 transaction rows per customer-week


class _Ledger:
    """Decision rewards along the trajectories of one run: each decision opens a reward (-cost),
    every week adds margin_rate x expected amount of its capped count to the customer's open
    decision."""

    def __init__(self, run: BankRun):
        cfg, tb, st = run.cfg, run.tables, run.sim.state
        self.run = run
        n = cfg.customers
        cap = n * (-(-cfg.weeks // cfg.decision_every) + 1)
        self.cur = np.full(n, -1, np.int64)
        self.ndec = np.zeros(n, np.int64)
        self.count = 0
        self.cust = np.empty(cap, np.int64)
        self.week = np.empty(cap, np.int64)
        self.step = np.empty(cap, np.int64)
        self.action = np.empty(cap, np.int16)
        self.reward = np.zeros(cap)
        self.cost = tb.action_cost
        self.margin = tb.margin_rate
        self.unit = tb.spend_p[st.segment] / st.nu  # expected amount of one transaction (nu, segment fixed)

    def decide(self, w: int, d: np.ndarray, a: np.ndarray) -> np.ndarray:
        ids = self.count + np.arange(d.size)
        self.count += d.size
        self.cust[ids], self.week[ids], self.step[ids], self.action[ids] = d, w, self.ndec[d], a
        self.ndec[d] += 1
        self.reward[ids] = -self.cost[a]
        self.cur[d] = ids
        return ids

    def week_done(self, out) -> None:
        pos = np.flatnonzero(out.transactions)
        pos = pos[self.cur[pos] >= 0]
        self.reward[self.cur[pos]] += self.margin * np.minimum(out.transactions[pos], TX_CAP) * self.unit[pos]
        # the margins of the products held at the week's end
        held = self.run.sim.state.product_margin
        on = np.flatnonzero((self.cur >= 0) & (held != 0))
        self.reward[self.cur[on]] += held[on]

    def frame(self) -> dict[str, np.ndarray]:
        k = self.count
        return {
            "cust": self.cust[:k],
            "week": self.week[:k],
            "step": self.step[:k],
            "action": self.action[:k],
            "reward": self.reward[:k],
        }


def _per_customer(cust: np.ndarray, step: np.ndarray, reward: np.ndarray, n: int, discount: float | None) -> np.ndarray:
    """Per-customer (discounted) sums of the decision rewards, for the customers with a decision."""
    g = 1.0 if discount is None else float(discount)
    w = reward * (g ** step.astype(np.float64)) if discount is not None else reward
    tot = np.bincount(cust, weights=w, minlength=n)
    has = np.bincount(cust, minlength=n) > 0
    return tot[has]


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _cluster_mean_se(v: np.ndarray, cust: np.ndarray, n: int) -> tuple[float, float]:
    """Mean over decisions and its SE clustered by customer (ratio of sums, delta method)."""
    s = np.bincount(cust, weights=v, minlength=n)
    k = np.bincount(cust, minlength=n).astype(np.float64)
    keep = k > 0
    s, k = s[keep], k[keep]
    m = s.sum() / k.sum()
    c = s.size
    se = np.sqrt(((s - m * k) ** 2).sum() * c / max(c - 1, 1)) / k.sum()
    return float(m), float(se)


def _alive_weeks(mu: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Expected weeks alive in [0, T) at dropout hazard mu: (1 - exp(-mu T)) / mu."""
    T = np.asarray(T, dtype=np.float64)
    return np.where(mu * T < 1e-12, T, -np.expm1(-mu * T) / np.maximum(mu, 1e-300))


def _first_decision(run: BankRun) -> np.ndarray:
    """Each customer's first decision week (>= cfg.weeks when they have none)."""
    de = run.cfg.decision_every
    return run.birth + np.mod(-(run.birth + run.offset), de)


def control_variate(run: BankRun) -> np.ndarray:
    """Per customer X = margin_rate x lam x spend_p / nu x expected weeks alive from their first
    decision to the end of the window (given mu, as if they never stopped being able to buy): the
    no-contact margin their latent draws promise. It explains most of the spread of the decision
    rewards between customers, and its expectation is known in closed form (`control_mean`)."""
    cfg, st, tb = run.cfg, run.sim.state, run.tables
    Lb = cfg.weeks - run.birth
    gap = np.minimum(_first_decision(run), cfg.weeks) - run.birth
    return (
        tb.margin_rate * st.lam * tb.spend_p[st.segment] / st.nu * (_alive_weeks(st.mu, Lb) - _alive_weeks(st.mu, gap))
    )


def control_mean(cfg: BankConfig, world) -> float:
    """E[X] of `control_variate` under the generating process: segments by share, latents from
    the segment priors (lam ~ Gamma(r)/alpha, mu ~ Gamma(s)/beta, nu ~ Gamma(q)/gamma, independent),
    signup week uniform on [0, int(birth_share weeks)), calendar offset uniform on [0, decision_every).
    E over mu of the weeks alive in [0, T) is int_0^T (1 + t/beta)^-s dt."""
    if world.activity_model != "pareto_nbd":
        raise ValueError("control_mean: the synthetic bank's world is Pareto/NBD")
    B = max(1, int(cfg.birth_share * cfg.weeks))
    de = cfg.decision_every
    birth, off = np.meshgrid(np.arange(B), np.arange(de), indexing="ij")
    birth, off = birth.ravel().astype(np.float64), off.ravel()
    first = np.minimum(birth + np.mod(-(birth + off), de), cfg.weeks)
    Lb, gap = cfg.weeks - birth, first - birth
    shares = np.array([s.share for s in world.segments], float)
    shares = shares / shares.sum()
    tot = 0.0
    for g, seg in enumerate(world.segments):
        a, sp = seg.activity, seg.spend
        s, beta = float(a["s"]), float(a["beta"])

        def F(T):
            if abs(s - 1.0) < 1e-12:
                return beta * np.log1p(T / beta)
            return beta / (1.0 - s) * ((1.0 + T / beta) ** (1.0 - s) - 1.0)

        if float(sp["q"]) <= 1.0:
            raise ValueError("control_mean: E[1/nu] is infinite for q <= 1")
        tot += (
            shares[g]
            * float(sp["p"])
            * float(a["r"])
            / float(a["alpha"])
            * float(sp["gamma"])
            / (float(sp["q"]) - 1.0)
            * float(np.mean(F(Lb) - F(gap)))
        )
    return float(world.economics.margin_rate) * tot


def _ratio_cv(S: np.ndarray, k: np.ndarray, X: np.ndarray | None, EX: float | None) -> tuple[float, float]:
    """sum S / sum k over all customers (k = decisions or has-a-decision), with the control variate X
    of known mean EX when given: theta - b (mean X - EX) / mean k, b the regression slope of the
    linearised residual S - theta k on X. Returns (estimate, SE)."""
    n = S.size
    kbar = k.mean()
    theta = S.sum() / k.sum()
    Z = S - theta * k
    if X is None:
        return float(theta), float(Z.std(ddof=1) / np.sqrt(n) / kbar)
    Xc = X - X.mean()
    b = float((Z - Z.mean()) @ Xc / (Xc @ Xc)) if (Xc @ Xc) > 0 else 0.0
    est = theta - b * (X.mean() - EX) / kbar
    resid = Z - b * Xc
    return float(est), float(resid.std(ddof=2) / np.sqrt(n) / kbar)


def _check_probs(name: str, probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != masks.shape:
        raise ValueError(f"policy {name!r}: action_probs returned shape {p.shape}, expected {masks.shape}")
    if (p[~masks] > 0).any():
        raise ValueError(f"policy {name!r}: positive probability on a masked action")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-6) or (p < 0).any():
        raise ValueError(f"policy {name!r}: action probabilities must be >= 0 and sum to 1 per row")
    return p


def _one_step_run(cfg: BankConfig, policies: Mapping[str, Any], replicates: int) -> dict[str, Any]:
    """The logging run with its branches: per logged decision, the one-step value of every policy
    and of the logging policy (mean over `replicates` branch draws, and their spread)."""
    run = start_bank_run(cfg)
    sim, tb = run.sim, run.tables
    ledger = _Ledger(run)
    branch_rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), BRANCH_KEY]))
    names = list(policies)
    cap = ledger.cust.size
    vals = {k: np.zeros(cap) for k in ["logging", *names]}
    bvar = {k: np.zeros(cap) for k in ["logging", *names]}  # branch variance of each decision's value
    unit = ledger.unit
    R = int(replicates)

    def before(w: int, d: np.ndarray, a: np.ndarray, probs: np.ndarray) -> None:
        ids = ledger.decide(w, d, a)
        masks = sim.action_masks()[d]
        obs = {k: v[d] for k, v in sim.observe().items()}
        pis = {"logging": _check_probs("logging", probs, masks)}
        for k in names:
            pis[k] = _check_probs(k, policies[k].action_probs(obs, masks), masks)
        support = np.zeros_like(masks)
        for p in pis.values():
            support |= p > 0
        ii, aa = np.nonzero(support)
        rows = np.tile(d[ii], R)
        acts = np.tile(aa, R).astype(np.int16)
        twin = sim.subset(rows, branch_rng)
        amount = np.zeros(rows.size)
        held = np.zeros(rows.size)
        cost = None
        for h in range(min(cfg.decision_every, cfg.weeks - w)):
            out = twin.step(acts if h == 0 else None)
            if h == 0:
                if out.n_ineligible:
                    raise RuntimeError("ope_truth: a branch applied a masked action")
                cost = out.cost
            amount += np.minimum(out.transactions, TX_CAP) * unit[rows]
            held += twin.state.product_margin
        reward = (tb.margin_rate * amount + held - cost).reshape(R, ii.size)
        Q = np.zeros((R, d.size, masks.shape[1]))
        Q[:, ii, aa] = reward
        for k, p in pis.items():
            v = (Q * p[None]).sum(axis=2)  # (R, d)
            vals[k][ids] = v.mean(axis=0)
            if R > 1:
                bvar[k][ids] = v.var(axis=0, ddof=1) / R

    run_bank_weeks(run, logging_chooser(run), before_step=before, after_step=lambda w, out: ledger.week_done(out))
    k = ledger.count
    return {
        "run": run,
        "ledger": ledger.frame(),
        "values": {n: v[:k] for n, v in vals.items()},
        "branch_var": {n: v[:k] for n, v in bvar.items()},
    }


def _trajectory_run(cfg: BankConfig, policy: Any, name: str) -> dict[str, Any]:
    """The generating world with `policy` choosing at every decision point."""
    run = start_bank_run(cfg)
    ledger = _Ledger(run)
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), CANDIDATE_KEY]))

    def choose(sim: PopulationSimulator, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = sim.action_masks()[d]
        obs = {k: v[d] for k, v in sim.observe().items()}
        p = _check_probs(name, policy.action_probs(obs, masks), masks)
        return sample_actions(p, rng), p

    run_bank_weeks(
        run,
        choose,
        before_step=lambda w, d, a, p: ledger.decide(w, d, a),
        after_step=lambda w, out: ledger.week_done(out),
    )
    return {"run": run, "ledger": ledger.frame()}


def _dates(run: BankRun, week: np.ndarray) -> pd.DatetimeIndex:
    return pd.Timestamp(run.cfg.start) + pd.to_timedelta(week * 7, unit="D")


def true_values_many(
    cfg: BankConfig,
    policies: Mapping[str, Any],
    discount: float | None = None,
    customers: int | None = None,
    seed: int | None = None,
    replicates: int = 1,
    details: bool = False,
) -> dict[str, dict[str, Any]]:
    """`true_values` of several policies, sharing the logging run and its branches (the branches
    cover the union of the policies' supports). Returns {name: result}; each result's "seconds"
    is the shared logging run plus its own trajectory run."""
    if customers is not None:
        cfg = replace(cfg, customers=int(customers))
    if seed is not None:
        cfg = replace(cfg, seed=int(seed))
    if int(replicates) < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if discount is not None and not (0.0 <= float(discount) <= 1.0):
        raise ValueError(f"discount must be in [0, 1], got {discount}")
    names = list(policies)
    t0 = time.perf_counter()
    one = _one_step_run(cfg, policies, replicates)
    t_one = time.perf_counter() - t0
    run, led = one["run"], one["ledger"]
    n = cfg.customers
    cust, step = led["cust"], led["step"]

    def branch_se(k: str) -> float | None:
        return float(np.sqrt(one["branch_var"][k].sum()) / cust.size) if replicates > 1 else None

    X = control_variate(run)
    EX = control_mean(cfg, run.world)
    k_dec = np.bincount(cust, minlength=n).astype(np.float64)
    has = (k_dec > 0).astype(np.float64)

    def cv(
        values: np.ndarray, c: np.ndarray, st: np.ndarray, per_customer: bool, disc: float | None = None
    ) -> tuple[float, float]:
        """Control-variate estimate and SE of the population value (per decision or per customer)."""
        if per_customer:
            g = 1.0 if disc is None else float(disc)
            S = np.bincount(c, weights=values * g ** st.astype(np.float64), minlength=n)
            return _ratio_cv(S, has, X, EX)
        return _ratio_cv(np.bincount(c, weights=values, minlength=n), k_dec, X, EX)

    log_pd, log_pd_se = _cluster_mean_se(one["values"]["logging"], cust, n)
    realised, realised_se = _cluster_mean_se(led["reward"], cust, n)
    log_pc, log_pc_se = _mean_se(_per_customer(cust, step, led["reward"], n, None))
    log_cv = {
        "per_decision": cv(one["values"]["logging"], cust, step, False),
        "per_customer": cv(led["reward"], cust, step, True),
        "per_customer_discounted": cv(led["reward"], cust, step, True, discount)
        if discount is not None
        else (None, None),
    }
    logging = {
        "per_decision": log_pd,
        "per_customer": log_pc,
        "per_customer_discounted": (
            _mean_se(_per_customer(cust, step, led["reward"], n, discount))[0] if discount is not None else None
        ),
        "per_decision_realised": realised,
        "se": {
            "per_decision": log_pd_se,
            "per_decision_branch": branch_se("logging"),
            "per_customer": log_pc_se,
            "per_decision_realised": realised_se,
        },
        "cv": {k: v[0] for k, v in log_cv.items()},
        "cv_se": {k: v[1] for k, v in log_cv.items()},
    }
    out: dict[str, dict[str, Any]] = {}
    for k in names:
        t1 = time.perf_counter()
        traj = _trajectory_run(cfg, policies[k], k)
        tl = traj["ledger"]
        if not np.array_equal(control_variate(traj["run"]), X):
            raise RuntimeError("ope_truth: the candidate's run drew other customers than the logging run")
        pc = _per_customer(tl["cust"], tl["step"], tl["reward"], n, None)
        pc_mean, pc_se = _mean_se(pc)
        pcd_mean = pcd_se = None
        if discount is not None:
            pcd_mean, pcd_se = _mean_se(_per_customer(tl["cust"], tl["step"], tl["reward"], n, discount))
        pd_mean, pd_se = _cluster_mean_se(one["values"][k], cust, n)
        _, diff_se = _cluster_mean_se(one["values"][k] - one["values"]["logging"], cust, n)
        cv_pd = cv(one["values"][k], cust, step, False)
        cv_pc = cv(tl["reward"], tl["cust"], tl["step"], True)
        cv_pcd = cv(tl["reward"], tl["cust"], tl["step"], True, discount) if discount is not None else (None, None)
        res: dict[str, Any] = {
            "per_decision": pd_mean,
            "per_customer": pc_mean,
            "per_customer_discounted": pcd_mean,
            "decisions": int(cust.size),
            "customers": int(pc.size),
            "logging": dict(logging),
            "se": {
                "per_decision": pd_se,
                "per_decision_branch": branch_se(k),
                "per_customer": pc_se,
                "per_customer_discounted": pcd_se,
                "per_decision_minus_logging": diff_se,
            },
            "cv": {"per_decision": cv_pd[0], "per_customer": cv_pc[0], "per_customer_discounted": cv_pcd[0]},
            "cv_se": {"per_decision": cv_pd[1], "per_customer": cv_pc[1], "per_customer_discounted": cv_pcd[1]},
            "control_variate": {
                "mean": EX,
                "sample_mean": float(X.mean()),
                "sample_se": float(X.std(ddof=1) / np.sqrt(n)),
            },
            "seconds": t_one + time.perf_counter() - t1,
            "config": cfg,
            "discount": discount,
            "replicates": int(replicates),
        }
        if details:
            res["one_step"] = pd.DataFrame(
                {
                    "customer_id": run.cid[cust],
                    "date": _dates(run, led["week"]),
                    "step": step,
                    "action": np.array(run.world.catalogue.names)[led["action"]],
                    "reward_logged": led["reward"],
                    "value_logging": one["values"]["logging"],
                    "value": one["values"][k],
                }
            )
            res["trajectory"] = pd.DataFrame(
                {
                    "customer_id": run.cid[tl["cust"]],
                    "date": _dates(run, tl["week"]),
                    "step": tl["step"],
                    "action": np.array(run.world.catalogue.names)[tl["action"]],
                    "reward": tl["reward"],
                }
            )
        out[k] = res
    return out


def true_values(
    cfg: BankConfig,
    policy,
    discount: float | None = None,
    customers: int | None = None,
    seed: int | None = None,
    replicates: int = 1,
    details: bool = False,
) -> dict[str, Any]:
    """True per-decision (one-step) and per-customer values of `policy` (anything with
    `action_probs(obs, masks)`, e.g. `policies.baselines.make_baseline(name, truth_world(cfg))`)
    in the generating world of `cfg` (`customers` / `seed` override cfg's); see the module
    docstring for the definitions.

    Returns {"per_decision", "per_customer", "per_customer_discounted" (None without a discount),
    "decisions" (logged decisions), "customers" (customers with a decision), "logging":
    {"per_decision", "per_customer", "per_customer_discounted", "per_decision_realised" (mean of
    the logging run's own decision rewards: same estimand as its per_decision, other noise),
    "se": {...}}, "se": {"per_decision", "per_decision_branch" (replicates >= 2), "per_customer",
    "per_customer_discounted", "per_decision_minus_logging"}, "seconds", "config", "discount",
    "replicates"}; with `details`, also "one_step" (one row per logged decision: customer_id,
    date, step, action, reward_logged, value_logging, value) and "trajectory" (one row per
    decision of the policy's own run: customer_id, date, step, action, reward)."""
    name = str(getattr(policy, "name", type(policy).__name__))
    return true_values_many(
        cfg, {name: policy}, discount=discount, customers=customers, seed=seed, replicates=replicates, details=details
    )[name]
