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
