"""Overhead of advbench's ``pgd`` over the minimal PGD loop written inline.

Both sides run the same number of linf PGD steps from the clean point (``random_start=False``) on the
same model and batch, with the model in eval mode and its parameters frozen (``requires_grad=False``):

* ``advbench``: ``create_attack("pgd", early_stop=False, random_start=False, steps=N)`` called as a user
  would, so it includes the input validation, the parameter freezing, per-sample cost accounting, the
  loss trace, the budget check of the result and one final prediction forward (for ``success``).
* ``bare loop``::

      for _ in range(N):
          x.requires_grad_(True)
          loss = F.cross_entropy(model(x), y)
          grad, = torch.autograd.grad(loss, x)
          x = clamp(x0 + clamp(x + a * sign(grad) - x0, -eps, eps), 0, 1).detach()

* ``bare loop + predict``: the bare loop plus one no-grad forward on the result, i.e. the same
  information advbench returns (secondary ratio).

The weights are a seeded, untrained initialisation: the cost of a step does not depend on the weights.
Goal: ``advbench / bare loop <= 1.05`` at every step count.  Timings are medians over interleaved
repeats after a warm-up, in one process.

Run: ``.venv/bin/python benchmarks/bench_pgd_overhead.py [--quick] [--json]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, from any working directory

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import _common as bench  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

INPUTS = {"mnist5k": (1, 28, 28), "digits": (1, 8, 8), "cifar-synthetic": (3, 32, 32)}


def bare_pgd(model, x0: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """The minimal linf PGD loop (no random start, last iterate)."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
        x = torch.clamp(x0 + torch.clamp(x.detach() + alpha * grad.sign() - x0, -eps, eps), 0.0, 1.0)
    return x


def load_batch(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "cifar-synthetic":
        g = torch.Generator().manual_seed(seed)
        return torch.rand((n, *INPUTS[name]), generator=g), torch.randint(0, 10, (n,), generator=g)
    return bench.load_test_batch(name, seed, n)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bench.make_parser(__doc__, "~30 s smoke run: batch 128, steps 5,20, 3 repeats")
    p.add_argument("--arch", default="small_cnn", help="small_cnn, lenet5, mlp or resnet20")
    p.add_argument("--input", choices=sorted(INPUTS), default="mnist5k",
                   help="mnist5k test images (1x28x28, default), digits (1x8x8) or uniform noise 3x32x32")
    p.add_argument("--n", type=int, default=None, help="batch size (default 256, 128 with --quick)")
    p.add_argument("--steps", default=None, help="comma-separated step counts (default 10,50; 5,20 with --quick)")
    p.add_argument("--eps", type=float, default=0.1)
    bench.add_run_options(p, "timed repeats (default 5, 3 with --quick)")
    args = p.parse_args(argv)
    args.n = args.n or (128 if args.quick else 256)
    args.steps = [int(s) for s in (args.steps or ("5,20" if args.quick else "10,50")).split(",")]
    args.repeats = args.repeats or (3 if args.quick else 5)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    bench.apply_threads(args)
    import advbench
    from advbench.models import create_model

    shape = INPUTS[args.input]
    x, y = load_batch(args.input, args.n, args.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = create_model(args.arch, input_shape=shape, num_classes=10, mean=[0.5] * shape[0], std=[0.25] * shape[0])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    rows = []
    for steps in args.steps:
        alpha = 2.5 * args.eps / steps
        attack = advbench.create_attack("pgd", norm="linf", eps=args.eps, steps=steps, step_size=alpha,
                                        random_start=False, early_stop=False)

        def run_native(attack=attack):
            return attack(model, x, y, generator=torch.Generator().manual_seed(args.seed))

        def run_bare(steps=steps, alpha=alpha):
            return bare_pgd(model, x, y, args.eps, alpha, steps)

        def run_bare_predict(steps=steps, alpha=alpha):
            xa = bare_pgd(model, x, y, args.eps, alpha, steps)
            return xa, bench.predict(model, xa)

        times, results = bench.measure({"advbench": run_native, "bare": run_bare, "bare_predict": run_bare_predict},
                                 args.repeats)
        med = bench.medians(times)
        out = results["advbench"]
        rows.append({
            "steps": steps, "alpha": alpha, "median_seconds": med, "all_seconds": times,
            "ratio": med["advbench"] / med["bare"],
            "ratio_vs_bare_predict": med["advbench"] / med["bare_predict"],
            "overhead_ms_per_step": (med["advbench"] - med["bare"]) / steps * 1e3,
            "max_abs_diff_x_adv": float((out.x_adv - results["bare"]).abs().max()),
            "robust_accuracy_advbench": bench.robust_accuracy(out.success, y),
            "robust_accuracy_bare": bench.accuracy(results["bare_predict"][1], y),
        })
    report = {
        "benchmark": "pgd_overhead",
        "setup": {"arch": args.arch, "input": args.input, "input_shape": list(shape), "n": args.n, "eps": args.eps,
                  "weights": "seeded untrained init", **bench.runtime_setup(args.repeats)},
        "rows": rows,
        "goal": "advbench/bare <= 1.05",
    }
    if bench.print_json(report, args):
        return report
    bench.print_title(f"linf PGD, eps={args.eps}, alpha=2.5*eps/steps, no random start, early_stop=False | "
                      f"{args.arch} (untrained) on {args.input} {tuple(shape)}, batch {args.n}",
                      report["setup"], versions=("torch",))
    columns = [("steps", ">6"), ("advbench s", ">11.4f"), ("bare s", ">9.4f"), ("bare+pred s", ">12.4f"),
               ("ratio", ">7.3f"), ("vs+pred", ">8.3f"), ("ovh ms/step", ">12.3f"), ("max|dx|", ">9.2g")]
    bench.print_table(columns, [
        [r["steps"], *(r["median_seconds"][k] for k in ("advbench", "bare", "bare_predict")), r["ratio"],
         r["ratio_vs_bare_predict"], r["overhead_ms_per_step"], r["max_abs_diff_x_adv"]]
        for r in rows
    ])
    for r in rows:
        bench.print_ratio(f"advbench/bare steps={r['steps']}", r["ratio"])
        bench.print_ratio(f"advbench/bare_predict steps={r['steps']}", r["ratio_vs_bare_predict"])
    print("goal: advbench/bare <= 1.05")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
