"""Peak host memory of ``advbench run`` on ImageNet-sized image folders (issue 19's memory benchmark).

Generates 224x224 JPEG class folders of 5,000 and 50,000 images (cached under ``--root``), saves a random-weight
torchvision ``mobilenet_v3_small`` for their classes, then runs, each in a fresh process under
``/usr/bin/time -f %M``::

    advbench run --model torchvision:mobilenet_v3_small?weights=... --dataset imagefolder:ROOT \
        --attack fgsm --eps 1/255 --n-samples 1000 --batch-size 64 --json

and the import baseline (``python -c "import advbench.cli, torch, torchvision, timm"``).  Only the selected
samples are decoded, so the data set's size should not matter: goal ratio 50k/5k <= 1.1, and less than 2 GB
above the import baseline.

Run: ``.venv/bin/python benchmarks/bench_memory_folder.py [--sizes 5000,50000] [--root DIR] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CLASSES = 50


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs at 224x224 in ``CLASSES`` class folders (reused when already complete)."""
    from PIL import Image

    folder = root / f"folder-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (folder / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % CLASSES
        small = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
        Image.fromarray(small).resize((224, 224)).save(folder / f"class{c:03d}" / f"{i:06d}.JPEG", quality=80)
    done.write_text("ok\n")
    return folder


def peak_rss_mb(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Maximum resident set size of ``command`` (a fresh process) in MiB, and its stdout."""
    done = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M", *command], capture_output=True, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    line = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("MAXRSS_KB"))
    return int(line.split()[1]) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,50000", help="folder sizes, comma separated")
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "advbench-bench-folders"))
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch
    import torchvision

    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    weights = root / "mnv3s.pth"
    if not weights.exists():
        torch.manual_seed(0)
        net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=CLASSES)
        torch.save(net.state_dict(), weights)
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    advbench = str(Path(sys.executable).parent / "advbench")
    baseline, _ = peak_rss_mb([sys.executable, "-c", "import advbench.cli, torch, torchvision, timm"], env)
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        folder = make_folder(root, n)
        store = root / f"results-{n}.db"
        store.unlink(missing_ok=True)
        rss, out = peak_rss_mb([advbench, "run", "--model", f"torchvision:mobilenet_v3_small?weights={weights}",
                                "--dataset", f"imagefolder:{folder}", "--attack", "fgsm", "--eps", "1/255",
                                "--n-samples", str(args.n_samples), "--batch-size", str(args.batch_size),
                                "--store", str(store), "--json"], env)
        rows.append({"images": n, "peak_rss_mb": round(rss, 1), "above_baseline_mb": round(rss - baseline, 1),
                     "n": json.loads(out)["n"]})
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    result = {"baseline_mb": round(baseline, 1), "runs": rows, "ratio_largest_to_smallest": round(ratio, 3)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"import baseline: {baseline:.0f} MiB")
    for row in rows:
        print(f"{row['images']:>6} images, n={row['n']}: peak RSS {row['peak_rss_mb']:.0f} MiB "
              f"({row['above_baseline_mb']:.0f} MiB above the baseline)")
    print(f"RATIO peak_rss({rows[-1]['images']})/peak_rss({rows[0]['images']}) = {ratio:.3f}  (goal <= 1.1; "
          "goal < 2048 MiB above the baseline)")


if __name__ == "__main__":
    main()
