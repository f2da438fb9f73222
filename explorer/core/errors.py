"""Typed exceptions of the compute layer.

Every error a user can cause (a bad parameter, an absurd size, a malformed equation) is an
:class:`ExplorerError` subclass with a one-line message that names the problem; the UI shows
the message, the CLI prints it and exits with code 2.
"""

from __future__ import annotations


class ExplorerError(Exception):
    """Base class of all user-facing errors of Dynamics Explorer."""


class ParameterError(ExplorerError, ValueError):
    """A parameter is unknown, not a number, or outside its allowed range."""


class SizeLimitError(ExplorerError, ValueError):
    """A request would take more memory or work than the configured limit allows."""


class ShapeError(ExplorerError, ValueError):
    """An array has the wrong shape (e.g. an initial state of the wrong dimension)."""


class UnknownSystemError(ExplorerError, KeyError):
    """No system of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown system"


class EquationError(ExplorerError, ValueError):
    """A custom equation is malformed. ``position`` is the 0-based offset of ``token``."""

    def __init__(self, message: str, token: str | None = None, position: int | None = None):
        self.token = token
        self.position = position
        #: 1-based line and column of ``position`` in the text (None when not located)
        self.line: int | None = None
        self.column: int | None = None
        super().__init__(message)
