"""A one-period plan run on top of a policy: the plan's actions in the first period, the policy
afterwards (`PlanThenPolicy`), and an allocation turned into per-customer catalogue actions
(`plan_actions`)."""

from __future__ import annotations

from typing import Any

import numpy as np


class PlanThenPolicy:
    """Period 0: the plan's action for each customer (none where the plan has none); afterwards the
    policy (a simulator callable). `simulate` steps its chunks one after the other, all of them on
    every call; `starts` gives each chunk's first row, so one object serves repeated simulations."""

    def __init__(self, plan_actions, policy_fn, starts: list[int]):
        self.plan, self.policy, self.starts = plan_actions, policy_fn, starts
        self.k, self.sim = -1, None

    def __call__(self, sim):
        if sim is not self.sim:
            self.sim, self.k = sim, (self.k + 1) % len(self.starts)
        if sim.t == 0:
            lo = self.starts[self.k]
            return np.asarray(self.plan[lo : lo + sim.state.n], np.int16)
        return self.policy(sim)


def plan_actions(alloc, world, ids) -> tuple[Any, dict[str, str]]:
    """A customer-level allocation as catalogue indexes (0 = none) in the order of `ids` (the
    simulated customers), and as customer -> action for the assigned customers."""
    t = alloc.problem.table
    assigned = alloc.units.sum(axis=1) > 0
    chosen = np.asarray(t.actions, dtype=object)[np.argmax(alloc.units[assigned], axis=1)]
    by_customer = dict(zip(np.asarray(t.ids)[assigned].astype(str).tolist(), chosen.tolist()))
    code = {a: i for i, a in enumerate(world.catalogue.names)}
    actions = np.array([code[by_customer.get(str(c), "none")] for c in ids], np.int16)
    return actions, by_customer
