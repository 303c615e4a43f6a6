"""Progress of a training: `TrainingProgress`, the stable-baselines3 callback that reports SB3's
timesteps as they advance, and the `Report` protocol every part of `policies.rl.train` uses.

A `Report` is called as `report(step, done, total)`: `step` names the part of the work (collecting
a teacher's decisions, fitting the actor, SB3's timesteps), `done` of `total` counts it. It is the
shape of `experiments.pipeline`'s progress and of the CLI's progress display (a bar on a terminal,
a line per tenth and per step otherwise), so a training never sits at 0 % while its warm start runs.
"""

from __future__ import annotations

from typing import Callable

from stable_baselines3.common.callbacks import BaseCallback

Report = Callable[[str, int, int], None]  # (step, done, total)


class TrainingProgress(BaseCallback):
    """Reports the timesteps done of `total` when training starts and after every vectorised step
    (every n_envs timesteps): `progress(done, total)` and `report(step, done, total)`, `step` being
    the name of the current phase (set it before each `learn`). Counts run on across `learn` calls
    made with `reset_num_timesteps=False`."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None = None, report: Report | None = None):
        super().__init__()
        self.total, self.progress, self.report = int(total), progress, report
        self.step = "reinforcement learning"

    def _on_training_start(self) -> None:
        self._tick()

    def _on_step(self) -> bool:
        self._tick()
        return True

    def _tick(self) -> None:
        done = min(int(self.num_timesteps), self.total)
        if self.progress is not None:
            self.progress(done, self.total)
        if self.report is not None:
            self.report(self.step, done, self.total)
