"""The detection data set registry and the spec-string front door :func:`load_detection_dataset`.

A spec is ``"scheme:/path"`` with optional ``?key=value&key=value`` options, values being comma lists
where the option takes several (``"evd4uav:/data/evd?altitude=50m,70m&snow=false&classes=car,bus"``).
Each option maps to the keyword argument of the same name of the scheme's loader.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from advbench.datasets.catalog import DATASETS
from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import DatasetError
from advbench.spec_query import split_path_query
from advbench.task_names import DETECTION

#: A loader: ``loader(path, **options)`` returns the data set's samples; its keyword-only arguments are
#: the spec options it accepts (see :data:`OPTION_TYPES`).
DetectionLoader = Callable[..., list[DetectionSample]]


#: Detection loaders register in the one data set registry (:data:`advbench.datasets.catalog.DATASETS`) with
#: their task: ``@DATASETS.register("name", task=DETECTION)``.

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    """``'true'/'yes'/'1'/'on'`` -> True, ``'false'/'no'/'0'/'off'`` -> False (case-insensitive)."""
    folded = text.strip().lower()
    if folded in _TRUE | _FALSE:
        return folded in _TRUE
    raise ValueError("expected true or false")


def parse_list(text: str) -> list[str]:
    """``'a, b,c'`` -> ``['a', 'b', 'c']`` (empty items dropped; at least one required)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("expected a comma-separated list")
    return items


#: Converter of every option a spec may carry; a loader accepts the ones it has keyword arguments for.
OPTION_TYPES: dict[str, Callable[[str], Any]] = {
    "altitude": parse_list,
    "altitudes": parse_list,
    "snow": parse_bool,
    "classes": parse_list,
    "masks": parse_bool,
    "clip": parse_bool,
}


def loader_options(loader: DetectionLoader) -> list[str]:
    """The spec options ``loader`` accepts: its keyword-only parameters."""
    params = inspect.signature(loader).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in OPTION_TYPES)


def parse_detection_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """Split ``"scheme:/path?k=v&k=v"`` into ``(scheme, path, options)``, checking the options."""
    if not isinstance(spec, str) or ":" not in spec:
        raise DatasetError(
            f"detection data set spec must look like 'evd4uav:/path/to/data' (known schemes: "
            f"{', '.join(DATASETS.names(task=DETECTION))}), got {spec!r}"
        )
    scheme, _, rest = spec.strip().partition(":")
    scheme = scheme.strip().lower()
    loader = DATASETS.get(scheme, task=DETECTION)
    path, query = split_path_query(rest)
    if not path.strip():
        raise DatasetError(f"detection data set spec '{spec}' has no path; use '{scheme}:/path/to/data'")
    valid = loader_options(loader)
    options: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in query.split("&"))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or key not in valid:
            raise DatasetError(
                f"detection data set spec '{spec}': option '{item}' is not one of "
                f"{', '.join(f'{k}=...' for k in valid) or '(none)'}; separate options with '&'"
            )
        if key in options:
            raise DatasetError(f"detection data set spec '{spec}': option '{key}' is given twice; give it once")
        try:
            options[key] = OPTION_TYPES[key](value)
        except ValueError as exc:
            raise DatasetError(f"detection data set spec '{spec}': option '{key}={value}' is invalid ({exc})") from None
    return scheme, path.strip(), options


def load_detection_dataset(spec: str) -> list[DetectionSample]:
    """Load the detection data set described by ``spec`` (see the module docstring).

    Unknown schemes raise :class:`~advbench.errors.UnknownNameError` listing the known ones; missing
    folders raise :class:`~advbench.errors.MissingPathError`; malformed files raise
    :class:`~advbench.errors.DatasetError` naming the file and line.
    """
    scheme, path, options = parse_detection_spec(spec)
    return DATASETS.get(scheme, task=DETECTION)(path, **options)
