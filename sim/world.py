"""WorldModel: everything calibrated about a customer book, saved as versioned JSON (no pickle).

A world holds per-segment behaviour (activity/dropout, spend, product adoption), the
lifecycle-stage rules, the intervention-response tables (action x stage), the economics and
the action catalogue. The customers themselves (the "book" the digital twins start from) are
a Parquet file beside the JSON, named in `book_file`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_json
from .catalogue import STAGES, ActionCatalogue, Economics
from .errors import ConfigError

SCHEMA_VERSION = 1
# stage by (recency bucket, tenure bucket): recency 0 = recent, 1 = dormant, 2 = churned;
# tenure 0 = new, 1 = growth, 2 = mature
_STAGE_LUT = np.array([0, 1, 2, 3, 3, 3, 4, 4, 4], dtype=np.int8)
ACTIVITY_MODELS = ("pareto_nbd", "bg_nbd")


@dataclass
class StageRules:
    """Transparent lifecycle-stage rules on observable behaviour, all in periods.

    churned   if recency >= churned_after
    dormancy  elif recency >= dormant_after
    new       elif tenure < new_periods
    maturity  elif tenure >= mature_periods
    growth    otherwise
    (recency = periods since the last transaction, or since birth when there was none)
    """

    new_periods: int = 13
    mature_periods: int = 52
    dormant_after: int = 8
    churned_after: int = 26

    def assign(self, tenure: np.ndarray, recency: np.ndarray) -> np.ndarray:
        """Stage index (into STAGES) for arrays of tenure and recency (vectorised)."""
        # bucket each rule's variable, then one table lookup (no masked writes: this runs every step)
        t_b = (np.asarray(tenure) >= self.new_periods).view(np.int8) + (np.asarray(tenure) >= self.mature_periods)
        r_b = (np.asarray(recency) >= self.dormant_after).view(np.int8) + (np.asarray(recency) >= self.churned_after)
        if self.mature_periods < self.new_periods:  # degenerate rules: keep the documented order
            t_b = np.where(np.asarray(tenure) < self.new_periods, 0, t_b).astype(np.int8)
        return _STAGE_LUT[r_b * 3 + t_b]


@dataclass
class SegmentModel:
    """Behaviour of one segment: BTYD activity/dropout, Gamma-Gamma spend, product hazards."""

    name: str
    n_customers: int
    share: float
    activity: dict[str, float]  # {"r","alpha","s","beta"} (pareto_nbd) or {"r","alpha","a","b"}
    spend: dict[str, float]  # Gamma-Gamma {"p","q","gamma"}
    product_adoption: list[list[float]]  # [stage][product] hazard per period (not held -> open)
    product_close: list[list[float]]  # [stage][product] hazard per period (held -> close), by stage alone
    initial_products: list[float]  # [product] probability a new customer holds it at signup


@dataclass
class ResponseModel:
    """Intervention response, indexed [action][stage]; action 0 ("none") is all zeros.

    activity_lift: relative lift of the transaction rate while the effect lasts
    dropout_reduction: relative reduction of the dropout hazard while the effect lasts (0..1)
    adoption_uplift: relative uplift of the adoption hazard of the action's target product
        (all products when it has none) while the effect lasts
    reactivation: probability that a contact brings a customer who has silently left back
    duration: periods an effect lasts (per action)
    opt_out: probability a contact makes the customer opt out of that channel (per channel)
    fatigue: effects are multiplied by fatigue ** recent_contacts (decayed contact count)
    fatigue_half_life: half-life, in periods, of the recent-contact count
    min_gap: minimum periods between two contacts (contact rule used for masks)
    source: where each table came from: "data", "prior" or "blend" per [action][stage] for
        activity_lift, dropout_reduction, adoption_uplift; "prior" for the rest unless estimated
    se: standard errors of the data estimates (same shapes), NaN where there were none
    """

    activity_lift: list[list[float]]
    dropout_reduction: list[list[float]]
    adoption_uplift: list[list[float]]
    reactivation: list[list[float]]
    duration: list[int]
    opt_out: dict[str, float]
    fatigue: float = 0.7
    fatigue_half_life: float = 4.0
    min_gap: int = 2
    source: dict[str, Any] = field(default_factory=dict)
    se: dict[str, Any] = field(default_factory=dict)

    @property
    def contact_decay(self) -> float:
        """Per-period factor of the recent-contact count (from fatigue_half_life)."""
        return float(0.5 ** (1.0 / max(self.fatigue_half_life, 1e-9)))


@dataclass
class WorldModel:
    """A calibrated customer world. Build with `sim.calibrate`, save/load with JSON."""

    catalogue: ActionCatalogue
    economics: Economics
    products: list[str]
    segments: list[SegmentModel]
    segmentation: dict[str, Any]
    stage_rules: StageRules
    response: ResponseModel
    activity_model: str = "pareto_nbd"
    calibration_end: str | None = None
    seasonality: list[float] | None = None  # 53 multipliers by ISO week, or None
    assumptions: list[str] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    book_file: str | None = None
    schema_version: int = SCHEMA_VERSION

    # ---- derived helpers -------------------------------------------------------------
    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES

    @property
    def n_actions(self) -> int:
        return len(self.catalogue)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "activity_model": self.activity_model,
            "calibration_end": self.calibration_end,
            "economics": self.economics.to_dict(),
            "catalogue": self.catalogue.to_list(),
            "products": list(self.products),
            "stages": list(STAGES),
            "segments": [asdict(s) for s in self.segments],
            "segmentation": self.segmentation,
            "stage_rules": asdict(self.stage_rules),
            "response": asdict(self.response),
            "seasonality": self.seasonality,
            "assumptions": list(self.assumptions),
            "fit": self.fit,
            "source": self.source,
            "book_file": self.book_file,
        }

    @property
    def customer_id_type(self) -> str:
        """How the history gave its customer ids ("integer" or "text"; sim.history.customer_id_type):
        outputs a user loads give them back that way."""
        return (self.source.get("report") or {}).get("customer_id_type", "text")

    def hash(self) -> str:
        """Content hash (sha256 of the canonical JSON), used to tie results to a world. The fit's
        timings ("seconds") and the history's folder are left out: the same history and seed give
        the same hash, wherever the history lies."""
        d = self.to_dict()
        d["fit"] = without_timings(d.get("fit"))
        # content, not location: a history folder moved or copied elsewhere gives the same world
        d["source"] = {k: v for k, v in (d.get("source") or {}).items() if k != "history"}
        blob = json.dumps(_clean(d), sort_keys=True, allow_nan=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldModel":
        ver = d.get("schema_version")
        if ver is None:
            raise ConfigError("no schema_version: not a world written by `clv calibrate`; pass the .json it wrote")
        if ver != SCHEMA_VERSION:
            raise ConfigError(
                f"world schema_version {ver!r} is not supported (this clv-engine reads "
                f"{SCHEMA_VERSION}); recalibrate with `clv calibrate`"
            )
        if d.get("activity_model") not in ACTIVITY_MODELS:
            raise ConfigError(f"unknown activity_model {d.get('activity_model')!r}; recalibrate with `clv calibrate`")
        # a hand-edited or damaged world: refused here, before a command loops or crashes on it
        if not isinstance(d.get("segments"), list) or not d["segments"]:
            raise ConfigError("segments: a world needs at least one segment; recalibrate with `clv calibrate`")
        names = [a.get("name") for a in d.get("catalogue") or [] if isinstance(a, dict)]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError(
                f"catalogue: the action {str(dup)[:80]!r} is given twice; recalibrate with `clv calibrate`"
            )
        return cls(
            catalogue=ActionCatalogue.from_list(d["catalogue"]),
            economics=Economics(**d["economics"]),
            products=list(d["products"]),
            segments=[SegmentModel(**s) for s in d["segments"]],
            segmentation=d["segmentation"],
            stage_rules=StageRules(**d["stage_rules"]),
            response=ResponseModel(**d["response"]),
            activity_model=d["activity_model"],
            calibration_end=d.get("calibration_end"),
            seasonality=d.get("seasonality"),
            assumptions=list(d.get("assumptions", [])),
            fit=d.get("fit", {}),
            source=d.get("source", {}),
            book_file=d.get("book_file"),
            schema_version=ver,
        )

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, _clean(self.to_dict()))

    def save_with_book(self, path: str | Path, book) -> Path:
        """Write the world JSON and its book (NAME.book.parquet beside it; `book_file` is set to
        it). The world, the file users point to, is renamed into place last, after its book.
        Returns the book's path."""
        from .atomic import atomic_path

        path = Path(path)
        self.book_file = path.name.removesuffix(".json") + ".book.parquet"
        book_path = path.parent / self.book_file
        with atomic_path(path) as tmp_world, atomic_path(book_path) as tmp_book:
            book.to_parquet(tmp_book, index=False)
            self.save(tmp_world)
        return book_path

    @classmethod
    def load(cls, path: str | Path) -> "WorldModel":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: world file not found; create one with `clv calibrate`") from None
        except IsADirectoryError:
            raise ConfigError(
                f"{path}: is a folder, not a world JSON file; pass the .json that `clv calibrate` wrote"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{path}: not a world JSON file ({type(e).__name__}); pass the .json that `clv calibrate` wrote"
            ) from None
        if not isinstance(d, dict):
            raise ConfigError(
                f"{path}: not a world JSON file (a {type(d).__name__}, not an object); "
                "pass the .json that `clv calibrate` wrote"
            )
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"{path}: world file is missing or has a bad field ({str(e)[:200]}); recalibrate with `clv calibrate`"
            ) from None

    def book_path(self, world_path: str | Path) -> Path | None:
        if not self.book_file:
            return None
        return Path(world_path).parent / self.book_file

    def read_book(self, world_path: str | Path):
        """The world's book of digital twins (the Parquet beside its JSON) as a DataFrame, or None
        when the world has none or the file is not there."""
        bp = self.book_path(world_path)
        if bp is None or not bp.is_file():
            return None
        return self.check_book(read_book_file(bp), bp.name)

    def check_book(self, book, name: str = "the book"):
        """`book` after checking what the simulator reads from it (columns, segment codes, posterior
        parameters): a hand-edited or truncated book is one ConfigError naming the file, the row
        and the column, not an error deep in a simulation."""
        import numpy as np

        from .errors import ConfigError

        need = ("customer_id", "segment", "tenure", "recency", "frequency", "monetary") + BOOK_POSTERIOR_COLUMNS
        missing = [c for c in need if c not in book.columns]
        if missing:
            raise ConfigError(
                f"{name}: missing column {missing[0]!r} (a book has {', '.join(need)}, ...); recalibrate with `clv calibrate`"
            )
        seg = book["segment"].to_numpy()
        checks = [
            ("segment", ~np.isin(seg, np.arange(len(self.segments))), f"a segment code in 0..{len(self.segments) - 1}")
        ]
        for c in BOOK_POSTERIOR_COLUMNS + ("tenure", "recency", "frequency", "monetary"):
            v = np.asarray(book[c], dtype=np.float64) if np.issubdtype(book[c].dtype, np.number) else None
            if v is None:
                checks.append((c, np.ones(len(book), bool), "a number"))
                continue
            bad = ~np.isfinite(v) | (v < 0)
            if c == "p_alive":
                bad |= v > 1
            elif c.endswith(("_shape", "_rate")):
                bad |= v <= 0
            checks.append((c, bad, "a probability in [0, 1]" if c == "p_alive" else "a finite number >= 0"))
        for col, bad, want in checks:
            if bad.any():
                i = int(np.argmax(bad))
                raise ConfigError(
                    f"{name}, row {i + 1}, column {col!r}: {repr(book[col].iloc[i])[:40]} is not {want}; "
                    "recalibrate with `clv calibrate`"
                )
        return book


BOOK_POSTERIOR_COLUMNS = ("p_alive", "lam_shape", "lam_rate", "mu_shape", "mu_rate", "nu_shape", "nu_rate")


def read_book_file(path):
    """A book's Parquet file as a DataFrame; a file that is not one is a ConfigError naming it."""
    import pandas as pd

    from .errors import ConfigError

    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a damaged file
        raise ConfigError(
            f"{Path(path).name}: not a readable Parquet book ({type(e).__name__}); recalibrate with `clv calibrate`"
        ) from None


def without_timings(obj: Any) -> Any:
    """`obj` without its "seconds" keys (wall-clock timings), at any depth."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


_clean = json_safe  # the name the world's own methods use
