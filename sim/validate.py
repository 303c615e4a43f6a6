"""Proof on held-out history: calibrate up to one date, simulate the book's digital twins to a
second date (replaying the logged decisions of that window), and compare with what happened.

The forecast is the population simulator's Monte Carlo over each customer's posterior latent
state (alive, rate, hazard, spend), `replications` draws per customer. Within a draw the
Poisson count noise is integrated out (Rao-Blackwellisation: the expected count given the
simulated latent path), which lowers the Monte Carlo variance without changing the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .atomic import atomic_path, atomic_write_json
from .calibrate import actual_by_period, calibrate, expected_by_period
from .errors import ConfigError
from .features import CustomerRows, lookup, period_index, summarise
from .history import History, merge_same_day
from .population import DEFAULT_CHUNK, PopulationSimulator, WorldTables, chunk_seeds
from .world import WorldModel

FREQ_BINS = 8  # conditional-expectation table: calibration frequency 0, 1, ..., 7+


def validate(
    history: History,
    calibration_end: str,
    holdout_end: str,
    *,
    replications: int = 32,
    seed: int = 0,
    segment_by: str | None = None,
    n_segments: int = 4,
    activity_model: str = "pareto_nbd",
    progress: Callable[[int, int], None] | None = None,
    early_warning: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (metrics, artefacts): metrics is the JSON document of `clv validate`; artefacts
    holds the world, book and tables for the files written beside it. With `early_warning`, the
    document's `early_warning` key measures the churn score among the customers active at the
    cut-off beside a recency rule and a boosted classifier (sim.early_warning). A holdout that ends
    after the history (with `calibration_end` on or after its last transaction) is a pure forecast:
    the same document and tables with the actuals missing and every metric null (`forecast_only`)."""
    ce, he = pd.Timestamp(calibration_end), pd.Timestamp(holdout_end)
    if he <= ce:
        raise ConfigError(
            "holdout_end", f"{{key:holdout_end}} {he.date()} must be after {{key:calibration_end}} {ce.date()}"
        )
    last = history.transactions["date"].max()
    forecast_only = bool(he > last)  # a holdout in the future: forecasts only, no actuals to compare
    if forecast_only and ce < last:
        raise ConfigError(
            "holdout_end",
            value=he.date(),
            message=f"is past the end of the history (last transaction {last.date()}): days after it would "
            "count as days without purchases; end the holdout by then, or forecast the future from "
            f"{{key:calibration_end}} {last.date()} (forecasts only)",
        )
    world, book, cal_report = calibrate(
        history, ce, segment_by=segment_by, n_segments=n_segments, activity_model=activity_model, seed=seed
    )
    pdays = world.economics.period_days
    horizon = (he - ce).days / pdays
    n_periods = int(np.ceil(horizon - 1e-9))
    exposures = np.minimum(1.0, horizon - np.arange(n_periods))

    tx, _ = merge_same_day(history.transactions)
    ids = book["customer_id"].to_numpy(dtype=object)  # not fixed-width (rows x the longest id x 4 bytes)
    actions, replay = replay_actions(history, world, ids, ce, n_periods, pdays)

    if actions is None and world.activity_model == "pareto_nbd":
        sim = forecast_without_decisions(world, book, exposures, replications, seed, ce)
    else:
        sim = simulate_holdout(world, book, actions, exposures, replications, seed, progress)

    # actual outcomes of the book's customers in (ce, he]
    hold = tx.loc[(tx["date"] > ce) & (tx["date"] <= he)]
    code, known = lookup(ids, hold["customer_id"])
    act_n = np.bincount(code[known], minlength=len(ids)).astype(float)
    act_v = np.bincount(code[known], weights=hold["amount"].to_numpy(float)[known], minlength=len(ids))
    w_hold = period_index(hold["date"].to_numpy("datetime64[ns]")[known], ce + pd.Timedelta(days=1), pdays)
    act_weekly = np.bincount(np.clip(w_hold, 0, n_periods - 1), minlength=n_periods).astype(float)

    rows = CustomerRows.from_frame(tx.loc[tx["date"] <= ce, ["customer_id", "date", "amount"]])
    summary = summarise(tx, ce, pdays, history.customers, rows=rows)
    if forecast_only:  # nothing happened yet: the same columns, actuals missing, no metric
        act_n = np.full(len(ids), np.nan)
        act_v = np.full(len(ids), np.nan)
        act_weekly = np.full(n_periods, np.nan)
        known = np.zeros(len(hold), bool)
        metrics = {k: None for k in holdout_metrics(*(np.arange(4.0),) * 4, np.full(4, 0.5))}
        metrics.update(
            customers=int(len(ids)),
            holdout_repeat_predicted=float(sim["pred_n"].sum()),
            holdout_value_predicted=float(sim["pred_v"].sum()),
            active_share_predicted=float(sim["p_active"].mean()),
        )
    else:
        metrics = holdout_metrics(act_n, act_v, sim["pred_n"], sim["pred_v"], sim["p_active"])
    # the same correlation against the number of calendar weeks with a transaction, the count
    # lifetimes' weekly summaries use (its anchor), for a like-for-like comparison
    wk = hold.loc[known, "date"].dt.to_period("W").to_numpy()
    pairs = pd.DataFrame({"c": code[known], "w": wk}).drop_duplicates()
    act_weeks = np.bincount(pairs["c"].to_numpy(), minlength=len(ids)).astype(float)
    metrics["per_customer_corr_active_weeks"] = (
        float(np.corrcoef(sim["pred_n"], act_weeks)[0, 1])
        if not forecast_only and act_weeks.std() > 0 and sim["pred_n"].std() > 0
        else None
    )
    metrics.update(
        {
            "dataset": history.folder,
            "calibration_end": str(ce.date()),
            "holdout_end": str(he.date()),
            "holdout_periods": round(float(horizon), 4),
            "forecast_only": forecast_only,
            "period": world.economics.period,
            "replications": replications,
            "seed": seed,
            "activity_model": world.activity_model,
            "holdout_policy": "logged decisions replayed" if replay["decisions"] else "none",
            "replayed_decisions": replay["decisions"],
            "replayed_contacts_applied": int(sim["contacts"]),
            "forecast_method": sim["method"],
            "calibration_seconds": cal_report["seconds"],
            "simulated_customer_steps": int(sim["customer_steps"]),
            "seasonality_modelled": world.seasonality is not None,
            "assumptions": world.assumptions,
        }
    )
    # weekly tracking: model expectation over calibration, simulation over the holdout
    start = pd.Timestamp(summary.birth.min()).normalize()
    W_cal = int(np.ceil(((ce - start).days + 1) / pdays))
    seg = book["segment"].to_numpy()
    # the calibration window as the model saw it: rates as fitted (with the logging campaigns'
    # average effect, which the world's rates exclude) and the seasonal factors of each period
    by_seg = _activity_by_segment(world, undo_campaigns=True)
    cal_expected = expected_by_period(summary, seg, by_seg, start, W_cal, pdays)
    if world.seasonality is not None:
        mids = start + pd.to_timedelta((np.arange(W_cal) + 0.5) * pdays, unit="D")
        cal_expected = cal_expected * np.asarray(world.seasonality)[np.asarray(mids.isocalendar().week, int) - 1]
    cal_actual = actual_by_period(rows, summary.birth_is_signup, start, W_cal, pdays)
    tracking = pd.DataFrame(
        {
            "period_start": np.concatenate(
                [
                    [str((start + pd.Timedelta(days=i * pdays)).date()) for i in range(W_cal)],
                    [str((ce + pd.Timedelta(days=1 + i * pdays)).date()) for i in range(n_periods)],
                ]
            ),
            "window": ["calibration"] * W_cal + ["holdout"] * n_periods,
            "actual": np.concatenate([cal_actual, act_weekly]),
            "model": np.concatenate([cal_expected, sim["weekly"]]),
        }
    )
    cond = conditional_table(summary.x, act_n, sim["pred_n"])
    if forecast_only:
        cond["actual_mean"] = pd.Series([None] * len(cond), dtype=object)
    metrics["conditional_expectation"] = cond.to_dict(orient="records")
    if early_warning and forecast_only:
        metrics["early_warning"] = {"skipped": "a pure forecast: no holdout outcomes to measure the churn score on"}
    elif early_warning:
        metrics["early_warning"] = _early_warning(history, ce, he, world, book, tx, seed, segment_by, n_segments)
    return metrics, {
        "world": world,
        "book": book,
        "tracking": tracking,
        "conditional": cond,
        "predictions": pd.DataFrame(
            {
                "customer_id": ids,
                "x_cal": summary.x,
                "actual": act_n,
                "predicted": sim["pred_n"],
                "p_active": sim["p_active"],
                "actual_value": act_v,
                "predicted_value": sim["pred_v"],
            }
        ),
    }


def _early_warning(history, ce, he, world, book, tx, seed, segment_by, n_segments) -> dict[str, Any]:
    """sim.early_warning on this split; a history too short for its earlier splits gets a
    `skipped` reason instead of failing the validation."""
    from .early_warning import early_warning

    kw = {"segment_by": segment_by, "n_segments": n_segments, "activity_model": world.activity_model, "seed": seed}
    try:
        return early_warning(history, ce, he, world, book, seed=seed, calibrate_kwargs=kw, tx=tx)
    except (ConfigError, ValueError, np.linalg.LinAlgError) as e:
        return {"skipped": f"{type(e).__name__}: {e}"}


def _activity_by_segment(world: WorldModel, undo_campaigns: bool = False) -> list:
    """The segments' activity models; with undo_campaigns, as fitted on the logged history
    (before the logging campaigns' mean lift was taken out of the rate)."""
    from .btyd import BGNBD, ParetoNBD

    cls = ParetoNBD if world.activity_model == "pareto_nbd" else BGNBD
    mult = world.fit.get("campaign_multiplier") or {}
    out = []
    for s in world.segments:
        params = {k: v for k, v in s.activity.items() if k in cls.__dataclass_fields__}
        if undo_campaigns and s.name in mult:
            params["alpha"] = params["alpha"] / mult[s.name]
        out.append(cls(**params))
    return out


def replay_actions(
    history: History, world: WorldModel, ids: np.ndarray, ce: pd.Timestamp, n_periods: int, pdays: float
) -> tuple[np.ndarray | None, dict[str, int]]:
    """(N, periods) catalogue indices of the decisions logged in the holdout window, or None."""
    dec = history.decisions
    if dec is None:
        return None, {"decisions": 0}
    d = dec.loc[(dec["date"] > ce)]
    w = period_index(d["date"].to_numpy("datetime64[ns]"), ce + pd.Timedelta(days=1), pdays)
    code, ok = lookup(ids, d["customer_id"])
    ok &= (w >= 0) & (w < n_periods)
    if not ok.any():
        return None, {"decisions": 0}
    names = {n: i for i, n in enumerate(world.catalogue.names)}
    a = d["action"].astype(str).map(names).to_numpy()
    unknown = ok & pd.isna(a)
    if unknown.any():
        raise ConfigError(
            f"decisions name actions the world's catalogue lacks: {sorted(set(d['action'].astype(str)[unknown]))[:3]}"
        )
    acts = np.zeros((len(ids), n_periods), np.int16)
    # the simulator takes one action per customer and period: the last logged one in a period wins
    acts[code[ok], w[ok]] = a[ok].astype(np.int16)
    cells = np.unique(code[ok].astype(np.int64) * n_periods + w[ok])
    return acts, {"decisions": int(cells.size)}


def latin_hypercube(n: int, replications: int, dims: int, seed: int) -> np.ndarray:
    """(replications * n, dims) uniforms: for each customer and dimension, one draw in each of the
    `replications` strata of [0, 1), strata shuffled independently per dimension."""
    R = replications
    rng_u = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    strata = np.empty((R, n, dims))
    for d in range(dims):
        perm = np.argsort(rng_u.random((n, R)), axis=1).T if d else np.tile(np.arange(R)[:, None], (1, n))
        strata[:, :, d] = (perm + rng_u.random((1, n))) / R
    return strata.reshape(R * n, dims)


def forecast_without_decisions(
    world: WorldModel, book: pd.DataFrame, exposures: np.ndarray, replications: int, seed: int, ce: pd.Timestamp
) -> dict[str, Any]:
    """The twins' forecast when no decisions are replayed (no contacts, so nothing feeds back
    from the observables into the latent process): latent rates are drawn from each customer's
    posterior as in the simulator (Latin hypercube over `replications`), and the alive state and
    the death time within the window are integrated out exactly (Rao-Blackwellisation):
    for a customer alive at the start with rate lam and hazard mu, period k of length e_k and
    seasonal factor s_k contributes lam s_k e^(-mu t_k) (1 - e^(-mu e_k)) / mu expected
    transactions (with lam at its posterior mean, independent of mu given alive), and P(no transaction) = sum_k mu e^(-mu t_k - lam C_k) (1 - e^(-(mu + lam s_k) e_k))
    / (mu + lam s_k) + e^(-mu t_K - lam C_K), with C_k the seasonal exposure before period k."""
    from .population import state_from_book

    n = len(book)
    tables = WorldTables.from_world(world)
    u = latin_hypercube(n, replications, 4, seed)
    rows = np.tile(np.arange(n), replications)
    st = state_from_book(world, book.iloc[rows], np.random.default_rng(seed), tables, uniforms=u)
    p_alive = book["p_alive"].to_numpy(float)[rows]
    lam, mu = st.lam, np.maximum(st.mu, 1e-12)
    # given alive, the rate is independent of the hazard and of the spend rate: the expected count
    # and value use their posterior means (exact), the probability of activity uses the draws
    lam_mean = (book["lam_shape"] / book["lam_rate"]).to_numpy(float)[rows]
    nu_shape, nu_rate = book["nu_shape"].to_numpy(float)[rows], book["nu_rate"].to_numpy(float)[rows]
    spend = tables.spend_p[st.segment] * nu_rate / np.maximum(nu_shape - 1.0, 1e-9)
    K = len(exposures)
    pdays = world.economics.period_days
    if tables.seasonality is None:
        season = np.ones(K)
    else:
        weeks = [(ce + pd.Timedelta(days=1 + k * pdays)).isocalendar().week for k in range(K)]
        season = tables.seasonality[np.minimum(np.asarray(weeks), 53) - 1]
    t_start = np.concatenate([[0.0], np.cumsum(exposures)[:-1]])
    c_start = np.concatenate([[0.0], np.cumsum(season * exposures)[:-1]])
    exp_n = np.zeros(rows.size)
    p_none = np.zeros(rows.size)
    weekly = np.zeros(K)
    for k in range(K):
        surv = np.exp(-mu * t_start[k])
        e_k = lam_mean * season[k] * surv * (-np.expm1(-mu * exposures[k])) / mu
        exp_n += e_k
        weekly[k] = float((e_k * p_alive).sum())
        rate = mu + lam * season[k]
        p_none += mu * np.exp(-mu * t_start[k] - lam * c_start[k]) * (-np.expm1(-rate * exposures[k])) / rate
    T_end, C_end = t_start[-1] + exposures[-1], c_start[-1] + season[-1] * exposures[-1]
    p_none += np.exp(-mu * T_end - lam * C_end)
    R = float(replications)
    pred_n = np.bincount(rows, weights=exp_n * p_alive, minlength=n) / R
    pred_v = np.bincount(rows, weights=exp_n * p_alive * spend, minlength=n) / R
    p_act = np.bincount(rows, weights=(1.0 - p_none) * p_alive, minlength=n) / R
    return {
        "pred_n": pred_n,
        "pred_v": pred_v,
        "p_active": p_act,
        "weekly": weekly / R,
        "contacts": 0,
        "customer_steps": rows.size * K,
        "method": "twins, alive state and death time integrated out",
    }


def simulate_holdout(
    world: WorldModel,
    book: pd.DataFrame,
    actions: np.ndarray | None,
    exposures: np.ndarray,
    replications: int,
    seed: int,
    progress=None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Average over `replications` digital-twin draws of each book customer, simulated step by
    step (used when logged decisions are replayed). Each customer's draws of (alive, rate, hazard,
    spend) are a Latin-hypercube sample of their posterior, which keeps every draw exact while
    cutting the Monte Carlo noise of the per-customer forecast."""
    n = len(book)
    tables = WorldTables.from_world(world)
    strata = latin_hypercube(n, replications, 4, seed)
    rep_rows = np.tile(np.arange(n), replications)
    total = rep_rows.size
    pred_n = np.zeros(n)
    pred_v = np.zeros(n)
    p_act = np.zeros(n)
    weekly = np.zeros(len(exposures))
    contacts = 0
    done = 0
    for start, stop, seq in chunk_seeds(seed, total, chunk_size):
        rows = rep_rows[start:stop]
        sim = PopulationSimulator.from_book(world, book.iloc[rows], seq, tables=tables, uniforms=strata[start:stop])
        sim.track_expected = True
        lam_cum = np.zeros(rows.size)
        any_tx = np.zeros(rows.size, bool)
        val = np.zeros(rows.size)
        for t, expo in enumerate(exposures):
            a = None if actions is None else actions[rows, t]
            out = sim.step(a, exposure=float(expo))
            lam_cum += out.expected_transactions
            any_tx |= out.transactions > 0
            val += out.expected_amount
            weekly[t] += out.expected_transactions.sum()
            contacts += int(out.contacted.sum())
        np.add.at(pred_n, rows, lam_cum)
        np.add.at(pred_v, rows, val)
        if world.activity_model == "pareto_nbd":
            np.add.at(p_act, rows, -np.expm1(-lam_cum))
        else:
            np.add.at(p_act, rows, any_tx)
        done += rows.size
        if progress:
            progress(done, total)
    r = float(replications)
    return {
        "pred_n": pred_n / r,
        "pred_v": pred_v / r,
        "p_active": p_act / r,
        "weekly": weekly / r,
        "contacts": contacts / r,
        "customer_steps": total * len(exposures),
        "method": "twins simulated",
    }


def holdout_metrics(act_n, act_v, pred_n, pred_v, p_active) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    active = act_n > 0
    top = np.argsort(-pred_v, kind="stable")[: max(1, int(0.1 * len(pred_v)))]
    out = {
        "customers": int(len(act_n)),
        "holdout_repeat_actual": float(act_n.sum()),
        "holdout_repeat_predicted": float(pred_n.sum()),
        "aggregate_error": float((pred_n.sum() - act_n.sum()) / max(act_n.sum(), 1e-12)),
        "per_customer_corr": (
            float(np.corrcoef(pred_n, act_n)[0, 1]) if act_n.std() > 0 and pred_n.std() > 0 else None
        ),
        "per_customer_mae": float(np.abs(pred_n - act_n).mean()),
        # scored by the predicted number of holdout transactions, as lifetimes' anchor scores it
        "active_auc": float(roc_auc_score(active, pred_n)) if 0 < active.sum() < len(active) else None,
        "active_auc_p_active": (float(roc_auc_score(active, p_active)) if 0 < active.sum() < len(active) else None),
        "holdout_value_actual": float(act_v.sum()),
        "holdout_value_predicted": float(pred_v.sum()),
        "holdout_value_error": float((pred_v.sum() - act_v.sum()) / max(act_v.sum(), 1e-12)),
        "top_decile_value_share": float(act_v[top].sum() / max(act_v.sum(), 1e-12)),
        "active_share_actual": float(active.mean()),
        "active_share_predicted": float(p_active.mean()),
    }
    return out


def conditional_table(x_cal: np.ndarray, act_n: np.ndarray, pred_n: np.ndarray) -> pd.DataFrame:
    b = np.minimum(x_cal.astype(int), FREQ_BINS - 1)
    cnt = np.bincount(b, minlength=FREQ_BINS)
    a = np.bincount(b, weights=act_n, minlength=FREQ_BINS) / np.maximum(cnt, 1)
    p = np.bincount(b, weights=pred_n, minlength=FREQ_BINS) / np.maximum(cnt, 1)
    labels = [str(i) for i in range(FREQ_BINS - 1)] + [f"{FREQ_BINS - 1}+"]
    return pd.DataFrame({"calibration_frequency": labels, "customers": cnt, "actual_mean": a, "predicted_mean": p})


def write_outputs(out_dir: str | Path, metrics: dict[str, Any], art: dict[str, Any]) -> dict[str, str]:
    """validation.json, tracking.png, tracking.csv, conditional_expectation.csv, predictions.parquet,
    world.json (+ its book), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    plot_tracking(art["tracking"], out / "tracking.png", metrics)  # first: the likeliest to fail
    world: WorldModel = art["world"]
    world.save_with_book(out / "world.json", art["book"])
    for name, df in (("tracking.csv", art["tracking"]), ("conditional_expectation.csv", art["conditional"])):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False)
        files[name.split(".")[0]] = str(out / name)
    with atomic_path(out / "predictions.parquet") as tmp:
        art["predictions"].to_parquet(tmp, index=False)
    ew = (metrics.get("early_warning") or {}).get("scores")
    if ew:  # the decile lift table of every score
        deciles = pd.DataFrame([{"score": k, **d} for k, m in ew.items() if m for d in m["deciles"]])
        with atomic_path(out / "early_warning_deciles.csv") as tmp:
            deciles.to_csv(tmp, index=False)
        files["early_warning_deciles"] = str(out / "early_warning_deciles.csv")
    files.update(
        {
            "world": str(out / "world.json"),
            "plot": str(out / "tracking.png"),
            "predictions": str(out / "predictions.parquet"),
            "metrics": str(out / "validation.json"),
        }
    )
    atomic_write_json(out / "validation.json", {**metrics, "files": files})
    return files


def plot_tracking(tracking: pd.DataFrame, path: Path, metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 4.5))
    x = np.arange(len(tracking))
    split = int((tracking["window"] == "calibration").sum())
    ax[0].plot(x, tracking["actual"], color="black", lw=1.2, label="actual")
    ax[0].plot(x, tracking["model"], color="tab:red", lw=1.2, ls="--", label="model / simulation")
    ax[1].plot(x, tracking["actual"].cumsum(), color="black", lw=1.2, label="actual")
    ax[1].plot(x, tracking["model"].cumsum(), color="tab:red", lw=1.2, ls="--", label="model / simulation")
    ticks = np.linspace(0, len(x) - 1, 7).astype(int)
    for a, title in zip(ax, ("transactions per period", "cumulative transactions")):
        a.axvline(split - 0.5, color="grey", ls=":", lw=1)
        a.set_title(title)
        a.set_xticks(ticks, tracking["period_start"].to_numpy()[ticks], rotation=30, fontsize=8)
        a.legend(frameon=False)

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    fig.suptitle(
        f"holdout: actual {fmt(metrics['holdout_repeat_actual'], '.0f')}, predicted "
        f"{fmt(metrics['holdout_repeat_predicted'], '.0f')} ({fmt(metrics['aggregate_error'], '+.1%')}); "
        f"corr {fmt(metrics['per_customer_corr'], '.3f')}, AUC {fmt(metrics['active_auc'], '.3f')}",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
