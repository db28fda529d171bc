"""Inference time of DefenseNet + victim vs the victim alone (issue 7; goal <= 1.3).

    .venv/bin/python benchmarks/bench_defensenet_latency.py [--batch 32] [--size 64] [--threads N] [--device cuda]
        [--json]

The victim is the U-Net SOD model (``unet-sod``, base 16, depth 3) and DefenseNet has the defaults of
``advbench defend train`` (base 4, depth 2); also a digits classifier (small_cnn) with its DefenseNet
(base 4, depth 1).  Weights do not change the cost, so both are randomly initialised.  Median of interleaved
no-grad forward passes on the same batch; with ``--device cuda`` on the GPU, each timed pass ending with a
CUDA synchronisation.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402,I001
import torch  # noqa: E402


def main() -> None:
    p = _common.make_parser(__doc__, "fewer repeats")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    _common.add_run_options(p, "timed rounds per candidate (default 30, 8 with --quick)")
    _common.add_device_option(p)
    args = p.parse_args()
    _common.apply_threads(args)
    repeats = args.repeats or (8 if args.quick else 30)

    from advbench.defenses.defensenet import DefenseNet
    from advbench.models import create_model
    from advbench.models.sod import create_sod_model

    torch.manual_seed(args.seed)
    cases = {
        "unet-sod + DefenseNet(4, 2)": (
            create_sod_model("unet-sod", mean=(0.5,) * 3, std=(0.25,) * 3).eval(),
            DefenseNet(3, base=4, depth=2).eval(), torch.rand(args.batch, 3, args.size, args.size)),
        "small_cnn (digits) + DefenseNet(4, 1)": (
            create_model("small_cnn", input_shape=(1, 8, 8), num_classes=10).eval(),
            DefenseNet(1, base=4, depth=1).eval(), torch.rand(args.batch * 8, 1, 8, 8)),
    }
    report = {"setup": _common.runtime_setup(repeats, device=args.device), "results": {}}
    rows = []
    for label, (victim, defense, x) in cases.items():
        victim, defense, x = victim.to(args.device), defense.to(args.device), x.to(args.device)
        pipeline = torch.nn.Sequential(defense, victim)

        def run(model: torch.nn.Module, x: torch.Tensor = x):
            with torch.no_grad():
                return model(x)

        times, _ = _common.measure({"victim": lambda run=run, v=victim: run(v),
                                    "defended": lambda run=run, m=pipeline: run(m)}, repeats)
        med = _common.medians(times)
        ratio = med["defended"] / med["victim"]
        rows.append([label, med["victim"] * 1e3, med["defended"] * 1e3, ratio])
        report["results"][label] = {"victim_ms": med["victim"] * 1e3, "defended_ms": med["defended"] * 1e3,
                                    "ratio": ratio}
    if _common.print_json(report, args):
        return
    _common.print_title("DefenseNet + victim vs victim (inference)", report["setup"])
    _common.print_table([("case", "<40"), ("victim ms", ">9.2f"), ("defended ms", ">11.2f"), ("ratio", ">6.3f")],
                        rows)
    for label, _, _, ratio in rows:
        _common.print_ratio(f"defended / victim ({label})", ratio)


if __name__ == "__main__":
    main()
