"""The ``advbench cloudify`` command: a cloudy copy of an image data set (Sun, Fu, Li et al., arXiv 2306.17431).

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported; the work is done by
:func:`advbench.attacks.clouds.cloudify_folder`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from advbench.cli.app import app
from advbench.cli.options import err


@app.command("cloudify")
def cloudify_cmd(
    src: Path = typer.Argument(..., help="image folder data set to copy (e.g. EORSSD)"),
    out: Path = typer.Argument(..., help="new or empty folder for the cloudy copy"),
    seed: int = typer.Option(0, "--seed", help="run seed; each image's cloud is seeded from it and its path"),
    coverage: float = typer.Option(0.5, "--coverage", help="share of cloudy pixels, in [0, 1]"),
    thickness: float = typer.Option(0.8, "--thickness", help="peak cloud opacity, in [0, 1]"),
    softness: float = typer.Option(0.05, "--softness", help="width of the cloud edges (> 0)"),
    colour: str = typer.Option("1,1,1", "--colour", "--color", help="cloud colour r,g,b in [0, 1], e.g. 0.9,0.9,1"),
    octaves: int = typer.Option(5, "--octaves", help="Perlin noise octaves (>= 1)"),
    persistence: float = typer.Option(0.5, "--persistence", help="amplitude ratio between octaves, in (0, 1]"),
    base_scale: float = typer.Option(0.25, "--base-scale", help="coarsest noise cell / longer image side (> 0)"),
    clouds_dir: str = typer.Option("clouds", "--clouds-dir", help="folder under OUT for the cloud masks"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Write a cloudy copy of an image folder: images cloudified, masks/labels/gt folders and other files copied,
    cloud opacities saved as PNG under OUT/clouds/."""
    from advbench.attacks.clouds import CloudSpec, cloudify_folder, parse_colour

    spec = CloudSpec(coverage=coverage, thickness=thickness, softness=softness, octaves=octaves,
                     persistence=persistence, base_scale=base_scale, colour=parse_colour(colour))
    report = cloudify_folder(src, out, spec, seed=seed, clouds_dir=clouds_dir, progress=True)
    if as_json:
        payload = {"out": str(report.out), "clouds": str(report.clouds), "images": report.images,
                   "copied": report.copied, "seed": seed, "spec": spec.to_dict()}
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        err.print(f"cloudified {report.images} images and copied {report.copied} other files to {report.out}; "
                  f"cloud masks in {report.clouds}")
