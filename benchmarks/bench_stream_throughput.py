"""Streamed PGD-10 evaluation vs a bare loop over the same DataLoader (issue 19's throughput benchmark).

Generates 2,000 224x224 images (decoded JPEGs, stored losslessly) in class folders (cached under ``--root``),
saves a random-weight torchvision
``mobilenet_v3_small`` for their classes, and times, in this process and interleaved:

* ``advbench``: the pipeline (``advbench.pipeline.engine.run``) on ``imagefolder:ROOT`` with PGD-10
  (linf, eps 1/255, no random start and ``early_stop=False``, so every selected sample is attacked for all its
  10 steps, the work the bare loop does; ``--early-stop`` times advbench's default, where a sample that is
  already misclassified costs no more gradients), batch 64,
  ``--loader-workers W``, results into a fresh store (per-batch commits included);
* ``bare``: ``torch.utils.data.DataLoader`` over the same files with the same batch size and workers
  (decode, convert to [0, 1] tensors), then 10 forward+backward passes per batch with respect to the input.

The model is the same object for both.  Goal: advbench / bare <= 1.10.

Run: ``.venv/bin/python benchmarks/bench_stream_throughput.py [--images 2000] [--workers 1] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401 - sets the offline environment
import numpy as np  # noqa: E402
import torch  # noqa: E402

CLASSES = 20


def make_folder(root: Path, n: int, model: torch.nn.Module, seed: int = 0) -> tuple[Path, Path]:
    """``n`` 224x224 JPEGs filed under the class the model predicts for them (so every sample is clean-correct and
    the cascade attacks all of them, as the bare loop does), and a class map naming each folder's output."""
    from PIL import Image

    folder = root / f"stream-{n}"
    class_map = root / f"stream-{n}.classes.txt"
    if (folder / ".complete").exists():
        return folder, class_map
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100):
        images = [Image.fromarray(rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)).resize((224, 224))
                  for _ in range(min(100, n - start))]
        encoded = []
        for img in images:  # predict on the decoded JPEG, exactly what the evaluation reads
            path = root / "tmp.JPEG"
            img.save(path, quality=85)
            with Image.open(path) as decoded:
                encoded.append(np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy())
        x = torch.from_numpy(np.stack(encoded)).permute(0, 3, 1, 2).float().div(255.0)
        with torch.no_grad():
            predicted = model(x).argmax(1).tolist()
        for i, (pixels, label) in enumerate(zip(encoded, predicted, strict=True)):
            (folder / f"class{label:03d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"class{label:03d}" / f"{start + i:06d}.png")
    present = sorted(d.name for d in folder.iterdir() if d.is_dir())
    class_map.write_text("".join(f"{name} {int(name[5:])}\n" for name in present))
    (folder / ".complete").write_text("ok\n")
    return folder, class_map


#: The images are 224x224 already: no resize in either loop.
MODEL_FLAGS = {"input_size": 224, "crop_pct": 1.0}


def random_mobilenet(root: Path) -> tuple[str, torch.nn.Module]:
    """The model spec of a random-weight torchvision ``mobilenet_v3_small`` for ``CLASSES`` classes, its weights
    saved under ``root`` (once), and the resolved model in eval mode."""
    import torchvision

    from advbench.models.resolve import ModelOptions, resolve_model

    weights = root / f"mnv3s-{CLASSES}.pth"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=CLASSES).state_dict(),
                   weights)
    spec = f"torchvision:mobilenet_v3_small?weights={weights}"
    return spec, resolve_model(spec, ModelOptions(**MODEL_FLAGS)).model.eval()


class _Files(torch.utils.data.Dataset):
    """The bare loop's dataset: every JPEG of the folder decoded to a float tensor in [0, 1]."""

    def __init__(self, folder: Path) -> None:
        self.items = sorted((p, int(d.name[5:])) for d in folder.iterdir() if d.is_dir() for p in d.iterdir())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0), label


def bare_loop(model: torch.nn.Module, folder: Path, batch: int, workers: int, steps: int) -> int:
    loader = torch.utils.data.DataLoader(_Files(folder), batch_size=batch, num_workers=workers,
                                         prefetch_factor=2 if workers else None)
    loss_fn = torch.nn.CrossEntropyLoss()
    seen = 0
    for x, y in loader:
        delta = torch.zeros_like(x, requires_grad=True)
        for _ in range(steps):
            loss = loss_fn(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta + 1 / 255 * grad.sign()).clamp(-1 / 255, 1 / 255).detach().requires_grad_(True)
        seen += len(y)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for both loops")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--early-stop", action="store_true",
                        help="advbench's default PGD (drops samples once they are misclassified): less work than "
                             "the bare loop, so not the like-for-like ratio")
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "advbench-bench-folders"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    spec, model = random_mobilenet(root)  # the same network for the bare loop
    flags = MODEL_FLAGS
    for p in model.parameters():
        p.requires_grad_(False)
    folder, class_map = make_folder(root, args.images, model)
    config = RunConfig.build(models=[spec], dataset=f"imagefolder:{folder}", attacks=["pgd"], eps=["1/255"],
                             n_samples=None, batch_size=args.batch_size, selection="first", model_flags=flags,
                             class_map=str(class_map),
                             attack_params={"pgd": {"steps": args.steps, "random_start": False,
                                                    "early_stop": args.early_stop}})
    times: dict[str, list[float]] = {"advbench": [], "bare": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            outcome = run(config, store=Path(tmp) / "r.db", loader_workers=args.workers, progress=False)
            times["advbench"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seen = bare_loop(model, folder, args.batch_size, args.workers, args.steps)
        times["bare"].append(time.perf_counter() - t0)
    attacked = outcome.record.metrics["per_attack"]["pgd"]["attacked"]
    best = {k: min(v) for k, v in times.items()}
    ratio = best["advbench"] / best["bare"]
    result = {"images": seen, "attacked": attacked, "clean_accuracy": outcome.record.metrics["clean_accuracy"],
              "seconds": {k: round(v, 2) for k, v in best.items()}, "ratio": round(ratio, 3),
              "threads": torch.get_num_threads(), "workers": args.workers, "early_stop": args.early_stop}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{seen} images, PGD-{args.steps}, batch {args.batch_size}, {args.workers} loader worker(s), "
          f"{torch.get_num_threads()} torch threads; advbench attacked {attacked} (the clean-correct ones), "
          f"early_stop={args.early_stop}")
    print(f"advbench {best['advbench']:.1f} s, bare loop {best['bare']:.1f} s")
    print(f"RATIO advbench/bare = {ratio:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
