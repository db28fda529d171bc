"""Parsing of data set specs' options: ``key=value`` lists such as the ``n=500,classes=4`` in
``synthetic:n=500,classes=4``, and the ``/path?key=value&key=value`` form of the folder-based sets.

>>> split_path_query("/data/eorssd?size=128&threshold=128")
('/data/eorssd', 'size=128&threshold=128')
>>> split_path_query("/data/eorssd")
('/data/eorssd', '')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from advbench.errors import DatasetError


def split_path_query(arg: str) -> tuple[str, str]:
    """``"/path?a=1&b=2"`` -> ``("/path", "a=1&b=2")``: the path before the last ``?`` and its options
    (``""`` when there is no ``?``).  Every folder-based data set spec (``imagefolder``, ``eorssd``, ``nyuv2``,
    the detection sets) is split here; :func:`parse_options` reads the options."""
    path, sep, query = arg.rpartition("?")
    if not sep:
        return arg, ""
    return path, query


def parse_options(text: str | None, schema: Mapping[str, Callable[[str], Any]], *, where: str) -> dict[str, Any]:
    """Parse ``"k=v,k=v"`` (or ``"k=v&k=v"``) into a dict, converting each value with ``schema[k]``.

    ``where`` names the data set in error messages.  Unknown keys, duplicates, items without ``=``
    and values the converter rejects raise :class:`DatasetError` naming the offending option.
    """
    result: dict[str, Any] = {}
    if text is None or not text.strip():
        return result
    valid = ", ".join(sorted(schema)) or "(none)"
    for item in text.replace("&", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise DatasetError(f"{where}: option '{item}' is not of the form key=value; valid options: {valid}")
        if key not in schema:
            raise DatasetError(f"{where}: unknown option '{key}'; valid options: {valid}")
        if key in result:
            raise DatasetError(f"{where}: option '{key}' is given twice; give it once")
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
