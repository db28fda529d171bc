"""The one parser of spec options: the ``?key=value&key=value`` of ``timm:resnet18?weights=ck.pth`` and
``imagefolder:/data/val?max_images=500``, and the ``n=500,classes=4`` of ``synthetic:n=500,classes=4``.

Model specs (:mod:`advbench.models.specs`) read the values as JSON; data set specs
(:func:`advbench.datasets.options.parse_options`) convert them with a per-option schema.  Both split and
check the text here, so an option is written, and refused, the same way everywhere.

>>> split_path_query("/data/eorssd?size=128&threshold=128")
('/data/eorssd', 'size=128&threshold=128')
>>> split_path_query("/data/eorssd")
('/data/eorssd', '')
>>> query_pairs("a=1&b=x, c = 2", where="spec")
[('a', '1'), ('b', 'x'), ('c', '2')]
"""

from __future__ import annotations

from collections.abc import Collection

from advbench.errors import AdvbenchError, ConfigError


def split_path_query(text: str, *, at: str = "last") -> tuple[str, str]:
    """``"/path?a=1&b=2"`` -> ``("/path", "a=1&b=2")`` (``""`` when there is no ``?``).  ``at="last"`` splits at the
    last ``?`` (a folder spec: the path may hold one), ``at="first"`` at the first (a model spec: the options
    may hold a path with one)."""
    path, sep, query = text.rpartition("?") if at == "last" else text.partition("?")
    if not sep:
        return text, ""
    return path, query


def query_pairs(query: str | None, *, where: str, error: type[AdvbenchError] = ConfigError,
                valid: Collection[str] | None = None) -> list[tuple[str, str]]:
    """``"k=v&k=v"`` (or with commas) -> ``[(k, v), ...]``, keys and values stripped, in order.

    An item without ``=``, a key given twice and (when ``valid`` is given) a key outside ``valid`` raise
    ``error`` naming ``where`` and the option."""
    listed = "" if valid is None else f"; valid options: {', '.join(sorted(valid)) or '(none)'}"
    pairs: list[tuple[str, str]] = []
    for item in (query or "").replace("&", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise error(f"{where}: option '{item}' is not of the form key=value{listed}")
        if valid is not None and key not in valid:
            raise error(f"{where}: unknown option '{key}'{listed}")
        if any(key == seen for seen, _ in pairs):
            raise error(f"{where}: option '{key}' is given twice; give it once")
        pairs.append((key, value))
    return pairs
