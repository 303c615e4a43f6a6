"""sim: calibrate a customer-lifecycle world from transaction history and simulate it.

Main entry points: `sim.history.load_history`, `sim.calibrate.calibrate`,
`sim.validate.validate`, `sim.population.PopulationSimulator` / `simulate`,
`sim.world.WorldModel` (JSON save/load), `sim.synthetic` (bank history with known truth).
"""

__version__ = "0.1.0"
