"""Bundled datasets by name: "cdnow" (the CDNOW master file) and "bank" (synthetic, seed 7)."""

from __future__ import annotations

from .errors import ConfigError
from .history import History

NAMES = ("cdnow", "bank")


def load_dataset(name: str) -> History:
    if name == "cdnow":
        from .history import load_cdnow

        return load_cdnow()
    if name == "bank":
        from .synthetic import BankConfig, generate_bank_history

        return generate_bank_history(BankConfig())[0]
    raise ConfigError(f"unknown dataset {name!r}; bundled: {', '.join(NAMES)}")
