"""The power computed before launch against the detection rate in the generating world (issue 17):
does a deployment whose pre-launch MDE equals the predicted lift detect it on 80 % +- 7 % of seeds?

Before launch (what the bank can do): the bundled bank's history up to the deployment date D is
calibrated (sim.calibrate.calibrate); greedy_uplift, built on the calibrated world, chooses a
first-period action for every book customer from what the bank observes (the true state through
experiments.budget_truth.CalibratedView: calibrated segments, true contact rules). The deployment
is the plan's contacts of one action (--action, default sms_activation_bonus, the plan's largest
predicted lift per contact) with a randomised control group drawn by experiments.deployment.deploy
(the `clv plan --control-share` file: exact propensities, group, planned_action). The predicted lift
and the SDs come from the calibrated world's twins of those customers (PopulationSimulator.from_book,
common random numbers, --prelaunch-seeds seeds): Y = contract reward summed over --periods weeks
(what the read-out measures; undiscounted), the plan's action in week 0 and no contact after, or no
contact at all. The MDE is experiments.deployment.power_from_outcomes's (z_0.975 + z_0.80) se, and
the control share is control_share_needed's: the smallest share whose MDE equals the predicted lift.

In the generating world: per seed a fresh control draw, --periods weeks on common random numbers
in three arms (treated, untreated, what happened), written as history rows and read out by
experiments.readout.read_out (bench_readout's machinery); detection = the 95 % interval excludes 0.

    python benchmarks/bench_power.py --customers 200000 --seeds 50 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PRELAUNCH_KEY = 0xB0  # seed-sequence word of the pre-launch twins
_SETUP: dict = {}


def setup(customers: int, deploy_week: int, periods: int, action: str, share: float | None, k_pre: int) -> dict:
    from experiments.budget_truth import CalibratedView, _column_orders
    from experiments.deployment import DeploymentSettings, control_share_needed, power_from_outcomes
    from policies.baselines import make_baseline
    from sim.calibrate import calibrate
    from sim.population import PopulationSimulator, WorldTables
    from sim.synthetic import BankConfig, generate_bank_history, logging_chooser, run_bank_weeks, start_bank_run

    t0 = time.perf_counter()
    cfg = BankConfig(customers=customers)
    hist, _ = generate_bank_history(cfg)
    d = pd.Timestamp(cfg.start) + pd.Timedelta(days=7 * deploy_week)
    before = replace(
        hist,
        transactions=hist.transactions[hist.transactions["date"] < d],
        products=hist.products[hist.products["date"] < d],
        decisions=hist.decisions[pd.to_datetime(hist.decisions["date"]) < d],
    )
    del hist
    world, book, _ = calibrate(before, d - pd.Timedelta(days=1))
    t_cal = time.perf_counter() - t0
    run = start_bank_run(cfg)
    run_bank_weeks(run, logging_chooser(run), weeks=deploy_week)
    prod, chan = _column_orders(run.world, world)
    pos = {c: i for i, c in enumerate(run.cid)}
    idx_book = np.array([pos[c] for c in book["customer_id"].astype(str)], np.int64)
    view = CalibratedView(run.sim.subset(idx_book, np.random.default_rng(0)), book["segment"].to_numpy(), prod, chan)
    masks = view.action_masks()
    planned = make_baseline("greedy_uplift", world).action_probs(view.observe(), masks).argmax(axis=1)
    names = list(world.catalogue.names)
    a = names.index(action)
    in_scope = planned == a
    sbook = book[in_scope].reset_index(drop=True)
    idx = idx_book[in_scope]
    n = len(sbook)
    # pre-launch: the calibrated world's twins of the scope customers
    tables = WorldTables.from_world(world)
    first = np.full(n, a, np.int16)
    treated, none, inelig = [], [], 0
    for s in range(k_pre):
        ys = []
        for act in (first, np.zeros(n, np.int16)):
            tw = PopulationSimulator.from_book(world, sbook, np.random.SeedSequence([s, PRELAUNCH_KEY]), tables=tables)
            tw.crn = True
            y = np.zeros(n)
            for k in range(periods):
                out = tw.step(act if k == 0 else np.zeros(n, np.int16))
                inelig += out.n_ineligible if k == 0 else 0
                y += out.reward
            ys.append(y)
        treated.append(ys[0])
        none.append(ys[1])
    treated, none = np.stack(treated), np.stack(none)
    lift = float((treated - none).mean())
    sd_t = float(np.sqrt(np.mean(treated.var(axis=1, ddof=1))))
    sd_c = float(np.sqrt(np.mean(none.var(axis=1, ddof=1))))
    needed = control_share_needed(lift, sd_t, sd_c, n)
    c = share if share is not None else needed
    if c is None:
        raise SystemExit(
            f"no control share detects the predicted lift {lift:.3f} with {n:,} customers: use more --customers"
        )
    contacts = pd.DataFrame({"customer_id": sbook["customer_id"].to_numpy(), "action": action})
    settings = DeploymentSettings(control_share=float(c), seed=0, horizon_periods=periods)
    eligible = masks[in_scope]
    from experiments.deployment import deploy

    dep0 = deploy(world, sbook, contacts, settings, eligible=eligible)
    entry = power_from_outcomes(treated, none, dep0, settings, list(range(k_pre)))
    base = replace(
        before,
        transactions=before.transactions[before.transactions["customer_id"].isin(sbook["customer_id"])][
            ["customer_id", "date", "amount"]
        ],
        products=before.products[before.products["customer_id"].isin(sbook["customer_id"])],
        customers=before.customers[before.customers["customer_id"].isin(sbook["customer_id"])],
        decisions=None,
    )
    return {
        "cfg": cfg,
        "sim": run.sim,
        "cid": run.cid,
        "products": list(run.world.products),
        "scope": idx,
        "date": d,
        "periods": periods,
        "base": base,
        "world": world,
        "sbook": sbook,
        "contacts": contacts,
        "eligible": eligible,
        "settings": settings,
        "a": a,
        "pre": {
            "scope_customers": n,
            "plan_contacts_by_action": {names[i]: int((planned == i).sum()) for i in range(1, len(names))},
            "twin_ineligible_first_actions": int(inelig),
            "predicted_lift": lift,
            "predicted_lift_by_seed": [float(x) for x in (treated - none).mean(axis=1)],
            "sd_treatment": sd_t,
            "sd_control": sd_c,
            "control_share_needed": needed,
            "control_share_used": float(c),
            "mde_expected_arms": _mde(sd_t, sd_c, n, c),
            "mde_seed0_draw": entry["mde"],
            "power_entry_seed0": {k: entry[k] for k in ("control_customers", "treatment_arm_customers", "mde")},
            "seconds_generate_calibrate": t_cal,
        },
    }


def _mde(sd_t, sd_c, n, c):
    from experiments.deployment import minimal_detectable_effect

    return minimal_detectable_effect(sd_t, sd_c, (1 - c) * n, c * n)


def power_at(effect, sd_t, sd_c, n, c, alpha=0.05):
    """P(two-sided level-alpha z test rejects) at a true difference `effect` (normal approximation)."""
    nd = NormalDist()
    se = np.sqrt(sd_t**2 / ((1 - c) * n) + sd_c**2 / (c * n))
    z = nd.inv_cdf(1 - alpha / 2)
    return float(nd.cdf(effect / se - z) + nd.cdf(-effect / se - z))


def one_seed(seed: int) -> dict:
    from bench_readout import _arm

    from experiments.deployment import deploy
    from experiments.readout import read_out

    S = _SETUP
    n = S["scope"].size
    settings = replace(S["settings"], seed=int(seed) + 1)
    dep = deploy(S["world"], S["sbook"], S["contacts"], settings, eligible=S["eligible"])
    control = dep.group == 1
    first = np.full(n, S["a"], np.int16)
    r1, _, _ = _arm(S, seed, first, False)
    r0, _, _ = _arm(S, seed, np.zeros(n, np.int16), False)
    ra, tx, pe = _arm(S, seed, np.where(control, 0, first).astype(np.int16), True)
    base = S["base"]
    hist = replace(
        base,
        transactions=pd.concat([base.transactions, *tx], ignore_index=True),
        products=pd.concat([base.products, *pe], ignore_index=True),
    )
    end = S["date"] + pd.Timedelta(days=7 * S["periods"])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "deployment.csv")
        dep.frame.to_csv(path, index=False, float_format="%.17g")
        doc, table = read_out(hist, path, str(S["date"].date()), str(end.date()))
    got = table.set_index("customer_id")["outcome"].reindex(S["cid"][S["scope"]]).to_numpy()
    err = float(np.abs(got - ra).max())
    if err > 1e-6:
        raise RuntimeError(f"the read-out's outcomes differ from the simulator's rewards by {err}")
    return {
        "seed": int(seed),
        "true_lift": float((r1 - r0).mean()),
        "sd_t": float(r1.std(ddof=1)),
        "sd_c": float(r0.std(ddof=1)),
        "n_control": int(control.sum()),
        "plain": doc["lift"]["difference_in_means"],
        "cuped": doc["lift"]["cuped"],
        "max_outcome_error": err,
    }


def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [float(mid - half), float(mid + half)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000, help="customers of the generating bank")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--deploy-week", type=int, default=130)
    ap.add_argument("--periods", type=int, default=13)
    ap.add_argument("--action", default="sms_activation_bonus", help="the plan's contacts of this action are the scope")
    ap.add_argument("--control-share", type=float, default=None, help="default: control_share_needed (MDE = lift)")
    ap.add_argument("--prelaunch-seeds", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    _SETUP.update(
        setup(args.customers, args.deploy_week, args.periods, args.action, args.control_share, args.prelaunch_seeds)
    )
    t_setup = time.perf_counter() - t0
    seeds = list(range(args.seeds))
    if args.workers > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as ex:
            rows = list(ex.map(one_seed, seeds))
    else:
        rows = [one_seed(s) for s in seeds]
    pre = _SETUP["pre"]
    n, c = pre["scope_customers"], pre["control_share_used"]
    pop = float(np.mean([r["true_lift"] for r in rows]))
    sd_t_true = float(np.sqrt(np.mean([r["sd_t"] ** 2 for r in rows])))
    sd_c_true = float(np.sqrt(np.mean([r["sd_c"] ** 2 for r in rows])))
    det = {k: int(sum(r[k]["ci_low"] > 0 or r[k]["ci_high"] < 0 for r in rows)) for k in ("plain", "cuped")}
    pos = {k: int(sum(r[k]["ci_low"] > 0 for r in rows)) for k in ("plain", "cuped")}
    rate = det["plain"] / len(rows)
    doc = {
        "config": {
            **{k: v for k, v in vars(args).items() if k != "json"},
            "deployment_date": str(_SETUP["date"].date()),
        },
        "prelaunch": pre,
        "truth": {
            "population_lift": pop,
            "true_lift_per_seed_sd": float(np.std([r["true_lift"] for r in rows], ddof=1)),
            "sd_treatment": sd_t_true,
            "sd_control": sd_c_true,
            "mde_with_true_sds": _mde(sd_t_true, sd_c_true, n, c),
        },
        "predicted_power": {
            "at_predicted_lift_prelaunch_sds": power_at(
                pre["predicted_lift"], pre["sd_treatment"], pre["sd_control"], n, c
            ),
            "at_true_lift_prelaunch_sds": power_at(pop, pre["sd_treatment"], pre["sd_control"], n, c),
            "at_true_lift_true_sds": power_at(pop, sd_t_true, sd_c_true, n, c),
        },
        "detection": {
            k: {
                "detected": det[k],
                "detected_positive": pos[k],
                "rate": det[k] / len(rows),
                "wilson_95": wilson(det[k], len(rows)),
            }
            for k in det
        },
        "mean_estimate": {k: float(np.mean([r[k]["mean"] for r in rows])) for k in ("plain", "cuped")},
        "mean_se": {k: float(np.mean([r[k]["se"] for r in rows])) for k in ("plain", "cuped")},
        "max_outcome_error": float(max(r["max_outcome_error"] for r in rows)),
        "target_80_pm_7": bool(0.73 <= rate <= 0.87),
        "seconds": {"setup": t_setup, "total": time.perf_counter() - t0},
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(json.dumps(doc["detection"]), json.dumps(doc["predicted_power"]))


if __name__ == "__main__":
    main()
