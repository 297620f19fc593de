"""mgmrn's own errors: problems the user can fix, each said by ``mgmrn`` in one line (exit 2).

Any other exception is a bug: the command line prints its traceback and exits 1, so that it can
be reported.
"""

from __future__ import annotations


class MgmrnError(Exception):
    """Base of the errors whose message names what was wrong and what to change."""


class UsageError(MgmrnError, ValueError):
    """A value given to a command or a function that it cannot take (``--top-k 0``, an unknown
    class group)."""
