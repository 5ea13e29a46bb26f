"""User-facing errors.

Anything a user can cause (a bad file, a missing column, a bad flag, an unknown model path) raises
:class:`InstructRLError` with one message naming what and where. The CLI prints it without a
traceback and exits with status 2.
"""


def first_line_of(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a one-line error quotes
    of a library's own, often multi-line, message."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class InstructRLError(Exception):
    """An error caused by user input; its message says what is wrong, where, and what to do."""


class DataError(InstructRLError):
    """A data file or record is malformed."""


class ConfigError(InstructRLError):
    """A configuration value or flag is invalid."""


class ModelLoadError(InstructRLError):
    """A model or tokenizer could not be loaded."""
