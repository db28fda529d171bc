"""File access shared by the detection loaders: folders, image lookup by stem, image headers, text and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from advbench.datasets.detection.records import BoxRecord, line_where
from advbench.datasets.imagefolder import IMAGE_SUFFIXES
from advbench.errors import DatasetError, MissingPathError

#: ``parse(line, where, class_names)`` -> a record, or None for a line without a box.
LineParser = Callable[[str, str, Sequence[str]], BoxRecord | None]


def require_dir(path: Path, hint: str) -> Path:
    """Return ``path`` if it is a folder, else raise MissingPathError ending in ``hint``."""
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise MissingPathError(f"'{path}' {state}; {hint}")
    return path


def image_index(folder: Path) -> dict[str, Path]:
    """Map each image stem in ``folder`` to its file; two images with one stem are an error."""
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in index:
            raise DatasetError(
                f"images '{index[path.stem]}' and '{path}' share the stem '{path.stem}', so annotations cannot be "
                "matched to one of them; rename or remove one"
            )
        index[path.stem] = path
    return index


def label_files(folder: Path, images: dict[str, Path], suffix: str = ".txt") -> dict[str, Path]:
    """Map stems to the ``*suffix`` files in ``folder``; a label file without an image is an error."""
    labels: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*{suffix}")):
        if path.name.startswith("."):
            continue
        if path.stem not in images:
            raise DatasetError(
                f"label file '{path}' has no image '{path.stem}.*' in the images folder; add the image or delete "
                "the label file"
            )
        labels[path.stem] = path
    return labels


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image, read from its header without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return int(img.size[0]), int(img.size[1])
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image file '{path}' ({exc}); fix or delete it") from exc


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, numbered as editors number them; a byte-order mark is dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"'{path}' is not UTF-8 text ({exc}); save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read '{path}' ({exc})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_label_file(
    path: Path,
    parse_line: LineParser,
    class_names: Sequence[str],
    *,
    header: Callable[[str], bool] | None = None,
) -> list[BoxRecord]:
    """Parse every line of a label file; leading lines for which ``header(line)`` is true are skipped."""
    records: list[BoxRecord] = []
    in_header = header is not None
    for lineno, line in enumerate(read_lines(path), start=1):
        if in_header and header is not None and header(line):
            continue
        in_header = False
        record = parse_line(line, line_where(path, lineno), class_names)
        if record is not None:
            records.append(record)
    return records


def load_json(path: Path) -> Any:
    """Parse a JSON file, naming the file and the line of a syntax error."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"'{path}' line {exc.lineno}: invalid JSON ({exc.msg}); fix the file") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"'{path}' is not UTF-8 text ({exc}); save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read '{path}' ({exc})") from exc
