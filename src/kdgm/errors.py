"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (an unknown experiment, a bad ``--set`` value, a missing
data folder, a corrupt checkpoint). The CLI prints its message as one line on stderr and exits with code 2;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by the user's input; the message must be one line that says how to fix it."""

    exit_code = 2


class NonFiniteError(UserError):
    """Training produced a non-finite loss or weights; nothing non-finite was saved (usually: lower ``lr``, or set
    ``grad_clip``)."""
