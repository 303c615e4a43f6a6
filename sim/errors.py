"""Errors a user can act on: bad input named by file, row and column, in one line."""

from __future__ import annotations

import re
from typing import Callable

_KEY_REF = re.compile(r"\{key:(\w+)\}")  # another setting named inside a ConfigError message


class ClvError(Exception):
    """Base class for errors shown to the user as one line and a non-zero exit."""


class HistoryError(ClvError, ValueError):
    """Bad input in a history file. str() is one line: "file, row R, column 'c': message".

    `row` is the 1-based data row as a spreadsheet user counts it (header is row 1, so the
    first data row is row 2) for CSV files; None when the problem is the whole file/column.
    """

    def __init__(self, file: str, row: int | None, column: str | None, message: str):
        if row is not None and hasattr(file, "locate"):  # a table of many parts: name the part and its row
            file, row = file.locate(row)
        self.file, self.row, self.column, self.message = str(file), row, column, message
        where = [str(file)]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(", ".join(where) + ": " + " ".join(str(message).split()))

    def __reduce__(self):  # pickled with its parts, so it crosses to and from Ray workers intact
        return (self.__class__, (self.file, self.row, self.column, self.message))


class ConfigError(ClvError, ValueError):
    """Bad option or configuration value (world file, settings, CLI arguments).

        `ConfigError(message)`, or `ConfigError(key, message, value=...)` when the error is about one
        setting. `key` is the setting's name in the code (`clip`, `n_boot`, `holdout_end`); `value` the
        offending value as it should be shown; `message` what is wrong and what to do, where another
        setting is named as `{key:calibration_end}` (a message that starts with its own key that way
    is a whole sentence: no key is put before it). The core never words a key for a front end: each
        renders keys its own way with `about(render)`, e.g. `--clip 0.0: must be > 0` on the command
        line and `ope.clip 0.0: must be > 0` in a config file. str() shows the keys as they are.
    """

    def __init__(self, key_or_message: str, message: str | None = None, *, value: object = None):
        if message is None:
            if value is not None:
                raise TypeError("ConfigError(key, message, value=...) needs a message")
            key, message = None, key_or_message
        else:
            key = key_or_message
        self.key, self.message = key, str(message)
        self.value = None if value is None else str(value)
        super().__init__(self.about())

    def __reduce__(self):  # pickled with its key and value, so it crosses to and from Ray workers intact
        return (_config_error, (self.__class__, self.key, self.message, self.value))

    def about(self, render: Callable[[str], str] = str) -> str:
        """The one-line message, every setting named by `render(key)` (the front end's name for it)."""
        text = _KEY_REF.sub(lambda m: render(m.group(1)), self.message)
        if self.key is None or self.message.startswith("{key:%s}" % self.key):  # a sentence led by its key
            return text
        head = render(self.key) if self.value is None else f"{render(self.key)} {self.value}"
        return f"{head}: {text}"


def _config_error(cls: type, key: str | None, message: str, value: str | None) -> ConfigError:
    return cls(message) if key is None else cls(key, message, value=value)
