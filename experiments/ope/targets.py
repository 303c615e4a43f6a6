"""The candidate policy's probabilities at the logged decisions, from wherever the candidate comes:
a clv-engine policy acting on the rebuilt states, a decisions-table column holding the logged
action's probability, or a file of the whole distribution per decision (`--target-probs`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.errors import ConfigError


@dataclass
class Target:
    """The candidate's probabilities at n logged decisions: every action's (`probs`, (n, A)) when
    a policy gives them, else only the logged action's (`logged`, (n,))."""

    logged: np.ndarray
    probs: np.ndarray | None
    source: str
    info: dict = field(default_factory=dict)


def target_from_policy(policy, states) -> Target:
    """The candidate's probabilities at the rebuilt observations (`observations.DecisionStates`)."""
    probs = np.asarray(policy.action_probs(states.obs, states.masks), dtype=np.float64)
    rows = np.arange(len(states))
    info = {
        "rebuilt_states": len(states),
        "unknown_segment": states.unknown_segment,
        "logged_action_masked_share": float((~states.masks[rows, states.action]).mean()),
    }
    return Target(logged=probs[rows, states.action], probs=probs, source=getattr(policy, "name", "policy"), info=info)


def target_from_column(history, outcomes: pd.DataFrame, column: str) -> Target:
    """Target probabilities of the logged actions from a decisions-table column."""
    from sim.history import read_probability_column

    if str(history.folder).startswith("<"):
        raise ConfigError("target_prob_column", "needs a history folder (not a bundled dataset)")
    col = read_probability_column(history.folder, column)
    key = pd.MultiIndex.from_arrays([col["customer_id"].to_numpy(), col["date"].to_numpy()])
    want = pd.MultiIndex.from_arrays([outcomes["customer_id"].astype(str).to_numpy(), outcomes["date"].to_numpy()])
    p = pd.Series(col[column].to_numpy(), index=key).reindex(want).to_numpy()
    if np.isnan(p).any():  # cannot happen for a table the history loaded, unless the file changed since
        raise ConfigError(f"{history.folder}: decisions changed while reading column {column!r}; run again")
    return Target(logged=p, probs=None, source=f"column {column}")


def _where(c, d) -> str:
    return f"customer {c}'s decision on {pd.Timestamp(d).date()}"


def target_from_file(path, history, outcomes: pd.DataFrame, actions: list[str]) -> Target:
    """The candidate's whole action distribution at the window's logged decisions (`outcomes`) from
    a long file (sim.history.read_target_probs), as Open Bandit Pipeline's `action_dist`: probs
    (n, len(actions)) in the order of `actions` (the catalogue the evaluation codes actions with).
    Every row must name a logged decision of the history and a catalogue action, once; every
    decision of the window needs rows whose probabilities sum to 1 (within ROW_SUM_TOL). Rows of
    logged decisions outside the window are ignored. Problems raise HistoryError naming the file,
    the row and the column."""
    from pathlib import Path

    from sim.errors import HistoryError
    from sim.history import read_target_probs

    from .logged import ROW_SUM_TOL

    name = Path(path).name
    f = read_target_probs(path)
    rows = f["row"].to_numpy()
    a_idx = pd.Index(actions).get_indexer(f["action"].to_numpy())
    if (a_idx < 0).any():
        i = int(np.argmax(a_idx < 0))
        raise HistoryError(
            name,
            int(rows[i]),
            "action",
            f"unknown action {f['action'].iloc[i][:80]!r}; the catalogue's actions are {', '.join(actions)}",
        )
    key = pd.MultiIndex.from_arrays([f["customer_id"].to_numpy(), f["date"].to_numpy(), a_idx])
    dup = np.asarray(key.duplicated())
    if dup.any():
        i = int(np.argmax(dup))
        codes = pd.factorize(key)[0]
        first = int(rows[np.flatnonzero(codes == codes[i])[0]])
        raise HistoryError(
            name,
            int(rows[i]),
            "action",
            f"{f['action'].iloc[i][:80]!r} at {_where(f['customer_id'].iloc[i], f['date'].iloc[i])} is given twice "
            f"(also row {first}); give each decision and action once",
        )
    dec = history.decisions
    logged = pd.MultiIndex.from_arrays([dec["customer_id"].astype(str).to_numpy(), dec["date"].to_numpy()])
    pair = pd.MultiIndex.from_arrays([f["customer_id"].to_numpy(), f["date"].to_numpy()])
    known_decision = np.asarray(pair.isin(logged))
    if not known_decision.all():
        i = int(np.argmax(~known_decision))
        c = f["customer_id"].iloc[i]
        known_customer = bool((dec["customer_id"].astype(str) == c).any())
        raise HistoryError(
            name,
            int(rows[i]),
            "date" if known_customer else "customer_id",
            f"{_where(c, f['date'].iloc[i])} is not a logged decision"
            + ("" if known_customer else f" (no customer {c[:80]!r} in the decisions)")
            + "; every row must name a logged decision (decisions table: customer_id, date)",
        )
    want = pd.MultiIndex.from_arrays([outcomes["customer_id"].astype(str).to_numpy(), outcomes["date"].to_numpy()])
    at = want.get_indexer(pair)  # the window's decision of each row, -1 for a decision outside it
    inside = at >= 0
    n, A = len(outcomes), len(actions)
    probs = np.zeros((n, A))
    probs[at[inside], a_idx[inside]] = f["probability"].to_numpy()[inside]
    counts = np.bincount(at[inside], minlength=n)
    if (counts == 0).any():
        j = int(np.argmax(counts == 0))
        missing = int((counts == 0).sum())
        raise HistoryError(
            name,
            None,
            None,
            f"no rows for {_where(outcomes['customer_id'].iloc[j], outcomes['date'].iloc[j])}"
            + (f" and {missing - 1:,} other logged decisions" if missing > 1 else "")
            + "; give the candidate's probabilities at every logged decision of the window",
        )
    total = probs.sum(axis=1)
    off = np.abs(total - 1.0) > ROW_SUM_TOL
    if off.any():
        j = int(np.argmax(off))
        r = int(rows[np.flatnonzero(at == j)[0]])
        raise HistoryError(
            name,
            r,
            "probability",
            f"the probabilities of {_where(outcomes['customer_id'].iloc[j], outcomes['date'].iloc[j])} sum to "
            f"{total[j]:.6g}; they must sum to 1 (absent actions count 0)",
        )
    code = pd.Index(actions).get_indexer(outcomes["action"].to_numpy())
    logged_p = np.where(code >= 0, probs[np.arange(n), np.maximum(code, 0)], 0.0)
    return Target(logged=logged_p, probs=probs, source=f"file {name}", info={"target_rows": int(len(f))})
