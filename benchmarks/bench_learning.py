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

The deployment is appended as its file is (all nine columns: `group` and `planned_action` make
sim.response use its randomised contrast, combined with the other decisions' estimate), and for
comparison with its first five columns only ("pooled": its rows are then ordinary logged
decisions, its controls and uncontacted customers one "none" arm). The errors are reported over all
the plan's cells and separately over the cells whose effect the deployment's contrast informed
(world.fit.response.deployment.cells) and the others. `--seeds K` repeats the deployment draw and
the continuation for seeds seed .. seed + K - 1 on the one history (the history before D, the
"before" world and the plan are the same in every seed) and summarises them: the mean errors, in
how many seeds the deployment's recalibration beats each other variant, and the deployment's own
contrast against the truth (z = (estimate - truth) / se over its informed cells).

    python benchmarks/bench_learning.py --json                  # one seed (--seed 1, --seed 2, ...)
    python benchmarks/bench_learning.py --json --seeds 10       # seeds 0-9 and their summary
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


VARIANTS = ("before", "after_with_deployment", "after_with_deployment_pooled", "after_without_deployment")


def summary(docs: list[dict]) -> dict:
    """Per effect table and cell set (all, deployment-informed, not informed): the mean over seeds
    of each variant's mean absolute error, and in how many seeds the recalibration with the
    deployment has a smaller error than before, than the pooled reading and than the logging weeks."""
    out: dict = {}
    for k in EFFECTS:
        out[k] = {}
        for part in ("all", "deployment_informed", "not_informed"):
            runs = [x["mae"][k] if part == "all" else x["mae"][k][part] for x in docs]
            runs = [r for r in runs if r.get("cells")]
            if not runs:
                out[k][part] = {"seeds": 0}
                continue
            out[k][part] = {
                "seeds": len(runs),
                "cells": [r["cells"] for r in runs],
                **{v: float(np.mean([r[v] for r in runs])) for v in VARIANTS},
                "with_below_before": sum(r["after_with_deployment"] < r["before"] for r in runs),
                "with_below_pooled": sum(r["after_with_deployment"] < r["after_with_deployment_pooled"] for r in runs),
                "with_below_without": sum(r["after_with_deployment"] < r["after_without_deployment"] for r in runs),
            }
        # the deployment's own contrast against the truth, over its informed cells and the seeds:
        # an unbiased estimate with a calibrated standard error has z of mean 0 and sd 1
        xs = [r[k] for x in docs for r in x["cells"] if r[k]["deployment_informed"]]
        if xs:
            z = np.array([(c["experiment"] - c["truth"]) / c["experiment_se"] for c in xs])
            out[k]["experiment"] = {
                "cell_seeds": len(xs),
                "z_mean": float(z.mean()),
                "z_sd": float(z.std(ddof=1)) if z.size > 1 else None,
                "abs_error": float(np.mean([abs(c["experiment"] - c["truth"]) for c in xs])),
                "se": float(np.mean([c["experiment_se"] for c in xs])),
                "weight": float(np.mean([c["experiment_weight"] for c in xs])),
                "before_abs_error": float(np.mean([abs(c["before"] - c["truth"]) for c in xs])),
            }
    return out


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
    ap.add_argument(
        "--seeds", type=int, default=1, help="continuation seeds seed, seed+1, ... on the one history (default 1)"
    )
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
    stage = run.sim.state.stage[idx].astype(int)

    def extend(tx, pe, decs):
        return replace(
            before,
            transactions=pd.concat([before.transactions, tx], ignore_index=True),
            products=pd.concat([before.products, pe], ignore_index=True),
            decisions=pd.concat([before.decisions, *decs], ignore_index=True),
        )

    def one(seed: int) -> dict:
        """One continuation seed (and deployment draw): the three recalibrations and their errors."""
        t1 = time.perf_counter()
        settings = DeploymentSettings(control_share=args.control_share, seed=seed, horizon_periods=args.periods)
        dep = deploy(world0, book, contacts, settings, eligible=masks)
        txa, pea, _ = continue_bank(run, idx, d, args.periods, seed, first=dep.action)
        depdec = dep.frame.copy()  # the deployment file as clv plan writes it (its nine columns)
        depdec["date"] = pd.to_datetime(depdec["date"])
        pooled = depdec[["customer_id", "date", "action", "propensity", "cost"]]
        txb, peb, decb = continue_bank(run, idx, d, args.periods, seed, logging=True)
        ce = d + pd.Timedelta(days=7 * args.periods - 1)
        world_a, _, _ = calibrate(extend(txa, pea, [depdec]), ce)
        world_p, _, _ = calibrate(extend(txa, pea, [pooled]), ce)
        world_b, _, _ = calibrate(extend(txb, peb, decb), ce)
        truth = run.world.response
        dep_fit = world_a.fit["response"].get("deployment", {"cells": [], "moved_from_prior": []})
        informed = {(c["effect"], c["action"], c["stage"]): c for c in dep_fit["cells"]}
        variants = VARIANTS

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
                # the effect window (activity, adoption) and the post-window too (dropout) observed by D + periods
                "deployment_window_complete": bool(truth.duration[a] + 8 <= args.periods),
                "deployment_effect_window_complete": bool(truth.duration[a] <= args.periods),
            }
            for k in EFFECTS:
                cell = informed.get((k, names[a], STAGES[s]))
                row[k] = {
                    "truth": float(np.asarray(getattr(truth, k))[a, s]),
                    "before": float(np.asarray(getattr(world0.response, k))[a, s]),
                    "after_with_deployment": float(np.asarray(getattr(world_a.response, k))[a, s]),
                    "after_with_deployment_pooled": float(np.asarray(getattr(world_p.response, k))[a, s]),
                    "after_without_deployment": float(np.asarray(getattr(world_b.response, k))[a, s]),
                    "source_before": world0.response.source.get(k, [[None] * 5] * 9)[a][s],
                    "source_after_with": world_a.response.source.get(k, [[None] * 5] * 9)[a][s],
                    # the deployment's own contrast in the calibrated cell (its stage on the calibrated
                    # panel, which may differ from the true stage for some customers)
                    "deployment_informed": cell is not None,
                    "experiment": None if cell is None else cell["experiment"],
                    "experiment_se": None if cell is None else cell["experiment_se"],
                    "experiment_treated_control": None if cell is None else [cell["treated"], cell["control"]],
                    "experiment_weight": None if cell is None else cell["experiment_weight"],
                }
            table.append(row)

        def errors(rows: list[dict], k: str) -> dict:
            if not rows:
                return {"cells": 0}
            out: dict = {"cells": len(rows)}
            out.update({v: float(np.mean([abs(r[k][v] - r[k]["truth"]) for r in rows])) for v in variants})
            w = np.array([r["planned_customers"] for r in rows], float)
            out["weighted_by_customers"] = {
                v: float(np.average([abs(r[k][v] - r[k]["truth"]) for r in rows], weights=w)) for v in variants
            }
            return out

        mae = {}
        for k in EFFECTS:
            mae[k] = errors(table, k)
            mae[k]["deployment_informed"] = errors([r for r in table if r[k]["deployment_informed"]], k)
            mae[k]["not_informed"] = errors([r for r in table if not r[k]["deployment_informed"]], k)
        doc = {
            "config": {
                **vars(args),
                "seed": seed,
                "deployment_date": str(d.date()),
                "recalibration_end": str(ce.date()),
            },
            "book_customers": int(len(book)),
            "plan_contacts": int(contacted.sum()),
            "deployment_groups": {
                g: int((dep.group == i).sum()) for i, g in enumerate(("treatment", "control", "explore"))
            },
            "new_decisions": {
                "with_deployment": int(len(depdec)),
                "without_deployment": int(sum(len(x) for x in decb)),
            },
            "deployment_assumption": next((x for x in world_a.assumptions if "randomised deployment" in x), None),
            "cells_moved_from_prior": dep_fit["moved_from_prior"],
            "cells_informed_in_calibration": len(dep_fit["cells"]),
            "cells": table,
            "mae": mae,
            "seconds": time.perf_counter() - t1,
        }
        return doc

    docs = [one(s) for s in range(args.seed, args.seed + args.seeds)]
    if len(docs) == 1:
        doc = {**docs[0], "seconds": time.perf_counter() - t0}
        table, mae = doc["cells"], doc["mae"]
    else:
        doc = {
            "config": {**docs[0]["config"], "seed": None},
            "seeds": [x["config"]["seed"] for x in docs],
            "runs": [{k: v for k, v in x.items() if k != "config"} for x in docs],
            "summary": summary(docs),
            "seconds": time.perf_counter() - t0,
        }
        table, mae = docs[-1]["cells"], doc["summary"]
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    for r in table:
        x = r["activity_lift"]
        print(
            f"{r['action']:24s} {r['stage']:9s} n={r['planned_customers']:4d} truth {x['truth']:.3f} before "
            f"{x['before']:.3f} with {x['after_with_deployment']:.3f} pooled {x['after_with_deployment_pooled']:.3f} "
            f"without {x['after_without_deployment']:.3f}"
            + (" (deployment-informed)" if x["deployment_informed"] else "")
        )
    print(json.dumps(mae, indent=1))


if __name__ == "__main__":
    main()
