"""Native advbench ``pgd`` against ``torchattacks.PGD`` called directly, on the same model and batch.

What is compared (same trained model, same batch, same eps / alpha / steps, ``random_start=False``):

* ``advbench pgd, early_stop=False``: every sample runs all steps and the last iterate is returned, as in
  torchattacks.  The call also returns per-sample success (it does one prediction forward at the end).
* ``advbench pgd, early_stop=True``: samples leave the loop once misclassified (advbench's default).
* ``torchattacks.PGD + predict``: ``torchattacks.PGD(...)(x, y)`` followed by one forward pass on the
  adversarial batch to get the predictions, i.e. the same information advbench returns.  This is the
  apples-to-apples reference for the goal ``native(early_stop=False) / torchattacks <= 1.0``
  (stretch 0.9).
* ``torchattacks.PGD (attack only)``: the bare ``torchattacks.PGD`` call, without the prediction pass.
* ``torchattacks.PGD + predict, params frozen``: the same with ``requires_grad=False`` on the model
  parameters (advbench freezes them during an attack; torchattacks leaves them as given).

Timings are medians over ``--repeats`` interleaved repeats after a warm-up, in one process.
Robust accuracies of advbench (early_stop=False) and torchattacks must match: both run the same
deterministic iteration (sign of the CE gradient, clip to the linf ball and the [0,1] box).

Run: ``.venv/bin/python benchmarks/bench_pgd_vs_torchattacks.py [--quick] [--device cuda] [--json]``
(with ``--device cuda`` the trained model and the batch move to the GPU; every timed call ends with a CUDA
synchronisation).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, from any working directory

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import _common as bench  # noqa: E402
import torch  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bench.make_parser(__doc__, "~30 s smoke run: digits (1x8x8), 10 steps, 3 repeats")
    p.add_argument("--dataset", choices=["mnist5k", "digits"], default=None,
                   help="default mnist5k (1x28x28, so a step is not trivially cheap); digits with --quick")
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 1 on mnist5k, 8 on digits)")
    p.add_argument("--n", type=int, default=256, help="batch size: the first n test samples")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default 20, 10 with --quick)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=None, help="step size (default 2.5*eps/steps)")
    bench.add_run_options(p, "timed repeats per candidate (default 7, 3 with --quick)")
    bench.add_device_option(p)
    args = p.parse_args(argv)
    args.dataset = args.dataset or ("digits" if args.quick else "mnist5k")
    args.epochs = args.epochs or (8 if args.dataset == "digits" else 1)
    args.steps = args.steps or (10 if args.quick else 20)
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.alpha = args.alpha if args.alpha is not None else 2.5 * args.eps / args.steps
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    bench.apply_threads(args)
    import torchattacks

    import advbench

    t0 = time.perf_counter()
    # eval mode; train_classifier leaves parameters trainable (requires_grad=True), as a user's model would be
    model, meta = bench.train_model(arch=args.arch, dataset=args.dataset, epochs=args.epochs, seed=args.seed)
    train_s = time.perf_counter() - t0
    x, y = bench.load_test_batch(args.dataset, args.seed, args.n)
    model, x, y = model.to(args.device), x.to(args.device), y.to(args.device)

    common = {"norm": "linf", "eps": args.eps, "steps": args.steps, "step_size": args.alpha, "random_start": False}
    native_full = advbench.create_attack("pgd", early_stop=False, **common)
    native_es = advbench.create_attack("pgd", early_stop=True, **common)
    ta = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=False)

    def run_native_full():
        return native_full(model, x, y, generator=torch.Generator().manual_seed(args.seed))

    def run_native_es():
        return native_es(model, x, y, generator=torch.Generator().manual_seed(args.seed))

    def run_ta_predict():
        xa = ta(x, y)
        return xa, bench.predict(model, xa)

    def run_ta_only():
        return ta(x, y)

    def run_ta_frozen():
        flags = [p.requires_grad for p in model.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            xa = ta(x, y)
            return xa, bench.predict(model, xa)
        finally:
            for p, flag in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(flag)

    fns = {
        "advbench_pgd_es_off": run_native_full,
        "advbench_pgd_es_on": run_native_es,
        "torchattacks_pgd_predict": run_ta_predict,
        "torchattacks_pgd_only": run_ta_only,
        "torchattacks_pgd_predict_frozen": run_ta_frozen,
    }
    times, results = bench.measure(fns, args.repeats)
    med = bench.medians(times)

    out_full, out_es = results["advbench_pgd_es_off"], results["advbench_pgd_es_on"]
    xa_ta, pred_ta = results["torchattacks_pgd_predict"]
    n = x.shape[0]
    clean_acc = bench.accuracy(bench.predict(model, x), y)
    ra = {
        "advbench_es_off": bench.robust_accuracy(out_full.success, y),
        "advbench_es_on": bench.robust_accuracy(out_es.success, y),
        "torchattacks": bench.accuracy(pred_ta, y),
    }
    disagree = int((out_full.success != (pred_ta != y)).sum())
    max_diff = float((out_full.x_adv - xa_ta).abs().max())
    ratios = {
        "native_es_off/torchattacks": med["advbench_pgd_es_off"] / med["torchattacks_pgd_predict"],
        "native_es_off/torchattacks_attack_only": med["advbench_pgd_es_off"] / med["torchattacks_pgd_only"],
        "native_es_off/torchattacks_frozen_params": (
            med["advbench_pgd_es_off"] / med["torchattacks_pgd_predict_frozen"]),
        "native_es_on/torchattacks": med["advbench_pgd_es_on"] / med["torchattacks_pgd_predict"],
    }
    report = {
        "benchmark": "pgd_vs_torchattacks",
        "setup": {
            "dataset": args.dataset, "arch": args.arch, "epochs": args.epochs, "test_accuracy": meta["test_accuracy"],
            "input_shape": list(x.shape[1:]), "n": n, "steps": args.steps, "eps": args.eps, "alpha": args.alpha,
            "random_start": False,
            **bench.runtime_setup(args.repeats, torchattacks_key="torchattacks", device=args.device),
            "train_seconds": round(train_s, 2),
        },
        "median_seconds": med,
        "all_seconds": times,
        "clean_accuracy": clean_acc,
        "robust_accuracy": ra,
        "robust_accuracy_match": disagree == 0,
        "samples_disagreeing": disagree,
        "max_abs_diff_x_adv": max_diff,
        "gradients": {"advbench_es_off": out_full.total_gradients, "advbench_es_on": out_es.total_gradients,
                      "torchattacks": n * args.steps},
        "ratios": ratios,
        "goals": {"native_es_off/torchattacks": "<= 1.0 (stretch 0.9)"},
    }
    if bench.print_json(report, args):
        return report
    bench.print_title(f"PGD linf eps={args.eps} steps={args.steps} alpha={args.alpha:.4g} random_start=False | "
                      f"{args.arch} on {args.dataset} {tuple(x.shape[1:])}, batch {n}, clean acc {clean_acc:.3f}",
                      report["setup"], versions=("torch", "torchattacks"))
    grads = {"advbench_pgd_es_off": out_full.total_gradients, "advbench_pgd_es_on": out_es.total_gradients}
    columns = [("candidate", "<40"), ("median s", ">10.4f"), ("min s", ">10.4f"), ("gradients", ">10")]
    bench.print_table(columns, [[name, med[name], min(times[name]), grads.get(name, n * args.steps)] for name in fns])
    print(f"robust accuracy: advbench(es=False) {ra['advbench_es_off']:.4f}  torchattacks {ra['torchattacks']:.4f}  "
          f"advbench(es=True) {ra['advbench_es_on']:.4f}")
    status = "MATCH" if disagree == 0 else f"MISMATCH ({disagree} samples differ)"
    print(f"advbench(es=False) vs torchattacks success: {status}; max |x_adv diff| = {max_diff:.3g}")
    print("(early_stop=True keeps the first misclassified iterate, so its robust accuracy can only be <= the others)")
    for key, value in ratios.items():
        bench.print_ratio(key, value)
    print("goal: native_es_off/torchattacks <= 1.0 (stretch 0.9)")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
