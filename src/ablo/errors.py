"""User errors: input that the person running ablo can fix (a name, a value, a file, a folder).

Every such error is a :class:`UserError`; the command line prints its message as one line and
exits with code 2. Any other exception (a ``ValueError`` raised by a bug, say) keeps its
traceback. Subclasses also derive from the built-in type their callers expect (``ValueError``,
``OSError``), so that ``except ValueError`` in library code keeps working.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input from the user, reported as one line that names the cause and the fix."""


class DataError(UserError, ValueError):
    """A dataset file that is missing, corrupt, truncated or not what the loader reads."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a mistyped ``name`` (difflib's ratio
    >= 0.6), else ""."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
