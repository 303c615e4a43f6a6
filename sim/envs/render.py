"""Frames of the customer envs for Gymnasium's render modes: "ansi" (one line of text) and
"rgb_array" (a small picture: the lifecycle stage as a colour, the episode's progress and a level
as bars), so standard helpers (SB3's make_vec_env asks for rgb_array) and video wrappers work."""

from __future__ import annotations

import numpy as np

RENDER_MODES = ("ansi", "rgb_array")
HEIGHT, WIDTH = 48, 192
STAGE_COLOURS = np.array(  # new, growth, maturity, dormancy, churned (and a sixth: gone)
    [[86, 180, 233], [0, 158, 115], [0, 114, 178], [230, 159, 0], [213, 94, 0], [120, 120, 120]], np.uint8
)


def check_render_mode(name: str, render_mode: str | None) -> str | None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"{name}: render_mode must be one of {', '.join(RENDER_MODES)} or None, got {render_mode!r}")
    return render_mode


def rgb_frame(stage: int, progress: float, level: float) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8: the top half in the stage's colour, then a white bar as long as
    the episode's progress (0..1) and a grey bar as long as the level (0..1)."""
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    img[: HEIGHT // 2] = STAGE_COLOURS[int(np.clip(stage, 0, len(STAGE_COLOURS) - 1))]
    img[HEIGHT // 2 : HEIGHT // 2 + 8, : int(round(np.clip(progress, 0, 1) * WIDTH))] = (40, 40, 40)
    img[HEIGHT - 12 : HEIGHT - 4, : int(round(np.clip(level, 0, 1) * WIDTH))] = (150, 150, 150)
    return img
