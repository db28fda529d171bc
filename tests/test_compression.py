"""Compression: exact projections, ADMM/magnitude pruning with masks that hold, honest compression
ratios, torch.nn.utils.prune interchange, the prune/inspect/compare commands, and clear errors."""

from __future__ import annotations

import itertools
import json
import sys

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from advbench.checkpoints import read_checkpoint, save_checkpoint
from advbench.compression import (
    PruneConfig,
    admm_prune,
    compression_stats,
    parse_per_layer,
    project_sparse,
    quantize,
    resolve_targets,
)
from advbench.compression.projections import quantization_levels, quantize_with_scale
from advbench.errors import CheckpointError, ConfigError, UnknownNameError
from advbench.models import create_model
from advbench.models.loading import load_model


def test_unstructured_projection_keeps_the_largest_magnitudes() -> None:
    w = torch.randn(7, 9, generator=torch.Generator().manual_seed(0))
    p = project_sparse(w, 0.75, "unstructured")
    k = round(0.25 * w.numel())
    assert int((p != 0).sum()) == k
    kept = p[p != 0].abs()
    dropped = w[p == 0].abs()
    assert float(kept.min()) >= float(dropped.max())
    assert torch.equal(p[p != 0], w[p != 0])  # kept weights are unchanged


@pytest.mark.parametrize("structure", ["filter", "channel"])
def test_structured_projection_is_the_closest_point(structure: str) -> None:
    """Brute force over every choice of kept filters/channels: ours is (one of) the closest."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 4, 3, 3, generator=gen)
    units = w.shape[0] if structure == "filter" else w.shape[1]
    ratio = 0.4
    k = round((1 - ratio) * units)
    p = project_sparse(w, ratio, structure)
    best = float("inf")
    for keep in itertools.combinations(range(units), k):
        mask = torch.zeros(units)
        mask[list(keep)] = 1
        shaped = mask.view(-1, 1, 1, 1) if structure == "filter" else mask.view(1, -1, 1, 1)
        best = min(best, float((w - w * shaped).square().sum()))
    assert float((w - p).square().sum()) == pytest.approx(best, rel=1e-6)
    dims = (1, 2, 3) if structure == "filter" else (0, 2, 3)
    assert int((p.abs().sum(dim=dims) > 0).sum()) == k


def test_quantization_maps_each_weight_to_its_nearest_level_and_keeps_zeros() -> None:
    w = torch.randn(200, generator=torch.Generator().manual_seed(2))
    w[::7] = 0
    for bits in (2, 3, 4):
        qw, q = quantize(w, bits)
        n = quantization_levels(bits)
        levels = torch.cat([-torch.arange(1, n + 1) * q, torch.arange(1, n + 1) * q])
        nearest = levels[(w[w != 0, None] - levels[None]).abs().argmin(dim=1)]
        assert torch.allclose(qw[w != 0], nearest)
        assert bool((qw[w == 0] == 0).all()) and bool((qw[w != 0] != 0).all())
        assert len(torch.unique(qw[w != 0])) <= 2 * n
        # the searched scale is no worse than the naive one (max |w| / n)
        naive = quantize_with_scale(w, float(w.abs().max()) / n, n)
        assert float((qw - w).square().sum()) <= float((naive - w).square().sum()) + 1e-9


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(arch="lenet5", dataset="digits", epochs=6), progress=False)
    path = tmp_path_factory.mktemp("dense") / "lenet.safetensors"
    save_checkpoint(model, path, meta)
    return path


@pytest.mark.parametrize("method,structure", [("admm", "unstructured"), ("magnitude", "filter"),
                                              ("admm", "channel")])
def test_pruning_masks_hold_after_retraining(method, structure, dense) -> None:
    from advbench.datasets import load_dataset

    model = load_model(dense)
    data = load_dataset("digits")
    targets = resolve_targets(model, structure=structure, target=0.5)
    report = admm_prune(model, data, targets, PruneConfig(method=method, structure=structure, rounds=2,
                                                          retrain_epochs=1), progress=False)
    layers = dict(model.named_modules())
    for name, mask in report.masks.items():
        w = layers[name].weight.detach()
        assert bool((w[mask == 0] == 0).all()), f"{name}: a pruned weight came back during retraining"
        units = w.shape[0] if structure == "filter" else (w.shape[1] if structure == "channel" else w.numel())
        dims = {"filter": tuple(range(1, w.ndim)), "channel": (0, *range(2, w.ndim))}.get(structure)
        alive = int((w != 0).sum()) if dims is None else int((w.abs().sum(dim=dims) > 0).sum())
        assert alive <= round(0.5 * units)


def test_prune_command_writes_an_honest_sidecar_and_inspect_agrees(dense, tmp_path, monkeypatch, capsys) -> None:
    from advbench.cli import main

    child = tmp_path / "child.safetensors"
    monkeypatch.setattr(sys, "argv", ["advbench", "prune", "--checkpoint", str(dense), "--dataset", "digits",
                                      "--per-layer", "conv1=0.5,conv2=0.8,fc1=0.9,fc2=0.8", "--rounds", "2",
                                      "--retrain-epochs", "1", "--quantize-bits", "4", "--out", str(child)])
    main()
    state, meta = read_checkpoint(child)
    weights = [v for k, v in state.items() if k.endswith(".weight") and v.ndim in (2, 4)]
    counted = sum(w.numel() for w in weights) / sum(int((w != 0).sum()) for w in weights)
    assert meta["compression"]["compression_ratio"] == pytest.approx(counted)
    assert meta["compression"]["per_layer_sparsity"]["fc1"] == pytest.approx(0.9, abs=1e-3)
    assert meta["compression"]["parent_sha256"] and meta["compression"]["quantization"]["fc1"]["bits"] == 4
    assert len(torch.unique(state["net.fc1.weight"][state["net.fc1.weight"] != 0])) <= 14
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["advbench", "inspect", str(child), "--json"])
    main()
    stats = json.loads(capsys.readouterr().out)
    assert stats["compression_ratio"] == pytest.approx(counted) and stats["flops"] > 0


def test_torch_prune_checkpoint_loads_and_matches(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("lenet5", input_shape=(1, 8, 8), num_classes=10)
    torch_prune.l1_unstructured(model.net.fc1, name="weight", amount=0.7)
    torch_prune.ln_structured(model.net.conv2, name="weight", amount=0.5, n=2, dim=0)
    torch.save(model.state_dict(), tmp_path / "pruned.pt")
    (tmp_path / "pruned.json").write_text(json.dumps({"arch": "lenet5", "input_shape": [1, 8, 8], "num_classes": 10}))
    loaded = load_model(tmp_path / "pruned.pt")
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
    assert compression_stats(loaded)["per_layer"]["fc1"]["sparsity"] == pytest.approx(0.7, abs=1e-3)


def test_bad_masks_and_targets_get_clear_errors(tmp_path) -> None:
    model = create_model("lenet5", input_shape=(1, 8, 8), num_classes=10)
    state = model.state_dict()
    w = state.pop("net.fc1.weight")
    meta = json.dumps({"arch": "lenet5", "input_shape": [1, 8, 8], "num_classes": 10})
    for mask, match in ((torch.ones(3, 3), "mask shape mismatch for 'net.fc1.weight'"),
                        (torch.full_like(w, 0.5), "not binary")):
        torch.save({**state, "net.fc1.weight_orig": w, "net.fc1.weight_mask": mask}, tmp_path / "bad.pt")
        (tmp_path / "bad.json").write_text(meta)
        with pytest.raises(CheckpointError, match=match):
            load_model(tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        resolve_targets(model, structure="unstructured", target=1.0)
    with pytest.raises(ConfigError, match="layer 'conv9' does not exist or unstructured pruning does not apply to it; "
                       "prunable layers: conv1, conv2, fc1"):
        resolve_targets(model, structure="unstructured", per_layer={"conv9": 0.5})
    with pytest.raises(ConfigError, match="quantization width"):
        quantize(torch.randn(4), 0)
    with pytest.raises(ConfigError, match="LAYER=RATIO"):
        parse_per_layer("conv1:0.5")
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_targets(model, structure="filter")
    with pytest.raises(UnknownNameError, match="unknown pruning structure 'blocks'; known pruning structures: block"):
        resolve_targets(model, structure="blocks", target=0.5)


def test_compare_reports_transfer_and_disparate_impact(dense, tmp_path) -> None:
    import sqlite3

    import advbench.experiments.compare  # noqa: F401 - registers "compare"
    from advbench.compression.pipeline import prune_checkpoint
    from advbench.experiments.compare import plot_comparison
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run

    child = tmp_path / "child.safetensors"
    prune_checkpoint(dense, "digits", PruneConfig(method="magnitude", retrain_epochs=1), out=child, target=0.8,
                     progress=False)
    cfg = RunConfig.build(models=[str(dense), str(child)], dataset="digits", attacks=["pgd"], eps=[0.05, 0.1],
                          n_samples=80, attack_params={"pgd": {"steps": 5}}, experiment="compare")
    outcome = run(cfg, store=tmp_path / "c.db", progress=False)
    report = outcome.record.metrics
    parent, kid = report["models"]
    assert parent["compression_ratio"] == pytest.approx(1.0) and kid["compression_ratio"] > 2
    for point in kid["curve"]:
        for key in ("transfer_asr_from_parent", "transfer_asr_to_parent", "worst_class_drop"):
            assert key in point
        assert point["transfer_asr_from_parent"] is None or 0 <= point["transfer_asr_from_parent"] <= 1
    assert "transfer_asr_from_parent" not in parent["curve"][0]
    # the disparate impact, recomputed from the per-sample rows: the largest per-class robust-accuracy drop
    rows = outcome.record.samples
    for point in kid["curve"]:
        def per_class(model: str, eps: float = point["eps"]) -> dict[int, float]:
            at = [r for r in rows if r["model"] == model and r["eps"] == eps]
            return {c: sum(r["robust"] for r in at if r["label"] == c) / sum(r["label"] == c for r in at)
                    for c in {r["label"] for r in at}}

        ref, mine = per_class(parent["model"]), per_class(kid["model"])
        assert point["worst_class_drop"] == pytest.approx(max(ref[c] - mine.get(c, 0.0) for c in ref))
    assert plot_comparison(report, tmp_path / "c.png").stat().st_size > 1000
    with sqlite3.connect(tmp_path / "c.db") as db:  # one record holds both models
        assert db.execute("select count(*) from runs").fetchone()[0] == 1


def test_models_without_layers_and_bad_structures() -> None:
    with pytest.raises(ConfigError, match="no Conv2d or Linear"):
        resolve_targets(nn.Sequential(nn.ReLU()), structure="unstructured", target=0.5)


def test_compare_command_table_json_plot_and_wandb(dense, tmp_path, monkeypatch, capsys) -> None:
    from advbench.cli import main
    from advbench.compression.pipeline import prune_checkpoint

    child = tmp_path / "kid.safetensors"
    prune_checkpoint(dense, "digits", PruneConfig(method="magnitude", retrain_epochs=1), out=child, target=0.7,
                     progress=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(sys, "argv", ["advbench", "compare", str(dense), str(child), "--dataset", "digits",
                                      "--eps", "0.1", "--n-samples", "40", "--steps", "3", "--store",
                                      str(tmp_path / "cmp.db"), "--wandb", "--json"])
    main()
    report = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in report["models"]] == ["lenet", "kid"]
    assert (tmp_path / "compare.png").exists() and report["plot"].endswith("compare.png")
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    monkeypatch.setattr(sys, "argv", ["advbench", "compare", str(dense), "--dataset", "digits"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "at least one compressed child" in capsys.readouterr().err
