"""advbench's AutoAttack-style cascade against ``torchattacks.AutoAttack(version="standard")``.

Both sides attack the same model and samples (the first ``--n`` digits test samples, linf, eps 0.1):

* ``advbench``: ``evaluate(model, x, y, attacks=["apgd-ce", "apgd-t", "fab-t", "square"], eps=[eps],
  norm="linf", attack_kwargs=...)`` with the settings torchattacks' AutoAttack standard builds: APGD-CE,
  APGD-T (DLR, targeted over the 9 other classes), multi-targeted FAB-T, each ``steps=10`` and
  ``n_restarts=1``, then Square with ``n_queries=5000`` and ``n_restarts=1`` (rho, p_init, FAB's
  alpha_max/eta/beta at torchattacks' defaults).  Each attack runs only on still-robust samples.  The
  time includes everything ``evaluate`` does (clean pass, gradient-masking probe, per-sample records).
* ``torchattacks``: ``torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
  n_classes=10, seed=0)(x, y)`` plus one forward pass on its output for the robust accuracy.

Models: an undefended ``small_cnn`` (8 epochs) and a PGD adversarially trained one
(``adversarial="pgd", adv_eps=0.1, adv_steps=5, epochs=5``), where more samples survive to Square.

Randomness differs: advbench derives one seed per attack from ``torch.Generator().manual_seed(seed)``,
torchattacks seeds every component with ``seed``.  APGD's random start, FAB's restarts and Square's
random search therefore draw different numbers, and robust accuracies may differ slightly.
Goals: robust accuracies within 0.5 points; time ratio advbench / torchattacks <= 1.0.
Timings are medians over interleaved repeats after a warm-up run, in one process.

Run: ``.venv/bin/python benchmarks/bench_autoattack_cascade.py [--quick] [--json]``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, from any working directory

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import _common as bench  # noqa: E402

CASCADE = ["apgd-ce", "apgd-t", "fab-t", "square"]
MATCHED_KWARGS = {  # what torchattacks.AutoAttack(version="standard") builds
    "apgd-ce": {"steps": 10, "n_restarts": 1, "rho": 0.75},
    "apgd-t": {"steps": 10, "n_restarts": 1, "rho": 0.75},
    "fab-t": {"steps": 10, "n_restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
    "square": {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bench.make_parser(__doc__, "~30 s smoke run: undefended model only, 100 samples, 2 repeats")
    p.add_argument("--models", default=None,
                   help="comma-separated: standard, adversarial (default both; standard with --quick)")
    p.add_argument("--n", type=int, default=None, help="first n digits test samples (default 200, 100 with --quick)")
    p.add_argument("--eps", type=float, default=0.1)
    bench.add_run_options(p, "timed repeats (default 3, 2 with --quick)")
    args = p.parse_args(argv)
    args.models = (args.models or ("standard" if args.quick else "standard,adversarial")).split(",")
    for m in args.models:
        if m not in ("standard", "adversarial"):
            p.error(f"unknown model '{m}'")
    args.n = args.n or (100 if args.quick else 200)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    bench.apply_threads(args)
    import torchattacks

    from advbench.evaluate import evaluate

    configs = {
        "standard": {"arch": "small_cnn", "dataset": "digits", "epochs": 8, "seed": args.seed},
        "adversarial": {"arch": "small_cnn", "dataset": "digits", "epochs": 5, "seed": args.seed,
                        "adversarial": "pgd", "adv_eps": 0.1, "adv_steps": 5},
    }
    x, y = bench.load_test_batch("digits", args.seed, args.n)

    rows = []
    for name in args.models:
        model, meta = bench.train_model(**configs[name])  # eval mode, parameters trainable as a user's model would be

        def run_advbench(model=model):
            res = evaluate(model, x, y, attacks=CASCADE, eps=[args.eps], norm="linf", attack_kwargs=MATCHED_KWARGS,
                           seed=args.seed)
            return res

        def run_torchattacks(model=model):
            aa = torchattacks.AutoAttack(model, norm="Linf", eps=args.eps, version="standard", n_classes=10,
                                         seed=args.seed)
            return bench.accuracy(bench.predict(model, aa(x, y)), y)

        times, results = bench.measure({"advbench": run_advbench, "torchattacks": run_torchattacks}, args.repeats)
        med = bench.medians(times)
        res = results["advbench"]
        ra_adv = sum(s["robust"] for s in res.samples) / y.numel()  # exact count, not a float32 mean
        ra_ta = results["torchattacks"]
        rows.append({
            "model": name, "test_accuracy": meta["test_accuracy"], "clean_accuracy": res.clean_accuracy,
            "median_seconds": med, "all_seconds": times,
            "robust_accuracy_advbench": ra_adv, "robust_accuracy_torchattacks": ra_ta,
            "difference_points": round(100 * (ra_adv - ra_ta), 6) + 0.0,
            "within_half_point": abs(ra_adv - ra_ta) <= 0.005 + 1e-12,
            "ratio_advbench_over_torchattacks": med["advbench"] / med["torchattacks"],
            "advbench_per_attack": {k: {f: v[f] for f in ("attacked", "broken", "gradients", "queries", "wall_time_s")}
                                    for k, v in res.per_eps[0].per_attack.items()},
        })
    report = {
        "benchmark": "autoattack_cascade",
        "setup": {"dataset": "digits", "arch": "small_cnn", "n": args.n, "norm": "linf", "eps": args.eps,
                  "advbench_attacks": CASCADE, "advbench_attack_kwargs": MATCHED_KWARGS,
                  "torchattacks": f"AutoAttack(version='standard', seed={args.seed})", "seed": args.seed,
                  **bench.runtime_setup(args.repeats, torchattacks_key="torchattacks_version"),
                  "randomness": "per-attack seeds differ between the two sides; small robust-accuracy "
                                "differences are expected"},
        "rows": rows,
        "goals": {"robust_accuracy": "within 0.5 points", "time_ratio": "advbench/torchattacks <= 1.0"},
    }
    if bench.print_json(report, args):
        return report
    bench.print_title(f"AutoAttack standard (APGD-CE, APGD-T, FAB-T: 10 steps, 1 restart; Square: 5000 queries) "
                      f"linf eps={args.eps} | small_cnn on digits, first {args.n} test samples",
                      report["setup"], versions=("torch", "torchattacks_version"))
    columns = [("model", "<12"), ("clean", ">6.3f"), ("advbench s", ">11.3f"), ("torchatt s", ">11.3f"),
               ("RA advbench", ">12.4f"), ("RA torchatt", ">12.4f"), ("diff pts", ">9.2f"), ("ratio", ">7.3f")]
    bench.print_table(columns, [
        [r["model"], r["clean_accuracy"], r["median_seconds"]["advbench"], r["median_seconds"]["torchattacks"],
         r["robust_accuracy_advbench"], r["robust_accuracy_torchattacks"], r["difference_points"],
         r["ratio_advbench_over_torchattacks"]]
        for r in rows
    ])
    for r in rows:
        stages = ", ".join(f"{k}: {v['broken']}/{v['attacked']} broken in {v['wall_time_s']:.2f}s"
                           for k, v in r["advbench_per_attack"].items())
        print(f"advbench cascade ({r['model']}): {stages}")
    for r in rows:
        bench.print_ratio(f"advbench/torchattacks model={r['model']}", r["ratio_advbench_over_torchattacks"])
        status = "OK" if r["within_half_point"] else "NOT within 0.5 points"
        print(f"robust accuracy model={r['model']}: advbench {r['robust_accuracy_advbench']:.4f}, torchattacks "
              f"{r['robust_accuracy_torchattacks']:.4f} ({status})")
    print("note: the two sides seed their attacks differently (advbench: one seed per attack drawn from "
          f"Generator({args.seed}); torchattacks: seed={args.seed} for every component), so robust accuracies "
          "may differ slightly")
    print("goals: robust accuracy within 0.5 points; advbench/torchattacks <= 1.0")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
