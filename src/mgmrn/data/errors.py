"""The one exception type of the data package."""

from __future__ import annotations

from mgmrn.errors import MgmrnError


class DataError(MgmrnError, ValueError):
    """Unusable data; the message names the file, the line or field, and what was expected."""
