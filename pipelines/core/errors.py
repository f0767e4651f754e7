"""Expected failures: they carry a message for a person and an exit code, never a traceback."""

from __future__ import annotations


class RecflowError(Exception):
    """A failure the user can act on (bad input, bad config). Exit code 2 by default."""

    exit_code = 2


class InputError(RecflowError):
    """An input file is missing, unreadable, corrupt, or of the wrong shape."""


class BatchRejected(RecflowError):
    """A data batch failed validation; it was quarantined and nothing downstream may run."""

    exit_code = 1


class ImmutableDataError(RecflowError):
    """An attempt to change raw data that already exists with other content."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: what a
    one-line error message says of a library's error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
