"""Data set specs' options: ``key=value`` lists such as the ``n=500,classes=4`` in ``synthetic:n=500,classes=4``,
and the ``/path?key=value&key=value`` form of the folder-based sets, split and checked by the one spec parser
(:mod:`advbench.spec_query`) and converted here with a per-option schema.

>>> parse_options("n=3&size=8", {"n": int, "size": int}, where="synthetic")
{'n': 3, 'size': 8}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from advbench.errors import DatasetError
from advbench.spec_query import query_pairs


def parse_options(text: str | None, schema: Mapping[str, Callable[[str], Any]], *, where: str) -> dict[str, Any]:
    """Parse ``"k=v,k=v"`` (or ``"k=v&k=v"``) into a dict, converting each value with ``schema[k]``.

    ``where`` names the data set in error messages.  Unknown keys, duplicates, items without ``=``
    and values the converter rejects raise :class:`DatasetError` naming the offending option.
    """
    result: dict[str, Any] = {}
    for key, value in query_pairs(text, where=where, error=DatasetError, valid=schema):
        try:
            result[key] = schema[key](value)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: option '{key}' has invalid value '{value}' ({exc})") from None
    return result


def require_range(where: str, key: str, value: int, lo: int, hi: int) -> int:
    """Return ``value`` if ``lo <= value <= hi``, else raise :class:`DatasetError` naming option ``key``."""
    if not lo <= value <= hi:
        raise DatasetError(f"{where}: option '{key}' must be between {lo} and {hi}, got {value}")
    return value
