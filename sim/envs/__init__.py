"""Gymnasium environments over a calibrated world: `clv/Customer-v0` (one customer per episode)
and `clv/TabularCustomer-v0` (the small tabular world solved exactly by policies.dp).

Importing this module registers both ids: `import sim.envs; gymnasium.make("clv/Customer-v0",
world="world.json")`.
"""

from __future__ import annotations

import gymnasium as gym

CUSTOMER_ENV_ID = "clv/Customer-v0"
TABULAR_ENV_ID = "clv/TabularCustomer-v0"

if CUSTOMER_ENV_ID not in gym.registry:
    gym.register(CUSTOMER_ENV_ID, entry_point="sim.envs.customer:CustomerEnv")
if TABULAR_ENV_ID not in gym.registry:
    gym.register(TABULAR_ENV_ID, entry_point="sim.envs.tabular:TabularCustomerEnv")
