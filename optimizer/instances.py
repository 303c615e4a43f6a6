"""Random value tables shaped like a bank's (segments, channels, per-action costs, sparse
eligibility), for property tests and the 1M-customer benchmarks where a simulated table would
take longer to build than to solve."""

from __future__ import annotations

import numpy as np

from .values import ValueTable

# action -> (channel, unit cost, mean value, sd of value); ten actions over four channels
BANK_LIKE_ACTIONS = {
    "email_card_offer": ("email", 0.10, 0.4, 1.5),
    "email_fee_waiver": ("email", 1.00, 0.6, 1.8),
    "push_cashback": ("push", 1.50, 1.2, 2.0),
    "push_login_reminder": ("push", 0.02, 0.1, 0.8),
    "sms_activation_bonus": ("sms", 2.00, 2.5, 3.0),
    "sms_rate_bonus_savings": ("sms", 3.00, 1.0, 3.0),
    "rm_call_wealth": ("rm", 12.0, 4.0, 12.0),
    "rm_call_retention": ("rm", 15.0, 5.0, 14.0),
    "branch_mortgage_review": ("branch", 25.0, 6.0, 20.0),
    "branch_advisor_meeting": ("branch", 20.0, 3.0, 15.0),
}
BANK_LIKE_SEGMENTS = {"mass": 0.55, "emerging": 0.2, "affluent": 0.15, "small": 0.1}


def bank_like_table(n: int, seed: int = 0, n_actions: int = 10, eligibility: float = 0.8) -> ValueTable:
    """n customers x up to 10 actions: values normal around each action's mean, scaled by a
    customer factor (lognormal) and the segment; costs fixed per action with a small spread."""
    rng = np.random.default_rng(seed)
    names = list(BANK_LIKE_ACTIONS)[:n_actions]
    chans = sorted({BANK_LIKE_ACTIONS[a][0] for a in names})
    segs = list(BANK_LIKE_SEGMENTS)
    seg = rng.choice(len(segs), size=n, p=np.array(list(BANK_LIKE_SEGMENTS.values())))
    seg_mult = np.array([1.0, 1.3, 2.5, 0.6])[seg]
    cust = rng.lognormal(0.0, 0.5, size=n) * seg_mult
    J = len(names)
    mean = np.array([BANK_LIKE_ACTIONS[a][2] for a in names])
    sd = np.array([BANK_LIKE_ACTIONS[a][3] for a in names])
    unit = np.array([BANK_LIKE_ACTIONS[a][1] for a in names])
    value = cust[:, None] * mean[None, :] + rng.standard_normal((n, J)) * sd[None, :] * 0.5
    cost = unit[None, :] * rng.uniform(0.9, 1.1, size=(n, J))
    eligible = rng.random((n, J)) < eligibility
    return ValueTable(
        ids=np.char.add("C", np.arange(n).astype(str)),
        segment=seg,
        segments=segs,
        actions=names,
        channels=chans,
        action_channel=np.array([chans.index(BANK_LIKE_ACTIONS[a][0]) for a in names]),
        value=value,
        cost=cost,
        eligible=eligible,
        source=f"bank_like_table(n={n}, seed={seed})",
    )
