"""Reproduce the issue-7 tables: adversarial clouds vs DefenseNet on SOD, and multi-perturbation training.

1. SOD (synthetic remote-sensing scenes, 64x64): a U-Net SOD victim, then DefenseNet trained in front of it
   (frozen) on clean, cloudy, adversarial-cloud and PGD inputs; rows clean / cloudy / adv-cloud / pgd
   undefended, defended white-box (attacks through DefenseNet) and defended black-box (transfer from the
   undefended victim); also on scikit-image's RGB sample photos (resized crops), whose reference map is the
   victim's own clean prediction (there is no ground truth for them).
2. Digits classifier: the same defense rows with PGD, Square (query black box) and adv-cloud.
3. Generalized adversarial training on digits (linf + l2): min-max vs MAX vs AVG vs single-type PGD training.
4. ``--parts budget``: the SOD adv-cloud rows (undefended, DefenseNet white-box and transfer) for a range of
   threat settings (exposure budget, cloud thickness), each DefenseNet trained at the setting it faces, and an
   upper bound: the victim itself adversarially fine-tuned end to end on the same inputs (nothing frozen).
5. ``--parts weak``: the same rows for weaker threats, down to a thin cloud, a 5 % exposure budget and 2/255 of
   noise (about 30 min).

    .venv/bin/python studies/repro_defense.py --out /tmp/defense_repro     # about 25 min on 2 CPU cores

Writes ``results.json`` and ``tables.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from advbench import create_attack
from advbench.datasets.sod import load_sod_dataset
from advbench.defenses.defensenet import DefenseTrainConfig, train_defensenet, training_inputs
from advbench.objectives import CLASSIFICATION, SOD
from advbench.sod.robustness import CloudAttackConfig, sod_robustness
from advbench.training.sod import train_sod

COLS = ("mae", "max_f", "mean_f", "s_measure", "mean_e")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "colorwheel",
          "hubble_deep_field")


def skimage_photos(size: int, crops: int, seed: int) -> torch.Tensor:
    """scikit-image's RGB sample photos: each resized whole, plus ``crops`` random square crops, at ``size``."""
    import skimage.data

    gen = torch.Generator().manual_seed(seed)
    out = []
    for name in PHOTOS:
        img = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)())).permute(2, 0, 1).float() / 255
        views = [img]
        h, w = img.shape[1:]
        for _ in range(crops):
            side = int(min(h, w) * 0.6)
            top = int(torch.randint(h - side + 1, (1,), generator=gen))
            left = int(torch.randint(w - side + 1, (1,), generator=gen))
            views.append(img[:, top:top + side, left:left + side])
        out += [F.interpolate(v[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
                for v in views]
    return torch.stack(out).clamp(0, 1)


def sod_part(args: argparse.Namespace) -> dict:
    data = load_sod_dataset(f"synthetic-sod:n={args.sod_images},size=64", seed=args.seed)
    t0 = time.perf_counter()
    victim, summary = train_sod(data, epochs=args.sod_epochs, seed=args.seed, progress=False)
    print(f"SOD victim trained in {time.perf_counter() - t0:.0f} s: {summary['test_metrics']}")
    cfg = DefenseTrainConfig(epochs=args.defense_epochs, batch_size=32, attack_steps=args.attack_steps,
                             base=args.defense_base, depth=args.defense_depth, seed=args.seed)
    t0 = time.perf_counter()
    net, dsum = train_defensenet(victim, data.x_train, data.m_train, SOD, cfg)
    print(f"DefenseNet trained in {time.perf_counter() - t0:.0f} s (loss {dsum['first_loss']:.3f} -> "
          f"{dsum['final_loss']:.3f})")
    attack = CloudAttackConfig(steps=20, eps_e=args.eps_e, eps_n=args.eps_n)
    synthetic = sod_robustness(victim, data.x_test, data.m_test, defense=net, cfg=attack, seed=args.seed)
    photos = skimage_photos(64, 4, args.seed)
    with torch.no_grad():
        reference = (victim(photos).sigmoid() > 0.5).float()
    real = sod_robustness(victim, photos, reference, defense=net, cfg=attack, seed=args.seed)
    return {"victim": summary["test_metrics"], "defensenet": dsum, "synthetic": synthetic, "photos": real,
            "n_photos": int(photos.shape[0])}


#: (exposure budget, cloud thickness) settings of the budget study; the first is the default threat.
BUDGETS = ((0.2, 0.7), (0.1, 0.7), (0.05, 0.7), (0.2, 0.4), (0.2, 0.2))


def robust_victim(victim: torch.nn.Module, data, cfg: DefenseTrainConfig) -> torch.nn.Module:
    """A copy of ``victim`` adversarially fine-tuned end to end (every weight trainable) on the DefenseNet
    training mixture of ``cfg``: what a defender who *may* retrain the deployed model reaches."""
    import copy

    model = copy.deepcopy(victim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = data.x_train.shape[0]
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x, y = data.x_train[idx], data.m_train[idx]
            model.eval()
            inputs = [training_inputs(kind, model, x, y, SOD, cfg, gen).detach() for kind in cfg.inputs]
            model.train()
            loss = sum(SOD.loss(model(x_in), y).mean() for x_in in inputs) / len(inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _headline(rows: dict) -> dict:
    """Each row of an :func:`sod_robustness` result cut to S-measure, max F and MAE."""
    return {k: {c: v[c] for c in ("s_measure", "max_f", "mae")} for k, v in rows.items()}


#: (exposure budget, cloud thickness, noise budget) settings of ``--parts weak``: weaker threats than the
#: budget study's, down to a thin cloud, a 5 % exposure and 2/255 of noise.
WEAK_THREATS = ((0.2, 0.7, 2 / 255), (0.05, 0.2, 4 / 255), (0.05, 0.2, 2 / 255), (0.0, 0.2, 2 / 255))


def _victim(args: argparse.Namespace):
    data = load_sod_dataset(f"synthetic-sod:n={args.sod_images},size=64", seed=args.seed)
    victim, _ = train_sod(data, epochs=args.sod_epochs, seed=args.seed, progress=False)
    return data, victim


def _defended_setting(args: argparse.Namespace, data, victim, eps_e: float, thickness: float,
                      eps_n: float = 8 / 255) -> dict:
    """A DefenseNet trained against one threat setting, and the adv-cloud rows of that setting."""
    t0 = time.perf_counter()
    cfg = DefenseTrainConfig(epochs=args.defense_epochs, batch_size=32, attack_steps=args.attack_steps,
                             eps_e=eps_e, eps_n=eps_n, thickness=thickness, seed=args.seed)
    net, _ = train_defensenet(victim, data.x_train, data.m_train, SOD, cfg, progress=False)
    attack = CloudAttackConfig(steps=20, eps_e=eps_e, eps_n=eps_n, thickness=thickness)
    res = sod_robustness(victim, data.x_test, data.m_test, defense=net, cfg=attack, attacks=("adv-cloud",),
                         seed=args.seed)
    rows = _headline(res["rows"])
    print(f"eps_e {eps_e} thickness {thickness} eps_n {eps_n * 255:.0f}/255 ({time.perf_counter() - t0:.0f} s): "
          + ", ".join(f"{k} S {v['s_measure']:.3f}" for k, v in rows.items()), flush=True)
    return {"eps_e": eps_e, "thickness": thickness, "eps_n": eps_n, "rows": rows}


def weak_part(args: argparse.Namespace) -> dict:
    data, victim = _victim(args)
    return {"settings": [_defended_setting(args, data, victim, *threat) for threat in WEAK_THREATS]}


def budget_part(args: argparse.Namespace) -> dict:
    data, victim = _victim(args)
    out: dict = {"settings": [], "robust_victim": None}
    for eps_e, thickness in BUDGETS:
        out["settings"].append(_defended_setting(args, data, victim, eps_e, thickness))
    t0 = time.perf_counter()
    eps_e, thickness = BUDGETS[0]
    cfg = DefenseTrainConfig(epochs=args.robust_epochs, batch_size=32, attack_steps=args.attack_steps, eps_e=eps_e,
                             thickness=thickness, seed=args.seed)
    model = robust_victim(victim, data, cfg)
    res = sod_robustness(model, data.x_test, data.m_test, cfg=CloudAttackConfig(steps=20, eps_e=eps_e,
                                                                                thickness=thickness),
                         seed=args.seed)
    out["robust_victim"] = {"epochs": args.robust_epochs, "rows": _headline(res["rows"])}
    print(f"robust victim ({time.perf_counter() - t0:.0f} s): "
          + ", ".join(f"{k} S {v['s_measure']:.3f}" for k, v in out["robust_victim"]["rows"].items()), flush=True)
    return out


def budget_table(result: dict) -> str:
    """The budget study as markdown: S-measure (max F) per setting."""
    lines = ["| exposure eps_e | cloud thickness | noise eps_n | clean | cloudy | adv-cloud | DefenseNet white-box | "
             "DefenseNet transfer | share of the loss recovered white-box |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def cell(m: dict) -> str:
        return f"{m['s_measure']:.3f} ({m['max_f']:.3f})"

    for s in result["settings"]:
        r = s["rows"]
        lost = r["clean"]["s_measure"] - r["adv-cloud"]["s_measure"]
        regained = r["defended adv-cloud"]["s_measure"] - r["adv-cloud"]["s_measure"]
        lines.append(f"| {s['eps_e']} | {s['thickness']} | {s.get('eps_n', 8 / 255) * 255:.0f}/255 | "
                     f"{cell(r['clean'])} | {cell(r['cloudy'])} | {cell(r['adv-cloud'])} | "
                     f"{cell(r['defended adv-cloud'])} | {cell(r['defended adv-cloud (transfer)'])} | "
                     f"{regained / lost:+.0%} |")
    rv = result.get("robust_victim")
    if rv is None:
        return "\n".join(lines) + "\n"
    lines += ["", f"Victim adversarially fine-tuned end to end ({rv['epochs']} epochs, default threat), white-box:",
              "", "| condition | S (max F) |", "| --- | --- |"]
    lines += [f"| {k} | {cell(v)} |" for k, v in rv["rows"].items()]
    return "\n".join(lines) + "\n"


def classifier_part(args: argparse.Namespace) -> dict:
    from advbench.defenses import DefendedModel
    from advbench.evaluate import evaluate
    from advbench.training import TrainConfig, train_classifier

    victim, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="digits", epochs=10, seed=args.seed),
                                    progress=False)
    from advbench.datasets import load_dataset

    data = load_dataset("digits", seed=args.seed)
    cfg = DefenseTrainConfig(epochs=args.defense_epochs * 2, batch_size=64, attack_steps=5, base=4, depth=1,
                             eps_n=0.1, seed=args.seed)
    net, _ = train_defensenet(victim, data.x_train, data.y_train, CLASSIFICATION, cfg)
    defended = DefendedModel(net, victim)
    x, y = data.x_test, data.y_test
    rows = {}
    attacks = {"pgd": {"steps": 20}, "square": {"n_queries": 1000}, "adv-cloud": {"eps_e": 0.2, "steps": 20}}
    for label, model in (("undefended", victim), ("DefenseNet (white-box)", defended)):
        for name, params in attacks.items():
            res = evaluate(model, x, y, attacks=[name], eps=[0.1], norm="linf", attack_kwargs={name: params},
                           seed=args.seed)
            rows[f"{label} {name}"] = {"clean": res.clean_accuracy, "robust": res.per_eps[0].robust_accuracy}
    # black box: PGD and adv-cloud examples crafted on the undefended victim, fed to the defended model
    for name, params in attacks.items():
        if name == "square":
            continue
        out = create_attack(name, norm="linf", eps=0.1, **params)(victim, x, y,
                                                                 generator=torch.Generator().manual_seed(args.seed))
        with torch.no_grad():
            acc = float((defended(out.x_adv).argmax(1) == y).float().mean())
        rows[f"DefenseNet (transfer) {name}"] = {"clean": None, "robust": acc}
    return {"rows": rows, "victim_accuracy": meta["test_accuracy"]}


def gat_part(args: argparse.Namespace) -> dict:
    from advbench.datasets import load_dataset
    from advbench.evaluate import evaluate
    from advbench.training import TrainConfig, train_classifier

    data = load_dataset("digits", seed=args.seed)
    x, y = data.x_test, data.y_test
    threats = {"linf": 0.1, "l2": 0.5}
    runs = {"standard": {}, "pgd linf": {"adversarial": "pgd", "adv_norm": "linf", "adv_eps": 0.1},
            "pgd l2": {"adversarial": "pgd", "adv_norm": "l2", "adv_eps": 0.5}}
    for strategy in ("avg", "max", "minmax"):
        runs[f"gat-{strategy}"] = {"adversarial": f"gat-{strategy}", "gat_types": "linf:0.1,l2:0.5"}
    rows = {}
    for label, extra in runs.items():
        model, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="digits", epochs=10, adv_steps=5,
                                                   seed=args.seed, **extra), progress=False)
        row = {"clean": meta["test_accuracy"], "gat_weights": meta.get("gat_weights")}
        robust_all = torch.ones_like(y, dtype=torch.bool)
        for norm, eps in threats.items():
            res = evaluate(model, x, y, attacks=["pgd"], eps=[eps], norm=norm, attack_kwargs={"pgd": {"steps": 20}},
                           seed=args.seed)
            row[f"{norm} {eps}"] = res.per_eps[0].robust_accuracy
            robust_all &= torch.tensor([s["robust"] for s in res.samples if s["eps"] == eps])
        row["union"] = float(robust_all.float().mean())
        rows[label] = row
        print(label, row)
    return {"rows": rows, "threats": threats}


def tables(results: dict) -> str:
    lines = []
    for part in ("synthetic", "photos"):
        r = results["sod"][part]
        lines += [f"### SOD: {part}", "", "| condition | " + " | ".join(COLS) + " |", "|" + " --- |" * (len(COLS) + 1)]
        for name, m in r["rows"].items():
            lines.append(f"| {name} | " + " | ".join(f"{m[c]:.3f}" for c in COLS) + " |")
        lines += ["", f"DefenseNet + victim / victim inference time: {r['cost']['ratio']:.2f}x", ""]
    lines += ["### Digits classifier (robust accuracy at linf 0.1)", "", "| condition | clean | robust |",
              "| --- | --- | --- |"]
    for name, m in results["classifier"]["rows"].items():
        clean = "-" if m["clean"] is None else f"{m['clean']:.3f}"
        lines.append(f"| {name} | {clean} | {m['robust']:.3f} |")
    g = results["gat"]
    keys = [f"{n} {e}" for n, e in g["threats"].items()]
    lines += ["", "### Multi-perturbation adversarial training (digits, PGD-20 robust accuracy)", "",
              "| training | clean | " + " | ".join(keys) + " | union | final weights |",
              "|" + " --- |" * (len(keys) + 4)]
    for name, m in g["rows"].items():
        w = ", ".join(f"{k} {v:.2f}" for k, v in (m["gat_weights"] or {}).items()) or "-"
        lines.append(f"| {name} | {m['clean']:.3f} | " + " | ".join(f"{m[k]:.3f}" for k in keys)
                     + f" | {m['union']:.3f} | {w} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("defense_repro"))
    ap.add_argument("--sod-images", type=int, default=300)
    ap.add_argument("--sod-epochs", type=int, default=20)
    ap.add_argument("--defense-epochs", type=int, default=8)
    ap.add_argument("--attack-steps", type=int, default=5, help="attack steps per DefenseNet training batch (SOD)")
    ap.add_argument("--defense-base", type=int, default=4,
                    help="SOD DefenseNet width (4 keeps DefenseNet + victim within 1.3x the victim's time)")
    ap.add_argument("--defense-depth", type=int, default=2, help="SOD DefenseNet depth")
    ap.add_argument("--eps-e", type=float, default=0.2, help="SOD evaluation: adv-cloud exposure budget")
    ap.add_argument("--eps-n", type=float, default=8 / 255, help="SOD evaluation: additive budget (adv-cloud, pgd)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--robust-epochs", type=int, default=24,
                    help="budget part: epochs of the end-to-end adversarial fine-tuning of the victim")
    ap.add_argument("--parts", default="sod,classifier,gat", help="any of sod, classifier, gat, budget, weak")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for part, fn in (("sod", sod_part), ("classifier", classifier_part), ("gat", gat_part),
                     ("budget", budget_part), ("weak", weak_part)):
        if part in args.parts.split(",") and part not in results:
            results[part] = fn(args)
            results_file.write_text(json.dumps(results, indent=2, default=str) + "\n")
    for part in ("budget", "weak"):
        if part in results:
            text = budget_table(results[part])
            (args.out / f"{part}.md").write_text(text)
            print(text)
    if {"sod", "classifier", "gat"} <= set(results):
        text = tables(results)
        (args.out / "tables.md").write_text(text)
        print(text)
    elif "sod" in results:  # a partial run: the SOD rows only
        for part in ("synthetic", "photos"):
            print(f"SOD {part} (DefenseNet + victim / victim: {results['sod'][part]['cost']['ratio']:.2f}x)")
            for name, m in results["sod"][part]["rows"].items():
                print(f"  {name:32s} " + "  ".join(f"{c} {m[c]:.3f}" for c in COLS))


if __name__ == "__main__":
    main()
