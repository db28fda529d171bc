"""One white-box patch iteration vs one detector forward+backward on the same batch (issue 6; goal <= 1.2).

    .venv/bin/python benchmarks/bench_patch_iteration.py [--batch 6] [--threads N] [--device cuda] [--json]

Baseline: the detector's forward pass on the batch of clean images and a backward pass of its summed
candidate scores to the images -- the least work any gradient patch attack does per step.  advbench: one
``patch-whitebox`` step on the same batch -- Thys jitter and placement of the patch on every vehicle,
the detector forward, the per-vehicle score + NPS + TV objective, backward to the patch and the Adam
update (also with ``footprint_filter=true``, the pixel-footprint low-pass).  Both detectors, randomly
initialised (weights do not change the cost), on synthetic EVD4UAV-style 256x192 scenes.  With
``--device cuda`` the detectors, images and patch live on the GPU (the attack's generator stays on the CPU,
as in ``patch-whitebox``) and every timed call ends with a CUDA synchronisation.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402,I001
import torch  # noqa: E402


def _time_detector(arch: str, class_names, data, repeats: int, seed: int, device: str) -> dict[str, float]:
    """Median seconds of the baseline and of one patch step for a fresh ``arch`` detector."""
    from advbench import create_attack
    from advbench.models.detectors import create_detector

    det = create_detector(arch, class_names=class_names, image_size=(256, 192), seed=seed).to(device)
    idx = list(range(len(data)))

    def step_of(footprint_filter: bool):
        attack = create_attack("patch-whitebox", footprint_filter=footprint_filter)
        patch = torch.full((3, attack.patch_size, attack.patch_size), 0.5, device=device, requires_grad=True)
        opt = torch.optim.Adam([patch], lr=attack.lr)
        gen = torch.Generator().manual_seed(seed)
        return lambda: attack.adam_step(det, patch, opt, data, idx, gen)

    def baseline() -> None:
        images = [data.images[i].detach().requires_grad_(True) for i in idx]
        cands = det.candidates(images)
        torch.autograd.grad(sum(c.scores.sum() for c in cands), images)

    times, _ = _common.measure({"fwd+bwd": baseline, "patch step": step_of(False),
                                "patch step (footprint filter)": step_of(True)}, repeats)
    return _common.medians(times)


def main() -> None:
    p = _common.make_parser(__doc__, "fewer repeats")
    p.add_argument("--batch", type=int, default=6)
    _common.add_run_options(p, "timed rounds per candidate (default 20, 5 with --quick)")
    _common.add_device_option(p)
    args = p.parse_args()
    _common.apply_threads(args)
    repeats = args.repeats or (5 if args.quick else 20)

    from advbench.attacks.patch import PatchSet
    from advbench.datasets.detection import generate_aerial_dataset, load_detection_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = generate_aerial_dataset(Path(tmp) / "evd", n_images=args.batch, size=(256, 192), seed=args.seed)
        samples = load_detection_dataset(f"evd4uav:{root}")
        data = PatchSet.from_samples(samples).to(args.device)
    rows, report = [], {"setup": _common.runtime_setup(repeats, device=args.device), "results": {}}
    report["setup"]["batch"] = len(data)
    for arch in ("fcos-mnv3", "fasterrcnn-mnv3"):
        med = _time_detector(arch, samples[0].class_names, data, repeats, args.seed, args.device)
        ratio = med["patch step"] / med["fwd+bwd"]
        ratio_ff = med["patch step (footprint filter)"] / med["fwd+bwd"]
        rows.append([arch, med["fwd+bwd"] * 1e3, med["patch step"] * 1e3, ratio, ratio_ff])
        report["results"][arch] = {"baseline_ms": med["fwd+bwd"] * 1e3, "patch_ms": med["patch step"] * 1e3,
                                   "ratio": ratio, "ratio_footprint_filter": ratio_ff}
    if _common.print_json(report, args):
        return
    _common.print_title("patch iteration vs detector fwd+bwd", report["setup"])
    _common.print_table([("detector", "<16"), ("fwd+bwd ms", ">10.1f"), ("patch ms", ">9.1f"), ("ratio", ">6.3f"),
                         ("with filter", ">11.3f")], rows)
    for arch, _, _, ratio, ratio_ff in rows:
        _common.print_ratio(f"patch step / fwd+bwd ({arch})", ratio)
        _common.print_ratio(f"patch step with footprint filter / fwd+bwd ({arch})", ratio_ff)


if __name__ == "__main__":
    main()
