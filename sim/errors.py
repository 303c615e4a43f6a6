"""Errors a user can act on: bad input named by file, row and column, in one line."""
from __future__ import annotations


class ClvError(Exception):
    """Base class for errors shown to the user as one line and a non-zero exit."""


class HistoryError(ClvError, ValueError):
    """Bad input in a history file. str() is one line: "file, row R, column 'c': message".

    `row` is the 1-based data row as a spreadsheet user counts it (header is row 1, so the
    first data row is row 2) for CSV files; None when the problem is the whole file/column.
    """

    def __init__(self, file: str, row: int | None, column: str | None, message: str):
        self.file, self.row, self.column, self.message = file, row, column, message
        where = [str(file)]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(", ".join(where) + ": " + " ".join(str(message).split()))


class ConfigError(ClvError, ValueError):
    """Bad option or configuration (world file, CLI arguments)."""
