"""Standard ``autoattack`` through ``advbench.evaluate`` against the reference, ``pyautoattack``'s
``AutoAttack(version="standard").run_standard_evaluation``, on the same model, samples and seed.

Both sides run the reference's components with the reference's settings (APGD-CE, APGD-T with 9 targets,
FAB-T with 9 targets, 100 iterations each; Square with 5,000 queries).  The reference gets the integer seed
``advbench.attacks.autoattack.seed_from_generator(Generator(device).manual_seed(seed))``, the one
``evaluate(seed=seed)`` hands the attack, so with all samples in one batch (n <= 256) the two robust
accuracies should be identical, sample by sample.

* ``advbench``: ``evaluate(model, x, y, attacks=["autoattack"], eps=[eps], norm=norm, seed=seed)``, which
  includes advbench's clean pass, its gradient-masking probe and the per-sample records.
* ``reference``: ``pyautoattack.AutoAttack(model, norm=..., eps=..., version="standard", seed=...,
  device=...).run_standard_evaluation(x, y, batch_size=256)``, which includes its clean pass and its checks
  for randomised, probability-output and dynamic models.

Models:

* ``digits``: the undefended ``small_cnn`` of ``tests/conftest.py`` (8 epochs on sklearn digits, 1x8x8),
  first ``--n-digits`` test samples, linf eps 0.1 (l2 0.5, l1 2.0).
* ``resnet20``: advbench's ``resnet20`` on 3x32x32 inputs, trained 4 epochs (lr 0.01) on
  ``synthetic:n=1000,classes=10,size=32,channels=3``, first ``--n-resnet`` test samples, linf eps 0.06
  (l2 1.0, l1 15.0).

Square's 5,000 queries run in full on every sample that survives the white-box components, so the cost is
set by iterations, not by the sample count.  Timing: one warm-up forward and backward pass per model, then
``--repeats`` interleaved rounds (median).
Goals: robust accuracies within 0.5 points; time ratio advbench / reference <= 1.0.

Run: ``.venv/bin/python benchmarks/bench_autoattack_reference.py [--quick] [--device cuda] [--threads 1] [--json]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, from any working directory

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import _common as bench  # noqa: E402

MODELS = ("digits", "resnet20")
EPS = {"digits": {"linf": 0.1, "l2": 0.5, "l1": 2.0}, "resnet20": {"linf": 0.06, "l2": 1.0, "l1": 15.0}}
REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
RESNET_DATA = "synthetic:n=1000,classes=10,size=32,channels=3"
BATCH = 256


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bench.make_parser(__doc__, "smoke run (3-4 min on 2 cores): 100 digits and 12 resnet20 samples, 1 round")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: digits, resnet20 (default both)")
    p.add_argument("--norm", choices=sorted(REF_NORM), default="linf")
    p.add_argument("--n-digits", type=int, default=None, help="digits test samples (default 200, 100 with --quick)")
    p.add_argument("--n-resnet", type=int, default=None, help="resnet20 test samples (default 32, 12 with --quick)")
    p.add_argument("--eps-digits", type=float, default=None, help="default: 0.1 linf, 0.5 l2, 2.0 l1")
    p.add_argument("--eps-resnet", type=float, default=None, help="default: 0.06 linf, 1.0 l2, 15.0 l1")
    bench.add_device_option(p)
    bench.add_run_options(p, "timed rounds (default 2, 1 with --quick)")
    args = p.parse_args(argv)
    args.models = args.models.split(",")
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model '{m}'; choose from {', '.join(MODELS)}")
    args.n_digits = args.n_digits or (100 if args.quick else 200)
    args.n_resnet = args.n_resnet or (12 if args.quick else 32)
    if max(args.n_digits, args.n_resnet) > BATCH:
        p.error(f"use at most {BATCH} samples: both sides then attack them in one batch with one seed")
    args.eps_digits = args.eps_digits if args.eps_digits is not None else EPS["digits"][args.norm]
    args.eps_resnet = args.eps_resnet if args.eps_resnet is not None else EPS["resnet20"][args.norm]
    args.repeats = args.repeats or (1 if args.quick else 2)
    return args


def build(name: str, args: argparse.Namespace):
    """(model, x, y, eps) for one of MODELS, on args.device."""
    if name == "digits":
        model, meta = bench.train_model(arch="small_cnn", dataset="digits", epochs=8, seed=args.seed)
        x, y = bench.load_test_batch("digits", args.seed, args.n_digits)
        eps = args.eps_digits
    else:
        model, meta = bench.train_model(arch="resnet20", dataset=RESNET_DATA, epochs=4, lr=0.01, seed=args.seed)
        x, y = bench.load_test_batch(RESNET_DATA, args.seed, args.n_resnet)
        eps = args.eps_resnet
    return model.to(args.device), x.to(args.device), y.to(args.device), eps, meta


def warm_up(model, x, y) -> None:
    import torch
    import torch.nn.functional as F

    xg = x[:8].clone().requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(model(xg), y[:8]), xg)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    bench.apply_threads(args)
    import pyautoattack
    import torch

    from advbench.attacks.autoattack import seed_from_generator
    from advbench.evaluate import evaluate

    rows = []
    for name in args.models:
        model, x, y, eps, meta = build(name, args)
        ref_seed = seed_from_generator(torch.Generator(device=x.device).manual_seed(args.seed))

        def run_advbench(model=model, x=x, y=y, eps=eps):
            return evaluate(model, x, y, attacks=["autoattack"], eps=[eps], norm=args.norm, seed=args.seed,
                            batch_size=BATCH)

        def run_reference(model=model, x=x, y=y, eps=eps, ref_seed=ref_seed):
            aa = pyautoattack.AutoAttack(model, norm=REF_NORM[args.norm], eps=eps, version="standard",
                                         seed=ref_seed, device=x.device)
            _, y_adv = aa.run_standard_evaluation(x, y, batch_size=BATCH)
            return (y_adv == y).cpu()

        warm_up(model, x, y)
        times, results = bench.measure({"advbench": run_advbench, "reference": run_reference}, args.repeats,
                                       warmup=0)
        med = bench.medians(times)
        res, ref_flags = results["advbench"], results["reference"]
        adv_flags = torch.tensor([s["robust"] for s in res.samples])
        ra_adv, ra_ref = int(adv_flags.sum()) / y.numel(), int(ref_flags.sum()) / y.numel()
        stage = res.per_eps[0].per_attack["autoattack"]
        rows.append({
            "model": name, "n": y.numel(), "eps": eps, "test_accuracy": meta["test_accuracy"],
            "clean_accuracy": res.clean_accuracy, "median_seconds": med, "all_seconds": times,
            "robust_accuracy_advbench": ra_adv, "robust_accuracy_reference": ra_ref,
            "difference_points": round(100 * (ra_adv - ra_ref), 6) + 0.0,
            "within_half_point": abs(ra_adv - ra_ref) <= 0.005 + 1e-12,
            "same_samples_robust": bool(torch.equal(adv_flags, ref_flags)),
            "ratio_advbench_over_reference": med["advbench"] / med["reference"],
            "advbench_cost": {k: stage[k] for k in ("attacked", "broken", "gradients", "queries")},
        })
    report = {
        "benchmark": "autoattack_reference",
        "setup": {"norm": args.norm, "version": "standard", "seed": args.seed, "reference_seed": "seed_from_generator",
                  "batch_size": BATCH, "pyautoattack_version": pyautoattack.__version__,
                  **bench.runtime_setup(args.repeats, device=args.device)},
        "rows": rows,
        "goals": {"robust_accuracy": "within 0.5 points", "time_ratio": "advbench/reference <= 1.0"},
    }
    if bench.print_json(report, args):
        return report
    bench.print_title(f"standard AutoAttack, {args.norm}: advbench evaluate(['autoattack']) vs pyautoattack "
                      "run_standard_evaluation", report["setup"], versions=("torch", "pyautoattack_version"))
    columns = [("model", "<9"), ("n", ">4"), ("eps", ">6.3f"), ("clean", ">6.3f"), ("advbench s", ">11.2f"),
               ("reference s", ">12.2f"), ("RA advbench", ">12.4f"), ("RA reference", ">13.4f"),
               ("same", ">5"), ("ratio", ">7.3f")]
    bench.print_table(columns, [
        [r["model"], r["n"], r["eps"], r["clean_accuracy"], r["median_seconds"]["advbench"],
         r["median_seconds"]["reference"], r["robust_accuracy_advbench"], r["robust_accuracy_reference"],
         "yes" if r["same_samples_robust"] else "no", r["ratio_advbench_over_reference"]]
        for r in rows
    ])
    for r in rows:
        bench.print_ratio(f"advbench/reference model={r['model']}", r["ratio_advbench_over_reference"])
        status = "OK" if r["within_half_point"] else "NOT within 0.5 points"
        print(f"robust accuracy model={r['model']}: advbench {r['robust_accuracy_advbench']:.4f}, reference "
              f"{r['robust_accuracy_reference']:.4f} ({status}; same robust samples: {r['same_samples_robust']})")
    print("goals: robust accuracy within 0.5 points; advbench/reference <= 1.0")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
