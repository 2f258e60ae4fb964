"""Errors raised by the offline-RL package."""
from __future__ import annotations


class JourneyFormatError(ValueError):
    """A journey table does not follow the documented format.

    The message names the offending column and, where it applies, the first offending row
    (0-based data row, i.e. not counting the header line).
    """

    def __init__(self, message: str, column: str | None = None, row: int | None = None):
        super().__init__(message)
        self.column = column
        self.row = row
