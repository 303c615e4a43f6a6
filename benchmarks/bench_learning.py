"""Learning from a deployment (issue 17): does recalibrating on the history extended by a deployed
plan with a control group move the estimated effects of the planned actions toward the truth,
more than the same weeks of the bank's usual logging policy do?

The bundled bank (sim.synthetic, `clv make-data`'s config) up to the deployment date D (week
--deploy-week) is calibrated (sim.calibrate.calibrate): the "before" world. greedy_uplift built on
it chooses a first-period action for every book customer (what the bank observes: the true state
through experiments.budget_truth.CalibratedView); experiments.deployment.deploy draws a control
group (--control-share, exact propensities). The generating world then continues --periods weeks
from D on common random numbers in two scenarios:

- with the deployment: week 0 the deployment's actions, no other contact;
- without: the bank's logging policy (sim.synthetic.logging_probs) at the customers' usual
  decision points, drawn with its propensities.

Each scenario is written as history rows (per customer-week, min(count, 7) transaction rows on the
week's first days with the week's amount split equally; product events on the week's first day;
the decisions with their propensities: the deployment file's first five columns, or the logging
draws) after the bank's history before D, and recalibrated at D + --periods weeks. The estimated
effect tables (world.response: activity_lift, dropout_reduction, adoption_uplift, indexed
[action][stage]) are compared with the generating world's (TRUE_EFFECTS x TRUE_STAGE_MULT) on the
cells the plan used: (planned action, the customer's true stage at D) of contacted customers.

    python benchmarks/bench_learning.py --json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import pandas as pd

EFFECTS = ("activity_lift", "dropout_reduction", "adoption_uplift")
CONT_KEY = 0x1EA2  # seed-sequence word of the continuation (same in both scenarios)


def _rows(cid, idx, products, d, out, before_p, after_p, k):
    day = d + pd.Timedelta(days=7 * k)
    i = np.flatnonzero(out.transactions > 0)
    cnt = np.minimum(out.transactions[i], 7).astype(int)
    rep = np.repeat(i, cnt)
    off = np.concatenate([np.arange(c) for c in cnt]) if cnt.size else np.zeros(0, int)
    tx = pd.DataFrame(
        {
            "customer_id": cid[idx[rep]],
            "date": day + pd.to_timedelta(off, unit="D"),
            "amount": np.round(out.amount[rep] / np.repeat(cnt, cnt), 2),
        }
    )
    pe = []
    for ev, m in (("open", after_p & ~before_p), ("close", before_p & ~after_p)):
        ii, pp = np.nonzero(m)
        pe.append(
            pd.DataFrame(
                {"customer_id": cid[idx[ii]], "date": day, "product": np.array(products, dtype=object)[pp], "event": ev}
            )
        )
    return tx, pe


def continue_bank(run, idx, d, periods, seed, first=None, logging=False):
    """--periods weeks of the book's customers from D in the generating world: week 0 `first`
    (the deployment's actions) and nothing after, or the logging policy at the decision points.
    Returns (transactions, products, decisions) frames of what happened."""
    from sim.synthetic import logging_probs

    sim = run.sim.subset(idx, np.random.default_rng(np.random.SeedSequence([int(seed), CONT_KEY])))
    sim.crn = True
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), CONT_KEY, 1]))
    n = idx.size
    names = np.array(run.world.catalogue.names, dtype=object)
    costs = np.asarray(run.world.catalogue.costs, float)
    w0 = (d - pd.Timestamp(run.cfg.start)).days // 7
    txs, pes, decs = [], [], []
    for k in range(periods):
        act = np.zeros(n, np.int16)
        if first is not None and k == 0:
            act = first.astype(np.int16)
        if logging:
            dd = np.flatnonzero(((w0 + k) + run.offset[idx]) % run.cfg.decision_every == 0)
            if dd.size:
                probs = logging_probs(sim, run.seg_names, run.cfg)[dd]
                u = rng.random(dd.size)[:, None]
                a = np.minimum((u > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1).astype(np.int16)
                act[dd] = a
                decs.append(
                    pd.DataFrame(
                        {
                            "customer_id": run.cid[idx[dd]],
                            "date": d + pd.Timedelta(days=7 * k),
                            "action": names[a],
                            "propensity": np.clip(np.round(probs[np.arange(dd.size), a], 6), 1e-6, 1.0),
                            "cost": costs[a],
                        }
                    )
                )
        before = sim.state.products.copy()
        out = sim.step(act)
        if out.n_ineligible:
            raise RuntimeError("an ineligible action")
        tx, pe = _rows(run.cid, idx, run.world.products, d, out, before, sim.state.products, k)
        txs.append(tx)
        pes.extend(pe)
    return pd.concat(txs, ignore_index=True), pd.concat(pes, ignore_index=True), decs


def main() -> None:
    from experiments.budget_truth import CalibratedView, _column_orders
    from experiments.deployment import DeploymentSettings, deploy
    from policies.baselines import make_baseline
    from sim.calibrate import calibrate
    from sim.catalogue import STAGES
    from sim.synthetic import BankConfig, generate_bank_history, logging_chooser, run_bank_weeks, start_bank_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=6000)
    ap.add_argument("--deploy-week", type=int, default=130)
    ap.add_argument("--periods", type=int, default=13)
    ap.add_argument("--control-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cfg = BankConfig(customers=args.customers)
    hist, _ = generate_bank_history(cfg)
    d = pd.Timestamp(cfg.start) + pd.Timedelta(days=7 * args.deploy_week)
    dec_dates = pd.to_datetime(hist.decisions["date"])
    before = replace(
        hist,
        transactions=hist.transactions[hist.transactions["date"] < d][["customer_id", "date", "amount"]],
        products=hist.products[hist.products["date"] < d],
        decisions=hist.decisions[dec_dates < d],
    )
    world0, book, _ = calibrate(before, d - pd.Timedelta(days=1))
    run = start_bank_run(cfg)
    run_bank_weeks(run, logging_chooser(run), weeks=args.deploy_week)
    prod, chan = _column_orders(run.world, world0)
    pos = {c: i for i, c in enumerate(run.cid)}
    idx = np.array([pos[c] for c in book["customer_id"].astype(str)], np.int64)
    view = CalibratedView(run.sim.subset(idx, np.random.default_rng(0)), book["segment"].to_numpy(), prod, chan)
    masks = view.action_masks()
    planned = make_baseline("greedy_uplift", world0).action_probs(view.observe(), masks).argmax(axis=1)
    names = list(world0.catalogue.names)
    contacts = pd.DataFrame(
        {"customer_id": book["customer_id"].to_numpy()[planned > 0], "action": np.array(names)[planned[planned > 0]]}
    )
    settings = DeploymentSettings(control_share=args.control_share, seed=args.seed, horizon_periods=args.periods)
    dep = deploy(world0, book, contacts, settings, eligible=masks)
    stage = run.sim.state.stage[idx].astype(int)

    def extend(tx, pe, decs):
        return replace(
            before,
            transactions=pd.concat([before.transactions, tx], ignore_index=True),
            products=pd.concat([before.products, pe], ignore_index=True),
            decisions=pd.concat([before.decisions, *decs], ignore_index=True),
        )

    txa, pea, _ = continue_bank(run, idx, d, args.periods, args.seed, first=dep.action)
    depdec = dep.frame[["customer_id", "date", "action", "propensity", "cost"]].copy()
    depdec["date"] = pd.to_datetime(depdec["date"])
    txb, peb, decb = continue_bank(run, idx, d, args.periods, args.seed, logging=True)
    ce = d + pd.Timedelta(days=7 * args.periods - 1)
    world_a, _, _ = calibrate(extend(txa, pea, [depdec]), ce)
    world_b, _, _ = calibrate(extend(txb, peb, decb), ce)
    truth = run.world.response

    contacted = planned > 0
    cells = sorted({(int(a), int(s)) for a, s in zip(planned[contacted], stage[contacted])})
    table = []
    for a, s in cells:
        m = contacted & (planned == a) & (stage == s)
        row = {
            "action": names[a],
            "stage": STAGES[s],
            "planned_customers": int(m.sum()),
            "deployed_treatment": int((m & (dep.group == 0)).sum()),
            "deployed_control": int((m & (dep.group == 1)).sum()),
            "duration": int(truth.duration[a]),
            "deployment_window_complete": bool(truth.duration[a] + 8 <= args.periods),
        }
        for k in EFFECTS:
            row[k] = {
                "truth": float(np.asarray(getattr(truth, k))[a, s]),
                "before": float(np.asarray(getattr(world0.response, k))[a, s]),
                "after_with_deployment": float(np.asarray(getattr(world_a.response, k))[a, s]),
                "after_without_deployment": float(np.asarray(getattr(world_b.response, k))[a, s]),
                "source_after_with": world_a.response.source.get(k, [[None] * 5] * 9)[a][s],
            }
        table.append(row)
    mae = {}
    for k in EFFECTS:
        mae[k] = {
            v: float(np.mean([abs(r[k][v] - r[k]["truth"]) for r in table]))
            for v in ("before", "after_with_deployment", "after_without_deployment")
        }
        w = np.array([r["planned_customers"] for r in table], float)
        mae[k]["weighted_by_customers"] = {
            v: float(np.average([abs(r[k][v] - r[k]["truth"]) for r in table], weights=w))
            for v in ("before", "after_with_deployment", "after_without_deployment")
        }
    doc = {
        "config": {**vars(args), "deployment_date": str(d.date()), "recalibration_end": str(ce.date())},
        "book_customers": int(len(book)),
        "plan_contacts": int(contacted.sum()),
        "deployment_groups": {
            g: int((dep.group == i).sum()) for i, g in enumerate(("treatment", "control", "explore"))
        },
        "new_decisions": {"with_deployment": int(len(depdec)), "without_deployment": int(sum(len(x) for x in decb))},
        "cells": table,
        "mae": mae,
        "seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    for r in table:
        x = r["activity_lift"]
        print(
            f"{r['action']:24s} {r['stage']:9s} n={r['planned_customers']:4d} truth {x['truth']:.3f} before "
            f"{x['before']:.3f} with {x['after_with_deployment']:.3f} without {x['after_without_deployment']:.3f}"
        )
    print(json.dumps(mae, indent=1))


if __name__ == "__main__":
    main()
