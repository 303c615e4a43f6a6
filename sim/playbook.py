"""The bank's "business as usual" playbook: one contact rule per lifecycle step, on observables only.

Taken from the retail-bank case studies: onboarding for new customers (get them their first
card), activation for new customers who have it, activation / cashback for growth, cross-sell
for mature customers, reactivation for dormant ones and a retention call for high-value
customers at risk (dormant). It is the logging policy of the synthetic bank
(`sim.synthetic.logging_probs`) and the `bau` baseline (`policies.baselines.BusinessAsUsual`),
so both use this one definition.

Each step names the default catalogue's action for it. A catalogue without that action (a
user's own actions.yaml), or where it is not eligible in the step's stage, falls back to the
cheapest action eligible in that stage whose `offer` serves the step (offers tried in order),
and to "none" when nothing does.

"High value" is the "affluent" segment when the world has one. Otherwise it is observable
spend per period (monetary / tenure) above the top-quintile cut of the world's expected spend
per period across customers: per segment, lambda * E[value | nu] = (p gamma / alpha) * G1/G2
with G1 ~ Gamma(r), G2 ~ Gamma(q), a scaled beta-prime(r, q) variable, mixed by segment share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .catalogue import STAGES
from .world import WorldModel

HIGH_VALUE_SEGMENT = "affluent"


@dataclass(frozen=True)
class Step:
    """One playbook step: the stage it applies to, the default catalogue's action for it and the
    offers that serve it in another catalogue (in order of preference)."""

    stage: str
    action: str
    offers: tuple[str, ...]


# new customers split on holding the onboarding action's target product; mature and dormant
# customers on being high value
STEPS: dict[str, Step] = {
    "onboarding": Step("new", "email_card_offer", ("onboarding", "product_recommendation", "activation_bonus")),
    "activation": Step("new", "sms_activation_bonus", ("activation_bonus", "onboarding", "login_reminder")),
    "growth": Step("growth", "push_cashback", ("cashback", "activation_bonus", "login_reminder")),
    "cross_sell": Step("maturity", "email_fee_waiver", ("product_recommendation", "fee_waiver", "cashback")),
    "cross_sell_high_value": Step("maturity", "rm_call_wealth", ("product_recommendation", "fee_waiver")),
    "reactivation": Step("dormancy", "push_login_reminder", ("reactivation", "login_reminder", "fee_waiver")),
    "retention_high_value": Step(
        "dormancy", "rm_call_retention", ("retention_offer", "reactivation", "login_reminder", "fee_waiver")
    ),
}
# (stage, flag) -> step; the flag is "holds the onboarding product" for new customers and
# "high value" for the others. Churned customers get nothing.
_STEP_OF = {
    ("new", False): "onboarding",
    ("new", True): "activation",
    ("growth", False): "growth",
    ("growth", True): "growth",
    ("maturity", False): "cross_sell",
    ("maturity", True): "cross_sell_high_value",
    ("dormancy", False): "reactivation",
    ("dormancy", True): "retention_high_value",
}


def resolve_step(world: WorldModel, step: Step) -> int:
    """Catalogue index of the step's action in this world (0 = none)."""
    cat = world.catalogue
    if step.action in cat.names and step.stage in cat.actions[cat.index(step.action)].eligible_stages:
        return cat.index(step.action)
    for offer in step.offers:
        fits = [i for i, a in enumerate(cat.actions) if i and a.offer == offer and step.stage in a.eligible_stages]
        if fits:
            return min(fits, key=lambda i: (cat.actions[i].cost, i))
    return 0


def high_value_threshold(world: WorldModel, quantile: float = 0.8) -> float:
    """Expected spend per period that the top (1 - quantile) of the world's customers exceed:
    the quantile of the share-weighted mixture of scaled beta-prime(r, q) laws (see module doc)."""
    from scipy import optimize, stats

    shares = np.array([s.share for s in world.segments], float)
    shares = shares / shares.sum()
    laws = [
        stats.betaprime(s.activity["r"], s.spend["q"], scale=s.spend["p"] * s.spend["gamma"] / s.activity["alpha"])
        for s in world.segments
    ]

    def excess(log_v: float) -> float:
        return sum(w * law.cdf(np.exp(log_v)) for w, law in zip(shares, laws)) - quantile

    lo, hi = -30.0, 30.0
    while excess(lo) > 0:
        lo -= 30.0
    while excess(hi) < 0:
        hi += 30.0
    return float(np.exp(optimize.brentq(excess, lo, hi, xtol=1e-10)))


@dataclass
class Playbook:
    """The playbook resolved against one world: `action(obs)` gives each customer's step action.

    segment_names: names the segment indices in `obs["segment"]` (default: the world's).
    high_value_quantile: for worlds without an "affluent" segment, customers whose spend per
    period exceeds this quantile of the world's expected spend per period are high value.
    """

    world: WorldModel = field(repr=False)
    segment_names: list[str] | None = None
    high_value_quantile: float = 0.8
    step_action: dict[str, int] = field(init=False)
    onboarding_product: int = field(init=False)  # product index, -1 = "holds any product"
    high_value_segment: int = field(init=False)  # segment index, -1 = use the spend rule
    _lut: np.ndarray = field(init=False, repr=False)
    _threshold: float | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.high_value_quantile < 1.0:
            raise ValueError(f"high_value_quantile must be in (0, 1), got {self.high_value_quantile!r}")
        names = list(self.segment_names) if self.segment_names is not None else [s.name for s in self.world.segments]
        self.step_action = {k: resolve_step(self.world, s) for k, s in STEPS.items()}
        target = self.world.catalogue.actions[self.step_action["onboarding"]].target_product
        self.onboarding_product = self.world.products.index(target) if target in self.world.products else -1
        self.high_value_segment = names.index(HIGH_VALUE_SEGMENT) if HIGH_VALUE_SEGMENT in names else -1
        lut = np.zeros(2 * len(STAGES), np.int16)
        for (stage, flag), step in _STEP_OF.items():
            lut[2 * STAGES.index(stage) + flag] = self.step_action[step]
        self._lut = lut

    @property
    def threshold(self) -> float:
        """Spend per period above which a customer is high value (spend rule only; computed once)."""
        if self._threshold is None:
            self._threshold = high_value_threshold(self.world, self.high_value_quantile)
        return self._threshold

    def high_value(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.high_value_segment >= 0:
            return np.asarray(obs["segment"]) == self.high_value_segment
        spend_rate = np.asarray(obs["monetary"], float) / np.maximum(np.asarray(obs["tenure"]), 1)
        return spend_rate > self.threshold

    def onboarded(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Holds the onboarding product (any product when the onboarding action targets none)."""
        products = np.asarray(obs["products"])
        if products.shape[1] == 0:
            return np.zeros(products.shape[0], bool)
        if self.onboarding_product >= 0:
            return products[:, self.onboarding_product]
        return products.any(axis=1)

    def action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n,) int16 catalogue index of each customer's step action (0 = none)."""
        stage = np.asarray(obs["stage"]).astype(np.intp)
        new = stage == STAGES.index("new")
        flag = np.zeros(stage.shape[0], bool)
        if new.any():
            flag[new] = self.onboarded(obs)[new]
        # the value rule only matters where a step depends on it
        hv_steps = np.isin(stage, [STAGES.index("maturity"), STAGES.index("dormancy")])
        if hv_steps.any():
            flag[hv_steps] = self.high_value(obs)[hv_steps]
        return self._lut[2 * stage + flag]


def playbook_action(obs: Mapping[str, np.ndarray], world: WorldModel) -> np.ndarray:
    """The playbook's action per customer (catalogue index; 0 = none). Build a `Playbook` once
    instead when calling every period."""
    return Playbook(world).action(obs)
