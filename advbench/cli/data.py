"""``advbench data``: inspect, export and generate detection data sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from advbench.cli.app import app
from advbench.cli.options import err, out

data_app = typer.Typer(no_args_is_help=True, help="Inspect, export and generate detection data sets.")
app.add_typer(data_app, name="data")


DETECTION_SPEC_HELP = "evd4uav:/path[?altitude=50m&snow=false], dota:/path, visdrone:/path or coco:/ann.json"


def _count_table(title: str, header: str, counts: dict[str, int], unit: str) -> Table:
    """One row per key with its count and share of the total."""
    total = sum(counts.values())
    table = Table(header, unit, "share", title=title)
    for name, count in counts.items():
        table.add_row(name, str(count), f"{count / total:.1%}" if total else "-")
    return table


@data_app.command("inspect")
def data_inspect(
    spec: str = typer.Argument(..., help=DETECTION_SPEC_HELP),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Count images and boxes per class, altitude, colour, type, snow flag and image size."""
    from advbench.datasets.detection import inspect_dataset, load_detection_dataset

    stats = inspect_dataset(load_detection_dataset(spec))
    if as_json:
        sys.stdout.write(json.dumps({"spec": spec, **stats}) + "\n")
        return
    per_image = stats["boxes_per_image"]
    overview = Table("images", "boxes", "boxes per image (min / mean / max)", "with rotated boxes", "with masks",
                     title=spec)
    overview.add_row(str(stats["images"]), str(stats["boxes"]),
                     f"{per_image['min']} / {per_image['mean']:.1f} / {per_image['max']}",
                     str(stats["with_rotated_boxes"]), str(stats["with_masks"]))
    out.print(overview)
    out.print(_count_table("classes", "class", stats["classes"], "boxes"))
    altitudes = Table("altitude", "images", "boxes", title="altitudes")
    for name, row in stats["altitudes"].items():
        altitudes.add_row(name, str(row["images"]), str(row["boxes"]))
    out.print(altitudes)
    out.print(_count_table("colours", "colour", stats["colours"], "boxes"))
    out.print(_count_table("types", "type", stats["types"], "boxes"))
    out.print(_count_table("snow", "snow", stats["snow"], "images"))
    out.print(_count_table("image sizes", "width x height", stats["image_sizes"], "images"))


@data_app.command("export")
def data_export(
    spec: str = typer.Argument(..., help=DETECTION_SPEC_HELP),
    coco: Path = typer.Option(..., "--coco", help="the COCO JSON file to write (written atomically)"),
) -> None:
    """Write a detection data set as one COCO JSON file that `coco:FILE` reads back."""
    from advbench.datasets.detection import export_coco, load_detection_dataset
    from advbench.errors import DatasetError

    samples = load_detection_dataset(spec)
    if not samples:
        raise DatasetError(f"{spec} has no images (after its filters); nothing to export")
    path = export_coco(samples, coco)
    boxes = sum(len(s) for s in samples)
    err.print(f"wrote {path}: {len(samples)} images, {boxes} boxes, {len(samples[0].class_names)} categories "
              f"(read it back with coco:{path})", highlight=False)


@data_app.command("generate-aerial")
def data_generate_aerial(
    out_dir: Path = typer.Argument(..., help="a new or empty folder"),
    n_images: int = typer.Option(30, "--n-images"),
    width: int = typer.Option(256, "--width"),
    height: int = typer.Option(192, "--height"),
    seed: int = typer.Option(0, "--seed", help="the same seed writes byte-identical files"),
    snow_fraction: float = typer.Option(0.2, "--snow-fraction", help="share of snowy scenes"),
) -> None:
    """Write synthetic top-view road scenes in the EVD4UAV layout (test and demo data, not real imagery)."""
    from advbench.datasets.detection import generate_aerial_dataset

    root = generate_aerial_dataset(out_dir, n_images=n_images, size=(width, height), seed=seed,
                                   snow_fraction=snow_fraction)
    err.print(f"wrote {n_images} synthetic aerial scenes ({width}x{height}, seed {seed}) to {root}; "
              f"load them as evd4uav:{root}?masks=true", highlight=False)
