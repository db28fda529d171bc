"""The attacks, defenses and detection stack on a GPU, checked against the same calls on the CPU.

Skipped unless pytest runs with ``--device cuda`` on a machine with a GPU::

    .venv/bin/python -m pytest -q tests/test_device.py --device cuda

``ADVBENCH_DEVICE_DRY_RUN=1`` runs them on the CPU (CPU against CPU), which checks the tests themselves on a
machine without a GPU; it proves nothing about CUDA.

What may differ between devices, and so what the tests compare: CPU and CUDA generators give different streams
for the same seed, so attacks with random starts are compared by their success rates, and draws advbench makes
from a CPU generator (patch jitter, cloud masks, training batches) must match exactly.  Float rounding differs
(cuDNN, atomic adds), so deterministic attacks agree up to a few pixels flipped by near-zero gradient signs.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

import advbench
from advbench.attack import generator_for
from advbench.threat import ThreatModel

#: Attacks that need more than one classifier (an ensemble), tested on their own below.
ENSEMBLE_ONLY = {"minmax-ensemble", "avg-ensemble"}


@pytest.fixture(scope="module")
def dev(device: torch.device) -> torch.device:
    if device.type == "cpu" and not os.environ.get("ADVBENCH_DEVICE_DRY_RUN"):
        pytest.skip("device checks run with --device cuda (or ADVBENCH_DEVICE_DRY_RUN=1 on the CPU)")
    return device


@pytest.fixture(autouse=True)
def _deterministic_cudnn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


@pytest.fixture(scope="module")
def on_dev(dev, digits_model, digits_batch):
    """The digits CNN and 64 correctly classified digits, copied to the device under test."""
    x, y = digits_batch
    return copy.deepcopy(digits_model).to(dev).eval(), x.to(dev), y.to(dev)


def _same_device(t: torch.Tensor, dev: torch.device) -> bool:
    return t.device.type == dev.type


# -- generators and random starts ------------------------------------------------------------------------
def test_generator_for_keeps_an_indexless_generator_of_the_same_device(dev) -> None:
    gen = torch.Generator(device=dev.type).manual_seed(3)
    indexed = torch.device(dev.type, 0) if dev.type == "cuda" else dev
    assert generator_for(indexed, gen) is gen
    cpu_gen = torch.Generator().manual_seed(3)
    derived = generator_for(indexed, cpu_gen)
    assert derived.device.type == dev.type


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0), ("l1", 3.0), ("l0", 5)])
def test_random_start_from_a_cpu_generator_is_the_cpu_draw(dev, digits_batch, norm, eps) -> None:
    x = digits_batch[0][:8]
    tm = ThreatModel(norm, eps)
    cpu = tm.random_init(x, torch.Generator().manual_seed(5))
    there = tm.random_init(x.to(dev), torch.Generator().manual_seed(5))
    assert _same_device(there, dev)
    assert torch.allclose(there.cpu(), cpu, atol=1e-6)


# -- classifier attacks ----------------------------------------------------------------------------------
def test_native_pgd_equals_torchattacks_pgd_on_the_device(on_dev) -> None:
    import torchattacks

    model, x, y = on_dev
    out = advbench.create_attack("pgd", eps=0.1, steps=5, step_size=0.02, random_start=False, early_stop=False)(
        model, x, y)
    ref = torchattacks.PGD(model, eps=0.1, alpha=0.02, steps=5, random_start=False)(x, y)
    assert _same_device(out.x_adv, x.device)
    assert torch.allclose(out.x_adv, ref, atol=1e-5)


def test_deterministic_pgd_agrees_with_the_cpu(on_dev, digits_model, digits_batch) -> None:
    model, x, y = on_dev
    attack = advbench.create_attack("pgd", eps=0.1, steps=10, step_size=0.025, random_start=False, early_stop=False)
    there = attack(model, x, y)
    cpu = attack(digits_model, *digits_batch)
    differ = (there.x_adv.cpu() - cpu.x_adv).abs() > 1e-4
    assert float(differ.float().mean()) < 0.01, "more than 1% of the pixels differ from the CPU run"
    assert abs(float(there.success.float().mean()) - float(cpu.success.float().mean())) <= 2 / len(y)


def _fast_kwargs(name: str) -> dict:
    """Small budgets so every registered attack runs in seconds."""
    kwargs = {"pgd": {"steps": 10}, "pgd-cw": {"steps": 10}, "ta-pgd": {"steps": 10}, "apgd": {"steps": 10},
              "apgd-ce": {"steps": 10}, "apgd-dlr": {"steps": 10}, "apgd-t": {"steps": 10}, "fab": {"steps": 10},
              "fab-t": {"steps": 10}, "square": {"n_queries": 200}, "cw": {"steps": 30}, "deepfool": {"steps": 20},
              "eot": {"steps": 10}, "minmax-transform": {"steps": 10}, "minmax-universal": {"steps": 10, "k": 4},
              "avg-universal": {"steps": 10, "k": 4}, "adv-cloud": {"steps": 5},
              "autoattack": {"steps": 10, "n_queries": 200}}
    return kwargs.get(name, {})


@pytest.mark.parametrize("name", sorted(set(advbench.list_attacks()) - ENSEMBLE_ONLY))
def test_every_attack_runs_on_the_device_and_matches_the_cpu(name, on_dev, digits_model, digits_batch) -> None:
    """Same attack, same seed: the budget holds (advbench checks it on every call), the outputs stay on the
    device, and the success rate is within 15 points of the CPU run (the random streams differ)."""
    model, x, y = on_dev
    x, y = x[:32], y[:32]
    params = _fast_kwargs(name)
    eps = 0.1 if name != "cw" else None
    attack = advbench.create_attack(name, **({"eps": eps} if eps is not None else {}), **params)
    there = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    cpu = attack(digits_model, digits_batch[0][:32], digits_batch[1][:32], generator=torch.Generator().manual_seed(0))
    for t in (there.x_adv, there.success, there.adv_pred):
        assert _same_device(t, x.device), f"{name} returned a tensor on {t.device}"
    assert float(there.x_adv.min()) >= 0 and float(there.x_adv.max()) <= 1
    rate, rate_cpu = float(there.success.float().mean()), float(cpu.success.float().mean())
    assert abs(rate - rate_cpu) <= 0.15, f"{name}: success {rate:.2f} on {x.device} vs {rate_cpu:.2f} on the CPU"


def test_minmax_ensemble_weights_on_the_device(dev, digits_model, digits_batch) -> None:
    from advbench.attacks.ensemble import ModelEnsemble
    from advbench.training import TrainConfig, train_classifier

    mlp = train_classifier(TrainConfig(arch="mlp", dataset="digits", epochs=3, seed=1), progress=False)[0]
    members = [copy.deepcopy(digits_model), mlp]
    x, y = digits_batch[0][:32], digits_batch[1][:32]
    attack = advbench.create_attack("minmax-ensemble", eps=0.15, steps=10, early_stop=False)
    there = attack(ModelEnsemble([copy.deepcopy(m).to(dev) for m in members], ["cnn", "mlp"]), x.to(dev), y.to(dev))
    cpu = attack(ModelEnsemble(members, ["cnn", "mlp"]), x, y)
    w = there.weights
    assert _same_device(w, dev) and bool((w >= 0).all()) and torch.allclose(w.sum(1), torch.ones_like(w[:, 0]))
    assert torch.allclose(w.cpu(), cpu.weights, atol=0.05), "the learned weights differ from the CPU run"


def test_streamed_universal_perturbation_takes_a_cpu_generator(on_dev) -> None:
    from advbench.attacks.universal import stream_universal

    model, x, y = on_dev
    result = stream_universal(model, x, y, eps=0.2, epochs=1, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert _same_device(result.delta, x.device) and float(result.delta.abs().max()) <= 0.2 + 1e-6


def _run_on_both(run_cli, args: list[str], dev: torch.device, store) -> tuple[dict, dict]:
    """``advbench run ARGS --json`` on ``dev``, then on the CPU; off the CPU the two must be stored apart."""
    common = [*args, "--store", str(store), "--json"]
    code, out, err = run_cli(*common, "--device", str(dev))
    assert code == 0, err
    there = json.loads(out)
    code, out, err = run_cli(*common)
    assert code == 0, err
    cpu = json.loads(out)
    code, out, err = run_cli("results", "export", "--format", "json", "--store", str(store))
    assert code == 0, err
    records = {r["config_hash"]: r for r in json.loads(out)}
    stored = records[there["config_hash"]]
    if dev.type != "cpu":
        assert len(records) == 2, "a GPU run must not be answered by the stored CPU run"
        assert stored["device"].startswith("cuda:") and stored["config"]["device"] == "cuda"
    return there, cpu


def test_cli_run_on_the_device_records_it_and_agrees_with_the_cpu(dev, digits_model, run_cli, tmp_path) -> None:
    args = ["run", "--model", digits_model.checkpoint_file, "--dataset", "digits", "--attack", "pgd", "--eps", "0.1",
            "--n-samples", "128"]
    there, cpu = _run_on_both(run_cli, args, dev, tmp_path / "r.db")
    assert abs(there["robust_accuracy"] - cpu["robust_accuracy"]) <= 0.03


def test_stealthy_multitask_attack_on_the_device_takes_cpu_ground_truth(dev) -> None:
    from advbench import create_attack
    from advbench.datasets.multitask import generate_multitask_scenes
    from advbench.models.multitask import create_multitask_model

    x, targets, _ = generate_multitask_scenes(4, 32, seed=0)
    torch.manual_seed(0)
    model = create_multitask_model("mtl-unet", ("seg", "depth"), 4, base=4, levels=2).eval()
    attack = create_attack("stealthy-multitask", eps=8 / 255, steps=5, target_task="seg")
    cpu = attack(model, x, {t: targets[t] for t in ("seg", "depth")})
    there = attack(copy.deepcopy(model).to(dev), x.to(dev), {t: targets[t] for t in ("seg", "depth")})
    assert _same_device(there.x_adv, dev)
    assert float((there.x_adv - x.to(dev)).abs().max()) <= 8 / 255 + 1e-6
    assert torch.allclose(there.relative_change.cpu(), cpu.relative_change, atol=0.05)


# -- training ---------------------------------------------------------------------------------------------
def test_classifier_training_on_the_device_matches_the_cpu(dev) -> None:
    """Same seed, same minibatches: the test accuracy is the CPU run's up to float rounding."""
    from advbench.training import TrainConfig, train_classifier

    cfg = TrainConfig(arch="small_cnn", dataset="digits", epochs=4, seed=0)
    model, meta = train_classifier(cfg, progress=False, device=dev)
    _, cpu_meta = train_classifier(cfg, progress=False)
    assert _same_device(next(model.parameters()), dev)
    assert abs(meta["test_accuracy"] - cpu_meta["test_accuracy"]) <= 0.03, (meta["test_accuracy"], cpu_meta)
    if dev.type == "cuda":
        assert meta["device"].startswith("cuda:")
    robust, _ = train_classifier(TrainConfig(arch="mlp", dataset="digits", epochs=1, seed=0, adversarial="pgd",
                                             adv_steps=3), progress=False, device=dev)
    assert _same_device(next(robust.parameters()), dev)


def test_training_commands_on_the_device_write_cpu_checkpoints(dev, run_cli, tmp_path) -> None:
    from advbench.checkpoints import read_metadata
    from advbench.models.loading import load_model
    from advbench.training.sod import load_sod_model

    clf, sod, dn = tmp_path / "clf.safetensors", tmp_path / "sod.safetensors", tmp_path / "dn.safetensors"
    code, _, err = run_cli("train", "--model", "small_cnn", "--dataset", "digits", "--epochs", "2", "--out", str(clf),
                           "--device", str(dev))
    assert code == 0, err
    assert next(load_model(clf).parameters()).device.type == "cpu" and read_metadata(clf)["test_accuracy"] > 0.5
    code, _, err = run_cli("train-sod", "--dataset", "synthetic-sod:n=12,size=32", "--epochs", "2", "--base", "4",
                           "--depth", "2", "--out", str(sod), "--device", str(dev), "--json")
    assert code == 0, err
    assert next(load_sod_model(sod).parameters()).device.type == "cpu"
    code, out, err = run_cli("defend", "train", "--victim", str(sod), "--dataset", "synthetic-sod:n=12,size=32",
                             "--epochs", "1", "--attack-steps", "2", "--out", str(dn), "--device", str(dev), "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] >= 1 and dn.exists()


def test_multitask_training_on_the_device_draws_the_cpu_batches_and_writes_a_cpu_checkpoint(dev, run_cli,
                                                                                            tmp_path) -> None:
    from advbench.training.multitask import load_multitask_model

    summaries = {}
    for where in ("cpu", str(dev)):
        ckpt = tmp_path / f"mt-{where.replace(':', '_')}.safetensors"
        code, out, err = run_cli("train-multitask", "--dataset", "synthetic-multitask:n=24,size=16", "--epochs", "2",
                                 "--base", "4", "--levels", "2", "--out", str(ckpt), "--device", where, "--json")
        assert code == 0, err
        summaries[where] = json.loads(out)
        assert next(load_multitask_model(ckpt).parameters()).device.type == "cpu"
    cpu, there = summaries["cpu"], summaries[str(dev)]
    assert there["first_loss"] == pytest.approx(cpu["first_loss"], rel=1e-3), "same seed, same first batches"
    for task, value in cpu["test_metrics"].items():
        assert there["test_metrics"][task] == pytest.approx(value, rel=0.05, abs=0.02), task
    assert "device" not in cpu and (there.get("device", "cpu").startswith("cuda:") or dev.type == "cpu")


def test_admm_prune_on_the_device_writes_a_cpu_child_with_the_cpu_sparsity(dev, digits_model, tmp_path) -> None:
    """ADMM rounds, masked retraining and adversarial steps on the device; the masks keep the same shape of
    sparsity as on the CPU, and the child checkpoint is written from CPU tensors."""
    from advbench.compression import PruneConfig
    from advbench.compression.pipeline import prune_checkpoint
    from advbench.models.loading import load_model

    cfg = PruneConfig(rounds=2, epochs_per_round=1, retrain_epochs=1, adversarial=True, adv_steps=2, seed=0)
    metas = {}
    for where in ("cpu", str(dev)):
        out = tmp_path / f"child-{where.replace(':', '_')}.safetensors"
        metas[where] = prune_checkpoint(digits_model.checkpoint_file, "digits", cfg, out=out, target=0.5,
                                        progress=False, device=where)
        child = load_model(out)
        assert next(child.parameters()).device.type == "cpu"
    cpu, there = metas["cpu"]["compression"], metas[str(dev)]["compression"]
    assert there["per_layer_sparsity"] == pytest.approx(cpu["per_layer_sparsity"], abs=0.01)
    assert abs(metas[str(dev)]["test_accuracy"] - metas["cpu"]["test_accuracy"]) <= 0.05
    assert "device" not in cpu and there.get("device", "cpu") == dev.type


# -- clouds, SOD and defenses ------------------------------------------------------------------------------
def test_cloud_masks_on_the_device_are_seeded_and_in_range(dev) -> None:
    from advbench.attacks.clouds import CloudSpec, sample_clouds

    spec = CloudSpec(coverage=0.5, thickness=0.7)
    a = sample_clouds(spec, 3, 32, 40, torch.Generator(device=dev).manual_seed(2))
    b = sample_clouds(spec, 3, 32, 40, torch.Generator(device=dev).manual_seed(2))
    assert _same_device(a, dev) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 0.7 + 1e-6


def test_sod_robustness_rows_on_the_device_match_the_cpu(dev) -> None:
    """Clouds come from a CPU generator, so both devices attack the same cloudy scenes."""
    from advbench.models.sod import create_sod_model
    from advbench.sod.robustness import CloudAttackConfig, sod_robustness

    torch.manual_seed(0)
    model = create_sod_model("unet-sod", mean=(0.5,) * 3, std=(0.25,) * 3, base=4, depth=2).eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gt = (torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.6).float()
    cfg = CloudAttackConfig(steps=5, pgd_steps=5)
    cpu = sod_robustness(model, x, gt, cfg=cfg)
    there = sod_robustness(copy.deepcopy(model).to(dev), x.to(dev), gt.to(dev), cfg=cfg)
    for row in ("clean", "cloudy"):
        assert there["rows"][row]["mae"] == pytest.approx(cpu["rows"][row]["mae"], abs=1e-4)
    for row in ("adv-cloud", "pgd"):
        assert there["rows"][row]["mae"] == pytest.approx(cpu["rows"][row]["mae"], abs=0.02)


def test_sod_metrics_of_device_tensors_equal_the_cpu_values(dev) -> None:
    from advbench.sod.metrics import sod_metrics

    pred = torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    gt = (torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert sod_metrics(pred.to(dev), gt.to(dev)) == pytest.approx(sod_metrics(pred, gt))


def test_defensenet_trains_on_the_device_and_leaves_the_victim_bit_identical(dev, digits_model, digits_test) -> None:
    from advbench.defenses.defensenet import DefenseTrainConfig, train_defensenet
    from advbench.objectives import CLASSIFICATION

    victim = copy.deepcopy(digits_model).to(dev)
    x, y = digits_test[0][:64].to(dev), digits_test[1][:64].to(dev)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    cfg = DefenseTrainConfig(epochs=1, batch_size=32, base=4, depth=1, attack_steps=2, eps_n=0.05)
    net, summary = train_defensenet(victim, x, y, CLASSIFICATION, cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items()), "the victim's weights changed"
    assert _same_device(next(net.parameters()), dev) and summary["steps"] == 2
    assert _same_device(net(x[:4]), dev)


@pytest.mark.parametrize("spec", ["jpeg", "bitdepth:bits=3", "median:k=3"])
def test_input_defenses_on_the_device_equal_the_cpu(dev, spec) -> None:
    from advbench.defenses import parse_defense

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    defense = parse_defense(spec)
    there = defense.to(dev)(x.to(dev))
    assert _same_device(there, dev)
    assert torch.allclose(there.cpu(), parse_defense(spec)(x), atol=1e-6)


def test_bpda_gives_nonzero_gradients_through_jpeg_on_the_device(dev) -> None:
    from advbench.defenses.input_transforms import JPEG

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(dev).requires_grad_(True)
    (grad,) = torch.autograd.grad(JPEG()(x).square().sum(), x)
    assert _same_device(grad, dev) and float(grad.abs().sum()) > 0


def test_defended_run_on_the_device(dev, digits_model, tmp_path) -> None:
    from advbench.runner import RunSpec
    from advbench.runner import run as run_spec

    spec = RunSpec(model=digits_model.checkpoint_file, dataset="digits", attacks=["pgd"], eps=[0.1], n_samples=64,
                   device=str(dev), defense="jpeg")
    record = run_spec(spec, store=tmp_path / "r.db", progress=False).record
    assert record["config"]["defense"]["bpda"] is True
    assert 0 <= record["metrics"]["robust_accuracy"] <= record["metrics"]["clean_accuracy"]
    assert record["device"].startswith("cuda:") if dev.type == "cuda" else record["device"] == "cpu"


def test_sod_run_with_defensenet_on_the_device_agrees_with_the_cpu(dev, run_cli, tmp_path) -> None:
    """``advbench run --device`` on an SOD checkpoint behind DefenseNet: every row, clouds drawn on the CPU."""
    from advbench.datasets.sod import load_sod_dataset
    from advbench.defenses.defensenet import DefenseTrainConfig, save_defensenet, train_defensenet
    from advbench.objectives import SOD
    from advbench.training.sod import save_sod_model, train_sod

    data = load_sod_dataset("synthetic-sod:n=24,size=32")
    model, _ = train_sod(data, epochs=2, batch_size=8, model_options={"base": 4, "depth": 2}, progress=False)
    victim = save_sod_model(model, tmp_path / "sod.safetensors")
    cfg = DefenseTrainConfig(epochs=1, batch_size=8, base=4, depth=1, attack_steps=1)
    net, _ = train_defensenet(model, data.x_train, data.m_train, SOD, cfg, progress=False)
    dn = save_defensenet(net, tmp_path / "dn.safetensors", victim_checkpoint=str(victim))
    there, cpu = _run_on_both(run_cli, ["run", "--model", str(victim), "--dataset", "synthetic-sod:n=24,size=32",
                                            "--attack", "adv-cloud,pgd", "--steps", "3", "--n-samples", "8",
                                            "--defense", f"defensenet:{dn}"], dev, tmp_path / "r.db")
    assert set(there["rows"]) == set(cpu["rows"])
    for row, values in cpu["rows"].items():
        exact = row in ("clean", "cloudy", "defended clean", "defended cloudy")
        assert there["rows"][row]["mae"] == pytest.approx(values["mae"], abs=1e-4 if exact else 0.02), row


def test_multitask_run_on_the_device_agrees_with_the_cpu(dev, run_cli, tmp_path) -> None:
    """``advbench run --device`` on a multi-task checkpoint: the metrics sum device batches on the CPU."""
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.training.multitask import save_multitask_model, train_multitask

    data = load_multitask_dataset("synthetic-multitask:n=24,size=16")
    model, _ = train_multitask(data, epochs=1, batch_size=8, model_options={"base": 4, "levels": 2},
                               progress=False)
    ckpt = save_multitask_model(model, tmp_path / "mt.safetensors")
    there, cpu = _run_on_both(run_cli, ["run", "--model", str(ckpt), "--dataset",
                                            "synthetic-multitask:n=24,size=16", "--attack", "stealthy-multitask",
                                            "--target-task", "seg", "--eps", "8/255", "--steps", "3",
                                            "--n-samples", "8"], dev, tmp_path / "r.db")
    assert there["clean"] == pytest.approx(cpu["clean"], abs=1e-4)
    for task, value in cpu["adversarial"].items():
        assert there["adversarial"][task] == pytest.approx(value, rel=0.1, abs=0.02), task
    assert abs(there["stealth_success_rate"] - cpu["stealth_success_rate"]) <= 0.25


# -- aerial detection --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aerial(tmp_path_factory):
    from advbench.datasets.detection import generate_aerial_dataset, load_detection_dataset

    root = generate_aerial_dataset(tmp_path_factory.mktemp("aerial") / "evd", n_images=9, size=(128, 96), seed=3)
    return root, load_detection_dataset(f"evd4uav:{root}")


@pytest.mark.parametrize("arch", ["fcos-mnv3", "fasterrcnn-mnv3"])
def test_whitebox_patch_on_the_device_starts_like_the_cpu(dev, aerial, arch) -> None:
    """The minibatches and the jitter come from the attack's CPU generator, so the first objective (before
    any update) is the CPU's up to float rounding, and the patch comes back on the CPU, inside [0, 1]."""
    from advbench import create_attack
    from advbench.attacks.patch import PatchSet
    from advbench.models.detectors import create_detector

    samples = aerial[1]
    det = create_detector(arch, class_names=samples[0].class_names, image_size=(128, 96), seed=0).eval()
    data = PatchSet.from_samples(samples)
    attack = create_attack("patch-whitebox", steps=3, batch_size=3, patch_size=8, reduction="image")
    cpu = attack(det, data)
    there = attack(copy.deepcopy(det).to(dev), data)
    assert there.patch.device.type == "cpu" and float(there.patch.min()) >= 0 and float(there.patch.max()) <= 1
    assert there.history[0] == pytest.approx(cpu.history[0], rel=1e-3, abs=1e-5)


def test_batched_placement_on_the_device_matches_the_cpu(dev, aerial) -> None:
    """Jitter drawn from a CPU generator: the device's patched images and patch gradient are the CPU's, up to
    float rounding (the GPU's scatter-add of overlapping patches has no fixed order)."""
    from advbench.attacks.patch import PatchSet
    from advbench.attacks.patches import PatchPlacement, PatchTransform, apply_patch_each

    data = PatchSet.from_samples(aerial[1])
    results = []
    for where in (torch.device("cpu"), dev):
        patch = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0)).to(where).requires_grad_(True)
        moved = data.to(where)
        out = apply_patch_each(moved.images, patch, moved.rboxes, PatchPlacement(footprint_filter=True),
                               PatchTransform(), torch.Generator().manual_seed(4))
        (grad,) = torch.autograd.grad(sum(o.square().sum() for o in out), patch)
        results.append(([o.cpu() for o in out], grad.cpu()))
    (cpu, g_cpu), (there, g_there) = results
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cpu, there, strict=True))
    assert torch.allclose(g_cpu, g_there, rtol=1e-3, atol=1e-3)  # float32 sums in another order: ~1e-4 apart


def test_minmax_and_random_search_patches_on_the_device(dev, aerial) -> None:
    from advbench import create_attack
    from advbench.attacks.patch import PatchSet
    from advbench.errors import ConfigError
    from advbench.models.detectors import create_detector

    samples = aerial[1]
    det = create_detector("fcos-mnv3", class_names=samples[0].class_names, image_size=(128, 96), seed=0).to(dev)
    data = PatchSet.from_samples(samples)
    mm = create_attack("patch-minmax", steps=3, batch_size=3, patch_size=8, gamma=0.1, score_threshold=0.05,
                       weight_signal="detection-rate")(det, data)
    trace = torch.tensor(mm.info["weight_trace"])
    assert torch.all(trace >= 0) and torch.allclose(trace.sum(1), torch.ones(len(trace)), atol=1e-6)
    rs = create_attack("patch-random-search", queries=12, search_images=3, patch_size=8)(det, data)
    assert rs.info["detector_queries"] <= 12 and rs.patch.device.type == "cpu"
    if dev.type == "cuda":
        other = create_detector("fcos-mnv3", class_names=samples[0].class_names, image_size=(128, 96), seed=1)
        with pytest.raises(ConfigError, match="device"):
            create_attack("patch-minmax", steps=1, detectors=[other])(det, data)


def test_detect_attack_trains_and_attacks_on_the_device(dev, aerial, tmp_path) -> None:
    """``advbench detect-attack``'s pipeline run on the device: the detector trains there, the patch is learned
    there, and the record names the device."""
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run as run_pipeline

    root, _ = aerial
    params = {"steps": 2, "batch_size": 2, "patch_size": 8}
    cfg = RunConfig.build(models=["fcos-mnv3"], dataset=f"evd4uav:{root}", attacks=["patch-whitebox"], eps=[0.0],
                          n_samples=None, batch_size=64, device=str(dev), experiment="detection",
                          attack_params={"patch-whitebox": params},
                          options={"detector_epochs": 1, "score_threshold": 0.05, "progress": False})
    outcome = run_pipeline(cfg, store=tmp_path / "r.db", progress=False)
    record = outcome.record
    assert outcome.complete and not outcome.skipped
    assert record.metrics["patch"]["min"] >= 0 and record.metrics["patch"]["max"] <= 1
    assert record.metrics["asr"] is None or 0 <= record.metrics["asr"] <= 1
    assert record.cost["steps"] == 2 and record.cost["detectors_trained_here"][0]["arch"] == "fcos-mnv3"
    assert len(record.samples) == record.metrics["counts"]["overall"]["vehicles"] > 0
    assert outcome.experiment.fitted.patch.device.type == "cpu"  # the patch comes back to the CPU
    assert record.config["device"] == dev.type
    if dev.type == "cuda":
        assert record.device.startswith("cuda:")
    else:
        assert record.device == "cpu"
