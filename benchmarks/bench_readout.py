"""The read-out of a deployed plan checked against the truth (issue 17): does the 95 % interval of
`clv readout` cover the true lift in >= 90 % of seeds, and is the CUPED interval narrower?

The bundled bank's generating world (sim.synthetic, the config of `clv make-data`; with --history,
the one recorded in that folder's README.json) is run with the bank's logging policy to the
deployment week. The plan is a simple deterministic one: greedy_uplift (built on the generating
world) chooses a first-period contact for every customer; the customers it contacts are the
scope. Per seed, 20 % of the scope is drawn as control, and the scope continues 13 weeks from the
deployment on common random numbers (PopulationSimulator.crn: each customer's uniforms do not
depend on the others' actions) in three arms: everyone treated, nobody treated, and what happened
(treatment customers get their action, control customers nothing; nobody is contacted after the
deployment week). The true lift of the seed is the mean over the scope of reward(treated) -
reward(untreated), the contract reward summed over the 13 weeks; the population lift is its mean
over the seeds (the expectation over the continuation's randomness for these customers).

What happened is written as history rows: the bank's history before the deployment date (the
pre-period) and, from it, one transaction row per customer-week with the simulator's amount on the
week's first day and each product event on the week's first day. The read-out (experiments.readout,
what `clv readout` runs) reads those rows; its per-customer outcome equals the simulator's summed
reward of the customer to 1e-6 (checked on every seed): the week grid of the history is the
simulator's, transactions of week k fall in [D + 7k, D + 7k + 7) and a product changed in week k is
held at that week's end.

    python benchmarks/bench_readout.py --seeds 50 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd

ASSIGN_KEY = 0x5EAD  # seed-sequence word of the control draw
TRUTH_KEY = 0x7A0E  # of the continuation streams (experiments.budget_truth's)
_SETUP: dict = {}


def setup(history: str | None, deploy_week: int, periods: int) -> dict:
    from experiments.budget_truth import bank_config
    from policies.baselines import make_baseline
    from sim.synthetic import BankConfig, generate_bank_history, logging_chooser, run_bank_weeks, start_bank_run

    cfg = bank_config(history) if history else BankConfig()
    if not 1 <= deploy_week < cfg.weeks:
        raise SystemExit(f"--deploy-week must be in [1, {cfg.weeks})")
    hist, _ = generate_bank_history(cfg)
    run = start_bank_run(cfg)
    run_bank_weeks(run, logging_chooser(run), weeks=deploy_week)
    sim = run.sim
    d = pd.Timestamp(cfg.start) + pd.Timedelta(days=7 * deploy_week)
    greedy = make_baseline("greedy_uplift", run.world)
    act = greedy.action_probs(sim.observe(), sim.action_masks()).argmax(axis=1)
    scope = np.flatnonzero((act > 0) & run.born)
    pre_tx = hist.transactions[hist.transactions["date"] < d][["customer_id", "date", "amount"]]
    pre_pr = hist.products[hist.products["date"] < d]
    base = replace(hist, transactions=pre_tx, products=pre_pr, decisions=None)
    return {
        "cfg": cfg,
        "sim": sim,
        "cid": run.cid,
        "products": list(run.world.products),
        "names": np.array(run.world.catalogue.names, dtype=object),
        "scope": scope,
        "action": act[scope].astype(np.int16),
        "date": d,
        "periods": periods,
        "base": base,
    }


def _arm(S: dict, seed: int, first: np.ndarray, record: bool):
    sim = S["sim"].subset(S["scope"], np.random.default_rng(np.random.SeedSequence([int(seed), TRUTH_KEY])))
    sim.crn = True
    n = S["scope"].size
    reward = np.zeros(n)
    tx, pe = [], []
    for k in range(S["periods"]):
        before = sim.state.products.copy()
        out = sim.step(first if k == 0 else np.zeros(n, np.int16))
        if out.n_ineligible:
            raise RuntimeError("an ineligible action in the deployment")
        reward += out.reward
        if record:
            day = S["date"] + pd.Timedelta(days=7 * k)
            i = np.flatnonzero(out.amount > 0)
            tx.append(pd.DataFrame({"customer_id": S["cid"][S["scope"][i]], "date": day, "amount": out.amount[i]}))
            for ev, m in (("open", sim.state.products & ~before), ("close", before & ~sim.state.products)):
                ii, pp = np.nonzero(m)
                pe.append(
                    pd.DataFrame(
                        {
                            "customer_id": S["cid"][S["scope"][ii]],
                            "date": day,
                            "product": np.array(S["products"], dtype=object)[pp],
                            "event": ev,
                        }
                    )
                )
    return reward, tx, pe


def one_seed(seed: int, example: str | None = None) -> dict:
    from experiments.readout import read_out

    S = _SETUP
    n = S["scope"].size
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), ASSIGN_KEY]))
    control = np.zeros(n, bool)
    control[rng.choice(n, int(round(0.2 * n)), replace=False)] = True
    a = S["action"]
    r1, _, _ = _arm(S, seed, a, False)
    r0, _, _ = _arm(S, seed, np.zeros(n, np.int16), False)
    ra, tx, pe = _arm(S, seed, np.where(control, 0, a).astype(np.int16), True)
    if not np.allclose(ra, np.where(control, r0, r1), atol=1e-9):
        raise RuntimeError("common random numbers broken: what happened is not the arms' mix")
    base = S["base"]
    hist = replace(
        base,
        transactions=pd.concat([base.transactions, *tx], ignore_index=True),
        products=pd.concat([base.products, *pe], ignore_index=True),
    )
    ids = S["cid"][S["scope"]]
    dep = pd.DataFrame(
        {
            "customer_id": ids,
            "date": str(S["date"].date()),
            "action": np.where(control, "none", S["names"][a]),
            "propensity": np.where(control, 0.2, 0.8),
            "group": np.where(control, "control", "treatment"),
        }
    )
    end = S["date"] + pd.Timedelta(days=7 * S["periods"])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "deployment.csv")
        dep.to_csv(path, index=False)
        t0 = time.perf_counter()
        doc, table = read_out(hist, path, str(S["date"].date()), str(end.date()))
        secs = time.perf_counter() - t0
    got = table.set_index("customer_id")["outcome"].reindex(ids).to_numpy()
    err = float(np.abs(got - ra).max())
    if err > 1e-6:
        raise RuntimeError(f"the read-out's outcomes differ from the simulator's rewards by {err}")
    if example:
        write_example(example, hist, dep, str(S["date"].date()), str(end.date()))
    t = ~control
    return {
        "seed": int(seed),
        "true_lift": float((r1 - r0).mean()),
        "true_att": float((r1 - r0)[t].mean()),
        "plain": doc["lift"]["difference_in_means"],
        "cuped": doc["lift"]["cuped"],
        "max_outcome_error": err,
        "readout_seconds": secs,
    }


def write_example(folder: str, hist, dep: pd.DataFrame, start: str, end: str) -> None:
    """The seed's history as a folder and its deployment file, for `clv readout`."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    for name, df in (("transactions", hist.transactions), ("customers", hist.customers), ("products", hist.products)):
        df = df.copy()
        for col in ("date", "signup_date"):
            if col in df:
                df[col] = pd.to_datetime(df[col]).dt.strftime("%Y-%m-%d")
        df.to_csv(os.path.join(folder, f"{name}.csv"), index=False)
    with open(os.path.join(folder, "actions.yaml"), "w") as f:
        yaml.safe_dump({"actions": hist.actions.to_list()}, f, sort_keys=False)
    with open(os.path.join(folder, "economics.yaml"), "w") as f:
        yaml.safe_dump(hist.economics.to_dict(), f, sort_keys=False)
    dep.to_csv(os.path.join(folder, "deployment.csv"), index=False)
    with open(os.path.join(folder, "window.json"), "w") as f:
        json.dump({"start": start, "end": end}, f)


def _init(history, deploy_week, periods):
    _SETUP.update(setup(history, deploy_week, periods))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", default=None, help="a `clv make-data` folder (default: the bundled bank's config)")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--deploy-week", type=int, default=130, help="week of the bank's window the plan is deployed")
    ap.add_argument("--periods", type=int, default=13, help="weeks read out after the deployment")
    ap.add_argument("--workers", type=int, default=2, help="processes over seeds (each seed independent)")
    ap.add_argument("--example", default=None, help="write seed 0's history and deployment here for `clv readout`")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    _init(args.history, args.deploy_week, args.periods)
    t_setup = time.perf_counter() - t0
    seeds = list(range(args.seeds))
    if args.example:
        one_seed(0, args.example)
    if args.workers > 1:  # forked workers share the set-up; results do not depend on the worker count
        import multiprocessing as mp

        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as ex:
            rows = list(ex.map(one_seed, seeds))
    else:
        rows = [one_seed(s) for s in seeds]
    pop = float(np.mean([r["true_lift"] for r in rows]))
    from experiments.readout import VERDICTS, verdict

    def cover(kind: str, truth: str) -> float:
        hits = []
        for r in rows:
            v = pop if truth == "population" else r[truth]
            hits.append(r[kind]["ci_low"] <= v <= r[kind]["ci_high"])
        return float(np.mean(hits))

    width = {k: np.array([r[k]["ci_high"] - r[k]["ci_low"] for r in rows]) for k in ("plain", "cuped")}
    ratio = width["cuped"] / width["plain"]
    doc = {
        "config": {
            "customers": _SETUP["cfg"].customers,
            "deploy_week": args.deploy_week,
            "deployment_date": str(_SETUP["date"].date()),
            "periods": args.periods,
            "scope": int(_SETUP["scope"].size),
            "control_share": 0.2,
            "seeds": args.seeds,
            "workers": args.workers,
            "plan": "greedy_uplift's first-period contact on the generating world, every customer it contacts",
        },
        "population_true_lift": pop,
        "true_lift_per_seed": {"mean": pop, "sd": float(np.std([r["true_lift"] for r in rows], ddof=1))},
        "coverage": {
            kind: {t: cover(kind, t) for t in ("true_lift", "true_att", "population")} for kind in ("plain", "cuped")
        },
        "mean_estimate": {k: float(np.mean([r[k]["mean"] for r in rows])) for k in ("plain", "cuped")},
        "mean_width": {k: float(width[k].mean()) for k in width},
        "cuped_over_plain_width": {
            "median": float(np.median(ratio)),
            "max": float(ratio.max()),
            "narrower_in_share_of_seeds": float((ratio < 1).mean()),
        },
        "verdicts_cuped_against_population_lift": {
            v: sum(verdict(r["cuped"]["ci_low"], r["cuped"]["ci_high"], pop)["verdict"] == v for r in rows)
            for v in VERDICTS
        },
        "cuped_theta_mean": float(np.mean([r["cuped"]["theta"] for r in rows])),
        "cuped_correlation_mean": float(np.mean([r["cuped"]["correlation"] for r in rows])),
        "max_outcome_error": float(max(r["max_outcome_error"] for r in rows)),
        "targets": {
            "coverage_ge_0.90": bool(min(cover(k, "true_lift") for k in ("plain", "cuped")) >= 0.90),
            "cuped_narrower": bool((ratio < 1).all()),
        },
        "seconds": {
            "setup": t_setup,
            "total": time.perf_counter() - t0,
            "readout_median": float(np.median([r["readout_seconds"] for r in rows])),
        },
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    c = doc["coverage"]
    print(
        f"scope {doc['config']['scope']:,} customers, {args.seeds} seeds: true lift {pop:+.3f} per customer; "
        f"coverage plain {c['plain']['true_lift']:.0%}, CUPED {c['cuped']['true_lift']:.0%}; "
        f"CUPED/plain width median {doc['cuped_over_plain_width']['median']:.3f}"
    )


if __name__ == "__main__":
    main()
