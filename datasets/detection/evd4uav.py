"""``evd4uav:/path``: the EVD4UAV aerial vehicle data set (Sun, Guo et al., arXiv 2403.05422).

Layout (files other than ``images/`` and one of ``bb/`` / ``rotated_bb/`` are optional)::

    images/<stem>.jpg            top-view UAV images (1920x1080 in the release)
    bb/<stem>.txt                class_id x_min y_min x_max y_max  (pixels; 0 Car, 1 Bus, 2 Truck)
    rotated_bb/<stem>.txt        rotated boxes, encoding sniffed per line (see lines.parse_evd4uav_line)
    altitude_mapping.txt         <stem> <50m|70m|90m>
    snow_images.txt, non_snow_images.txt
    attributes/<stem>.txt        <colour> <type> per box            (our convention, see evd4uav_meta)
    masks/<stem>.png|.json       instance map or list of COCO segmentations per box (our convention)

When both ``bb/`` and ``rotated_bb/`` files exist for an image they must list the same vehicles in the
same order: the horizontal boxes come from ``bb/`` and the rotated ones from ``rotated_bb/``.  With only
one of them, horizontal boxes come from it (a rotated box's are the hull of its corners) and rotated
boxes only from ``rotated_bb/``.  An image without any label file has no vehicles.

Masks are read only with ``masks=True``: a 1920x1080 image with 40 vehicles holds 80 MB of bool masks.
A mask PNG's pixel value ``k`` marks the ``k``-th box (0 = background); a mask JSON is a list with one
COCO segmentation (polygons or RLE) per box.  Where the release keeps masks is unverified.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from advbench.datasets.catalog import DATASETS
from advbench.datasets.detection.evd4uav_meta import (
    EVD4UAV_CLASSES,
    allowed_altitudes,
    normalise_altitude,
    read_altitudes,
    read_attributes,
    read_snow,
)
from advbench.datasets.detection.files import (
    image_index,
    image_size,
    label_files,
    load_json,
    parse_label_file,
    require_dir,
)
from advbench.datasets.detection.filters import class_filter, keep_classes
from advbench.datasets.detection.lines import parse_evd4uav_line, with_upright_rbox
from advbench.datasets.detection.masks import instance_map_masks, segmentation_mask
from advbench.datasets.detection.records import BoxRecord, check_in_image, stack_records
from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import DatasetError, MissingPathError
from advbench.task_names import DETECTION


def _pair_boxes(bb: list[BoxRecord] | None, rotated: list[BoxRecord] | None, bb_path: Path | None) -> list[BoxRecord]:
    """Combine the ``bb/`` and ``rotated_bb/`` records of one image (see the module docstring)."""
    if rotated is None:
        return [BoxRecord(r.label, r.xyxy, None, r.where) for r in bb or []]
    rotated = [with_upright_rbox(r) for r in rotated]
    if bb is None:
        return rotated
    if len(bb) != len(rotated):
        where = rotated[len(bb)].where if len(rotated) > len(bb) else bb[len(rotated)].where
        raise DatasetError(
            f"{where}: '{bb_path}' has {len(bb)} boxes but its rotated_bb file has {len(rotated)}; both must list the "
            "same vehicles in the same order"
        )
    for b, r in zip(bb, rotated, strict=True):
        if b.label != r.label:
            raise DatasetError(
                f"{r.where}: class {EVD4UAV_CLASSES[r.label]} disagrees with {b.where} ({EVD4UAV_CLASSES[b.label]}); "
                "both files must list the same vehicles in the same order"
            )
    return [BoxRecord(b.label, b.xyxy, r.rbox, b.where) for b, r in zip(bb, rotated, strict=True)]


def _read_boxes(path: Path, size: tuple[int, int], clip: bool) -> list[BoxRecord]:
    return [check_in_image(r, size, clip=clip) for r in parse_label_file(path, parse_evd4uav_line, EVD4UAV_CLASSES)]


def _read_masks(mask_dir: Path, stem: str, n: int, size: tuple[int, int]) -> torch.Tensor | None:
    png, js = mask_dir / f"{stem}.png", mask_dir / f"{stem}.json"
    if png.is_file():
        return instance_map_masks(png, n, size)
    if not js.is_file():
        return None
    segs = load_json(js)
    if not isinstance(segs, list) or len(segs) != n:
        count = len(segs) if isinstance(segs, list) else "no list of"
        raise DatasetError(f"'{js}': {count} segmentations for {n} boxes; give a JSON list with one per box")
    arrays = [segmentation_mask(s, size, f"'{js}' entry {i}") for i, s in enumerate(segs)]
    w, h = size
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, h, w), dtype=torch.bool)


@DATASETS.register("evd4uav", task=DETECTION)
def load_evd4uav(
    path: str | Path,
    *,
    altitude: Iterable[str] | str | None = None,
    snow: bool | None = None,
    classes: Iterable[str | int] | str | None = None,
    altitudes: Iterable[str] | None = None,
    masks: bool = False,
    clip: bool = False,
) -> list[DetectionSample]:
    """Load an EVD4UAV folder (layout in the module docstring), sorted by image stem.

    Filters: ``altitude`` keeps images at those altitudes, ``snow`` keeps snowy (True) or snow-free (False)
    images -- images whose altitude or snow flag is unknown are dropped by the matching filter --, and
    ``classes`` (names or ids) keeps only those boxes.  ``altitudes`` adds allowed altitudes beyond
    50m/70m/90m.  ``masks=True`` reads instance masks; ``clip=True`` clips boxes that stick out of the image.
    Label files of images dropped by the altitude or snow filter are not read.
    """
    root = require_dir(Path(path).expanduser(), "give the EVD4UAV folder that holds images/ and bb/")
    images = image_index(require_dir(root / "images", f"put the images of '{root}' in an images/ folder"))
    label_dirs = {name: root / name for name in ("bb", "rotated_bb") if (root / name).is_dir()}
    if not label_dirs:
        raise MissingPathError(f"'{root}' has neither a bb/ nor a rotated_bb/ folder; add the box label files")
    labels = {name: label_files(folder, images) for name, folder in label_dirs.items()}
    allowed = allowed_altitudes(altitudes)
    mapping_path = root / "altitude_mapping.txt"
    alt_map = read_altitudes(mapping_path, allowed) if mapping_path.is_file() else {}
    snow_map = read_snow(root / "snow_images.txt", root / "non_snow_images.txt")
    wanted_alt = _altitude_filter(altitude, allowed, mapping_path)
    if snow is not None and not (root / "snow_images.txt").is_file() and not (root / "non_snow_images.txt").is_file():
        raise MissingPathError(f"the snow filter needs '{root}/snow_images.txt' or 'non_snow_images.txt'; add them")
    keep_labels = class_filter(classes, EVD4UAV_CLASSES)
    if masks:
        require_dir(root / "masks", "masks=True needs a masks/ folder of <stem>.png or <stem>.json files")
    samples = []
    for stem, image_path in images.items():
        alt, is_snow = alt_map.get(stem), snow_map.get(stem)
        if (wanted_alt is not None and alt not in wanted_alt) or (snow is not None and is_snow is not snow):
            continue
        size = image_size(image_path)
        parsed = {name: _read_boxes(files[stem], size, clip) for name, files in labels.items() if stem in files}
        records = _pair_boxes(parsed.get("bb"), parsed.get("rotated_bb"), labels.get("bb", {}).get(stem))
        boxes, label_t, rotated = stack_records(records)
        attr_path = root / "attributes" / f"{stem}.txt"
        colours, types = read_attributes(attr_path, label_t.tolist()) if attr_path.is_file() else (None, None)
        sample = DetectionSample(
            image_id=stem,
            image_path=image_path,
            image_size=size,
            boxes=boxes,
            labels=label_t,
            class_names=EVD4UAV_CLASSES,
            rotated_boxes=rotated,
            masks=_read_masks(root / "masks", stem, len(records), size) if masks else None,
            colours=colours,
            types=types,
            altitude=alt,
            snow=is_snow,
        )
        samples.append(keep_classes(sample, keep_labels))
    return samples


def _altitude_filter(altitude: Iterable[str] | str | None, allowed: tuple[str, ...], mapping: Path) -> set[str] | None:
    if altitude is None:
        return None
    wanted = {normalise_altitude(a) for a in ([altitude] if isinstance(altitude, str) else altitude)}
    unknown = sorted(wanted - set(allowed))
    if unknown:
        raise DatasetError(
            f"unknown altitude {', '.join(unknown)} in the altitude filter; known altitudes are {', '.join(allowed)} "
            "(pass altitudes=[...] to allow more)"
        )
    if not mapping.is_file():
        raise MissingPathError(f"the altitude filter needs '{mapping}'; add it (lines '<stem> <altitude>')")
    return wanted
