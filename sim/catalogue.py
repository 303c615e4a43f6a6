"""Action catalogue (channel x offer, cost, eligibility) and period economics, from YAML or defaults.

The catalogue always starts with the "none" action (index 0, no channel, no cost), so that a
policy's action index and the world model's response tables line up everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import HistoryError
from .user_yaml import UserYamlError, load_yaml_file

STAGES: tuple[str, ...] = ("new", "growth", "maturity", "dormancy", "churned")
NO_CHANNEL = "no_channel"  # the channel label of a contact action without a channel
PRODUCTS_DEFAULT: tuple[str, ...] = ("credit_card", "savings", "wealth", "loan")
CHANNELS_DEFAULT: tuple[str, ...] = ("app_push", "sms", "email", "rm_call")
PERIOD_DAYS = {"day": 1.0, "week": 7.0, "month": 365.25 / 12.0}


@dataclass(frozen=True)
class Action:
    """One intervention: an offer sent through a channel at a cost."""

    name: str
    channel: str | None = None
    offer: str | None = None
    cost: float = 0.0
    eligible_stages: tuple[str, ...] = STAGES
    capacity_group: str | None = None
    target_product: str | None = None  # product a recommendation/activation offer pushes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eligible_stages"] = list(self.eligible_stages)
        return d


NONE_ACTION = Action(name="none", channel=None, offer=None, cost=0.0)


@dataclass(frozen=True)
class ActionCatalogue:
    """Ordered actions; index 0 is always "none"."""

    actions: tuple[Action, ...]

    def __post_init__(self) -> None:
        names = [a.name for a in self.actions]
        if not names or names[0] != "none":
            raise ValueError("the action catalogue must start with the 'none' action")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate action names in catalogue: {dup}")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.actions]

    @property
    def channels(self) -> list[str]:
        """Channels in first-seen order (the "none" action has none)."""
        out: list[str] = []
        for a in self.actions:
            if a.channel and a.channel not in out:
                out.append(a.channel)
        return out

    @property
    def contact_channels(self) -> list[str]:
        """The channel labels of the contact actions (all but "none") in first-seen order, with
        NO_CHANNEL for an action that has none: the channels of value tables and constraints."""
        return list(dict.fromkeys(a.channel or NO_CHANNEL for a in self.actions[1:]))

    def contact_channel_index(self) -> list[int]:
        """For each catalogue action, its index in `contact_channels` (-1 for "none")."""
        labels = self.contact_channels
        return [-1] + [labels.index(a.channel or NO_CHANNEL) for a in self.actions[1:]]

    @property
    def costs(self) -> list[float]:
        return [a.cost for a in self.actions]

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown action {name!r}; known: {', '.join(self.names)}") from None

    def __len__(self) -> int:
        return len(self.actions)

    def to_list(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.actions]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> "ActionCatalogue":
        acts = [Action(**{**d, "eligible_stages": tuple(d.get("eligible_stages", STAGES))}) for d in items]
        return cls(tuple(acts))


def default_bank_catalogue() -> ActionCatalogue:
    """The six-step bank playbook (open a card, bind it, log in, transact, take a recommended
    product, refer/stay) as channel x offer actions. Costs are per contact, in margin units."""
    A = Action
    return ActionCatalogue(
        (
            NONE_ACTION,
            A("push_login_reminder", "app_push", "login_reminder", 0.02, ("new", "growth", "dormancy"), "digital"),
            A("sms_activation_bonus", "sms", "activation_bonus", 2.0, ("new", "growth"), "sms"),
            A(
                "email_card_offer",
                "email",
                "product_recommendation",
                0.1,
                ("new", "growth", "maturity"),
                "email",
                "credit_card",
            ),
            A("push_cashback", "app_push", "cashback", 1.5, ("growth", "maturity", "dormancy"), "digital"),
            A("email_fee_waiver", "email", "fee_waiver", 1.0, ("maturity", "dormancy"), "email"),
            A("sms_rate_bonus_savings", "sms", "rate_bonus", 3.0, ("growth", "maturity"), "sms", "savings"),
            A("rm_call_wealth", "rm_call", "product_recommendation", 12.0, ("maturity",), "rm", "wealth"),
            A("rm_call_retention", "rm_call", "retention_offer", 15.0, ("maturity", "dormancy"), "rm"),
        )
    )


MAX_NAME_LENGTH = 256  # characters of an action, channel, offer, capacity group or product name (ids: the same)


def load_actions(path: str | Path) -> ActionCatalogue:
    """Read actions.yaml: a list (or {actions: [...]}) of name, channel, offer, cost,
    eligible_stages, capacity_group[, target_product]. "none" is added first if absent."""
    path = Path(path)
    try:
        raw = load_yaml_file(path)
    except UserYamlError as e:
        raise HistoryError(path.name, None, None, str(e)) from None
    if isinstance(raw, dict):
        raw = raw.get("actions")
    if not isinstance(raw, list) or not raw:
        raise HistoryError(path.name, None, "actions", "expected a non-empty list of actions")
    allowed = {f for f in Action.__dataclass_fields__}
    acts: list[Action] = []
    seen: set[str] = set()
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, dict) or "name" not in item:
            raise HistoryError(path.name, i, "name", "each action needs a name")
        extra = set(item) - allowed
        if extra:
            raise HistoryError(path.name, i, sorted(extra)[0], f"unknown field; allowed: {sorted(allowed)}")
        if not isinstance(item["name"], str) or not item["name"].strip():
            raise HistoryError(
                path.name,
                i,
                "name",
                f"must be a name (text), got {repr(item['name'])[:80]}; quote it if it is a number",
            )
        name = item["name"].strip()
        for key in ("channel", "offer", "capacity_group", "target_product"):
            v = item.get(key)
            if v is not None and not isinstance(v, str):
                what = "a list" if isinstance(v, list) else "a mapping" if isinstance(v, dict) else repr(v)[:80]
                raise HistoryError(path.name, i, key, f"must be one name (text) or null, got {what}")
        for key in ("name", "channel", "offer", "capacity_group", "target_product"):
            v = item.get(key)
            if (
                isinstance(v, str) and len(v) > MAX_NAME_LENGTH
            ):  # names are labels: a world, a report and a CRM file carry them
                raise HistoryError(
                    path.name, i, key, f"{v[:40]!r}... is {len(v):,} characters; a name has at most {MAX_NAME_LENGTH}"
                )
        if name in seen:
            raise HistoryError(path.name, i, "name", f"duplicate action {name!r}")
        seen.add(name)
        try:
            if isinstance(item.get("cost"), bool):  # YAML's yes/no is not an amount
                raise TypeError
            cost = float(item.get("cost", 0.0))
        except (TypeError, ValueError):
            raise HistoryError(path.name, i, "cost", f"not a number: {item.get('cost')!r}") from None
        if not (cost >= 0.0) or cost == float("inf"):
            raise HistoryError(path.name, i, "cost", f"cost must be finite and >= 0, got {cost}")
        stages = item.get("eligible_stages", list(STAGES))
        if isinstance(stages, str):
            stages = [s.strip() for s in stages.split(",")]
        if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
            raise HistoryError(
                path.name,
                i,
                "eligible_stages",
                f"expected a list of stages (e.g. [new, growth]), got {repr(stages)[:80]}; stages: {list(STAGES)}",
            )
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise HistoryError(path.name, i, "eligible_stages", f"unknown stage {bad[0]!r}; stages: {list(STAGES)}")
        acts.append(
            Action(
                name=name,
                channel=item.get("channel"),
                offer=item.get("offer"),
                cost=cost,
                eligible_stages=tuple(stages),
                capacity_group=item.get("capacity_group"),
                target_product=item.get("target_product"),
            )
        )
    if acts[0].name != "none":
        acts = [a for a in acts if a.name != "none"]
        acts.insert(0, NONE_ACTION)
    return ActionCatalogue(tuple(acts))


def save_actions(cat: ActionCatalogue, path: str | Path) -> None:
    from .atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump({"actions": cat.to_list()}, sort_keys=False))


@dataclass
class Economics:
    """What a period earns (DESIGN.md, economics.yaml)."""

    period: str = "week"
    margin_rate: float = 1.0
    product_margin_per_period: dict[str, float] = field(default_factory=dict)
    annual_discount_rate: float = 0.0
    currency: str | None = None  # the unit margins and costs are in (reports say "margin units" without it)

    def __post_init__(self) -> None:
        if self.period not in PERIOD_DAYS:
            raise ValueError(f"period must be one of {sorted(PERIOD_DAYS)}, got {self.period!r}")

    @property
    def period_days(self) -> float:
        return PERIOD_DAYS[self.period]

    @property
    def money_unit(self) -> str:
        """The unit margins and costs are in, as outputs name it: `currency`, else "margin units"."""
        return self.currency or "margin units"

    @property
    def discount_per_period(self) -> float:
        """Per-period discount factor implied by the annual rate."""
        return float((1.0 + self.annual_discount_rate) ** (-self.period_days / 365.25))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["currency"] is None:  # left out when not given: the worlds calibrated before it keep their hash
            del d["currency"]
        return d


def load_economics(path: str | Path) -> Economics:
    path = Path(path)
    try:
        raw = load_yaml_file(path) or {}
    except UserYamlError as e:
        raise HistoryError(path.name, None, None, str(e)) from None
    if not isinstance(raw, dict):
        raise HistoryError(path.name, None, None, "expected a mapping of settings")
    known = set(Economics.__dataclass_fields__)
    extra = set(raw) - known
    if extra:
        raise HistoryError(path.name, None, sorted(extra)[0], f"unknown setting; allowed: {sorted(known)}")
    period = raw.get("period", "week")
    if not isinstance(period, str) or period not in PERIOD_DAYS:
        raise HistoryError(path.name, None, "period", f"must be one of {sorted(PERIOD_DAYS)}, got {repr(period)[:80]}")
    out: dict[str, Any] = {"period": period}
    for key in ("margin_rate", "annual_discount_rate"):
        if key in raw:
            try:
                v = float(raw[key])
            except (TypeError, ValueError):
                raise HistoryError(path.name, None, key, f"not a number: {repr(raw[key])[:80]}") from None
            if not (0.0 <= v < float("inf")):
                raise HistoryError(path.name, None, key, f"must be finite and >= 0, got {v}")
            out[key] = v
    pm = raw.get("product_margin_per_period") or {}
    if not isinstance(pm, dict):
        raise HistoryError(path.name, None, "product_margin_per_period", "expected a mapping product: margin")
    margins: dict[str, float] = {}
    for k, v in pm.items():
        try:
            margins[str(k)] = float(v)
        except (TypeError, ValueError):
            raise HistoryError(
                path.name, None, f"product_margin_per_period.{k}", f"not a number: {repr(v)[:80]}"
            ) from None
        if not np.isfinite(margins[str(k)]):  # .inf was stored as null, and every later command crashed
            raise HistoryError(path.name, None, f"product_margin_per_period.{k}", f"must be finite, got {v}")
    out["product_margin_per_period"] = margins
    if raw.get("currency") is not None:
        cur = raw["currency"]
        if not isinstance(cur, str) or not 1 <= len(cur.strip()) <= 12 or not cur.strip().isprintable():
            raise HistoryError(
                path.name, None, "currency", f"expected a short name such as EUR or USD, got {repr(cur)[:80]}"
            )
        out["currency"] = cur.strip()
    return Economics(**out)


def save_economics(econ: Economics, path: str | Path) -> None:
    from .atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(econ.to_dict(), sort_keys=False))
