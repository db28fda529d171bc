"""EVD4UAV per-image and per-box metadata: altitude, snow and colour/type attributes.

Files (Sun, Guo et al., "EVD4UAV: An Altitude-Sensitive Benchmark to Evade Vehicle Detection in UAV",
arXiv 2403.05422):

* ``altitude_mapping.txt`` -- one line per image, ``<stem> <altitude>``; the release has 50m, 70m and 90m.
* ``snow_images.txt`` / ``non_snow_images.txt`` -- one image file name (or stem) per line.
* ``attributes/<stem>.txt`` -- *our convention* (where the release stores attributes is unverified): one
  line per box, in the order of the box lines, ``<colour> <type>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from advbench.datasets.detection.files import read_lines
from advbench.datasets.detection.lines import lookup_class
from advbench.datasets.detection.records import line_where
from advbench.datasets.imagefolder import IMAGE_SUFFIXES
from advbench.errors import DatasetError

EVD4UAV_CLASSES = ("Car", "Bus", "Truck")
EVD4UAV_COLOURS = ("Black", "Blue", "Brown", "Gray", "Green", "Red", "Silver", "White", "Yellow", "Unknown")
EVD4UAV_ALTITUDES = ("50m", "70m", "90m")


def image_stem(name: str) -> str:
    """``'a.jpg'`` -> ``'a'``; a name without an image suffix is taken to be a stem already."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def normalise_altitude(text: str) -> str:
    """Altitudes compare case-insensitively and without surrounding blanks: ``' 50M'`` -> ``'50m'``."""
    return text.strip().lower()


def allowed_altitudes(extra: Iterable[str] | None) -> tuple[str, ...]:
    """The release's altitudes plus the user's ``extra`` ones."""
    extra_list = [extra] if isinstance(extra, str) else list(extra or [])
    return tuple(dict.fromkeys([*EVD4UAV_ALTITUDES, *(normalise_altitude(a) for a in extra_list)]))


def read_altitudes(path: Path, allowed: Sequence[str]) -> dict[str, str]:
    """Parse ``altitude_mapping.txt`` into ``{stem: altitude}``; unknown altitudes are errors."""
    result: dict[str, str] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = line_where(path, lineno)
        if len(tokens) != 2:
            raise DatasetError(f"{where}: expected '<image stem> <altitude>' (e.g. 'img_001 50m'), found {len(tokens)} "
                               "tokens")
        stem, altitude = image_stem(tokens[0]), normalise_altitude(tokens[1])
        if altitude not in allowed:
            raise DatasetError(
                f"{where}: unknown altitude '{tokens[1]}'; known altitudes are {', '.join(allowed)} -- fix the line "
                "or pass altitudes=[...] to the loader (or '?altitudes=...' in the spec) to allow more"
            )
        if result.get(stem, altitude) != altitude:
            raise DatasetError(f"{where}: image '{stem}' already has altitude {result[stem]}; keep one line per image")
        result[stem] = altitude
    return result


def read_snow(snow_path: Path, non_snow_path: Path) -> dict[str, bool]:
    """``{stem: True/False}`` from the snow and non-snow lists (either may be missing)."""
    result: dict[str, bool] = {}
    origin: dict[str, str] = {}
    for path, flag in ((snow_path, True), (non_snow_path, False)):
        if not path.is_file():
            continue
        for lineno, line in enumerate(read_lines(path), start=1):
            name = line.strip()
            if not name:
                continue
            stem, where = image_stem(name), line_where(path, lineno)
            if result.get(stem, flag) != flag:
                raise DatasetError(
                    f"{where}: image '{name}' is also listed at {origin[stem]}; an image is either snowy or not, "
                    "delete one of the two lines"
                )
            result[stem], origin[stem] = flag, where
    return result


def read_attributes(path: Path, labels: Sequence[int]) -> tuple[list[str], list[str]]:
    """Parse ``attributes/<stem>.txt`` into per-box colour and type lists, checked against the box labels."""
    colours: list[str] = []
    types: list[str] = []
    numbered = [(n, line) for n, line in enumerate(read_lines(path), start=1) if line.strip()]
    for (lineno, line), label in zip(numbered, labels, strict=False):
        where = line_where(path, lineno)
        tokens = line.split()
        if len(tokens) != 2:
            raise DatasetError(f"{where}: expected '<colour> <type>' (e.g. 'Red Car'), found {len(tokens)} tokens")
        colours.append(EVD4UAV_COLOURS[lookup_class(tokens[0], EVD4UAV_COLOURS, where, what="colour")])
        kind = lookup_class(tokens[1], EVD4UAV_CLASSES, where, what="type")
        if kind != label:
            raise DatasetError(
                f"{where}: type '{tokens[1]}' disagrees with the box's class {EVD4UAV_CLASSES[label]}; the attribute "
                "lines must follow the box lines in order"
            )
        types.append(EVD4UAV_CLASSES[kind])
    if len(numbered) != len(labels):
        extra = len(numbered) > len(labels)
        lineno = numbered[len(labels)][0] if extra else (numbered[-1][0] + 1 if numbered else 1)
        raise DatasetError(
            f"'{path}' line {lineno}: {len(numbered)} attribute lines for {len(labels)} boxes; give one "
            "'<colour> <type>' line per box, in box order"
        )
    return colours, types
