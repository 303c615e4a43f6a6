"""Scenario experiments on Ray (`clv scenarios FILE --out DIR`): a grid of cells
(policy x budget x seed) over one calibrated world, each cell a Ray task.

The scenario file (YAML, paths relative to its folder)::

    name: bank_budget_sweep
    world: world.json          # written by `clv calibrate` (its book parquet beside it)
    population: book           # book (digital twins of the world's book) | new
    customers: 3000            # default: the whole book (population book); required for new
    horizon: 52                # periods simulated per cell
    seeds: 3                   # or an explicit list [0, 1, 2]
    policies: [bau, greedy_uplift]      # baseline names or folders written by `clv train`
    budgets: [null, 1000, 2000]          # null = the policy runs without a budget
    constraints:               # as the options of `clv allocate`
      capacity: ["channel:rm_call=50"]
      min_coverage: []
      max_share: []
    values: {horizon: 26, replications: 2}   # value tables of the budget cells
    ope:                       # optional: offline evaluation of every policy on a logged history
      history: bank_history    # a history folder with decisions (as `clv ope HISTORY_DIR`)
      estimators: [dm, ips, snips, dr]
      bootstrap: 500
      start: 2024-07-01        # evaluate the decisions from this date (optional; also end)

A cell (`run_cell`):

- budget null: the policy is simulated for `horizon` periods (`sim.population.simulate`), and so is
  "none" on the same seed (the same digital twins: common customers), for the incremental CLV and
  the marketing ROI (metrics as `experiments.evaluate`);
- budget B: the value table of every allowed first-period action with the policy as continuation
  (`optimizer.value_sources.values_from_simulation`), the best plan under B and the constraints
  (`optimizer.allocate.allocate`), then `horizon` periods where period 0 applies the plan (customers
  without a planned action are not contacted) and the policy decides afterwards; the same metrics
  plus the plan's objective, bound, gap and spend. A plan that cannot satisfy the constraints gives
  a row with status "infeasible" and no metrics.

A cell's numbers depend only on the scenario and the cell (seeded simulation, deterministic
solvers, one BLAS/torch thread), never on the worker that runs it or the order: the same scenario
gives identical results with 1 or N workers, and a retried cell gives the same row.

Outputs in DIR: `cells/<cell_id>.parquet` and `cells/<cell_id>.periods.parquet` (each written
atomically as the cell finishes; `cell_id` hashes everything that decides the cell's numbers, so
a changed scenario never reuses a stale cell and a re-run skips the cells already done),
`running/<cell_id>.pid` while a cell runs (the pid of the Ray worker running it),
`results.parquet` (one row per cell, in cell order), `periods.parquet` (per cell and period: alive,
contacts, reward, cost and customers per lifecycle stage), `summary.json` (per policy x budget:
mean and 95% interval over seeds of every metric), `timings.json` and `scenario.json` (the
resolved scenario); with an `ope:` section, `ope.json` (per policy: the estimates with their
intervals, the logged policy's value and the diagnostics of `experiments.ope.evaluate_offline`,
run in-process with the policy acting in the scenario's world; reused while its inputs digest
matches); and `report.html` (`experiments.reports.write_report`, rewritten by every run).
"""

from .cells import METRICS, PLAN_METRICS, cell_id, fingerprints, run_cell
from .file import Scenario, load_scenario
from .run import CellFailed, run_scenario, summarise

__all__ = [
    "CellFailed",
    "METRICS",
    "PLAN_METRICS",
    "Scenario",
    "cell_id",
    "fingerprints",
    "load_scenario",
    "run_cell",
    "run_scenario",
    "summarise",
]
