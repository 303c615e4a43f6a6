"""Whether two `clv calibrate` outputs are the same world: world.json equal in every field but the
timings (every "seconds" key), and world.book.parquet byte for byte. Used to check that a speed or
memory change left calibration's numbers alone.

    python benchmarks/compare_worlds.py BEFORE_DIR AFTER_DIR    # exit 0: the same world
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.world import without_timings  # noqa: E402  (the world hash leaves the same keys out)


def differences(x: Any, y: Any, path: str = "") -> list[str]:
    """The JSON paths where `x` and `y` differ (type, keys, lengths or values)."""
    if type(x) is not type(y):
        return [f"type {path}"]
    if isinstance(x, dict):
        out = [f"key {path}/{k}" for k in sorted(set(x) ^ set(y))]
        for k in sorted(set(x) & set(y)):
            out += differences(x[k], y[k], f"{path}/{k}")
        return out
    if isinstance(x, list):
        if len(x) != len(y):
            return [f"length {path}"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in differences(u, v, f"{path}[{i}]")]
    return [] if x == y else [f"value {path}: {str(x)[:60]!r} vs {str(y)[:60]!r}"]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    wa, wb = (without_timings(json.loads((d / "world.json").read_text())) for d in (a, b))
    diffs = differences(wa, wb)
    ha, hb = (hashlib.sha256((d / "world.book.parquet").read_bytes()).hexdigest() for d in (a, b))
    for d in diffs[:20]:
        print(d)
    print(f"world.json differences (timings excluded): {len(diffs)}; book bytes identical: {ha == hb}")
    return 0 if not diffs and ha == hb else 1


if __name__ == "__main__":
    sys.exit(main())
