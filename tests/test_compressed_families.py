"""Round trips of the compressed families of issue 21: prune with a structure, save, load, inspect (the structure
verified from the tensors), then attack; a tampered checkpoint fails ``inspect``; a 2:4 checkpoint made by
another tool is recognised as N:M."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import advbench
from advbench.checkpoints import read_checkpoint
from advbench.models.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dense_cnn(tmp_path_factory):
    """small_cnn (3x3 convs, as PatDNN's patterns need) trained briefly on digits."""
    from advbench.checkpoints import save_checkpoint
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="digits", epochs=2), progress=False)
    path = tmp_path_factory.mktemp("dense") / "cnn.safetensors"
    save_checkpoint(model, path, meta)
    return path


def _cli(monkeypatch, capsys, *args: str) -> int:
    from advbench.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["advbench", *args])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


FAMILIES = [
    ("block", ["--structure", "block", "--block", "8x16", "--target", "0.5"], "block block_rows=8 block_cols=16"),
    ("pattern", ["--structure", "pattern", "--patterns", "4", "--target", "0.5"], "pattern library_size=4 entries=4"),
    ("nm", ["--structure", "nm", "--nm", "2:4"], "nm n=2 m=4"),  # N:M sets its own ratio: no --target
    ("binary", ["--structure", "unstructured", "--target", "0.5", "--quantize-bits", "1"], "unstructured"),
]


@pytest.mark.parametrize(("family", "flags", "label"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_prune_save_load_inspect_attack(family, flags, label, dense_cnn, tmp_path, monkeypatch, capsys) -> None:
    child = tmp_path / f"{family}.safetensors"
    rc = _cli(monkeypatch, capsys, "prune", "--checkpoint", str(dense_cnn), "--dataset", "digits", "--out",
              str(child), "--rounds", "2", "--retrain-epochs", "1", *flags)
    assert rc == 0
    state, meta = read_checkpoint(child)
    fam = meta["compression"]["family"]
    assert fam["structure"]["name"] == label.split()[0] and meta["compression"]["parent_sha256"]
    # inspect reads the structure back from the tensors
    assert _cli(monkeypatch, capsys, "inspect", str(child), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["structure"]["structure"].startswith(label) and not stats["structure"]["violations"]
    assert set(stats["structure"]["layers"]) == set(meta["compression"]["targets"])
    if family == "binary":
        w = state["net.2.weight"]
        assert len(w[w != 0].abs().unique()) == 1, "a binary layer has one magnitude"
    # the pruned model is a model like any other: attack it
    model = load_model(child)
    x, y = advbench.datasets.load_dataset("digits").x_test[:16], advbench.datasets.load_dataset("digits").y_test[:16]
    out = advbench.create_attack("pgd", eps=0.1, steps=3)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert bool(advbench.create_attack("pgd", eps=0.1).threat.contains(out.x_adv, x).all())
    # a tampered copy (one pruned weight of the first pruned layer brought back) fails inspect, naming the layer
    from safetensors.torch import save_file

    layer = sorted(meta["compression"]["targets"])[0]
    key = f"net.{layer}.weight"
    tampered = dict(state)
    weight = tampered[key].clone()
    if family == "pattern":  # a kernel whose support is in no library pattern (all nine positions)
        weight.view(-1, 9)[0] = 1.0
    else:
        weight[tuple((weight == 0).nonzero()[0])] = 0.5
    tampered[key] = weight
    bad = tmp_path / f"{family}-tampered.safetensors"
    save_file(tampered, str(bad))
    bad.with_suffix(".json").write_text(json.dumps(meta))
    assert _cli(monkeypatch, capsys, "inspect", str(bad), "--json") == 1
    assert layer in json.loads(capsys.readouterr().out)["structure"]["violations"]


def test_a_two_four_checkpoint_from_torch_prune_is_recognised(tmp_path, monkeypatch, capsys) -> None:
    """A 2:4 mask applied with torch.nn.utils.prune (what PyTorch's semi-structured sparsity stores densely) loads,
    and inspect names the family from the tensors; a layer one weight off 2:4 is not claimed."""
    import torch.nn.utils.prune as torch_prune

    from advbench.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), num_classes=10)
    for layer in (model.net[0][2], model.net[2]):  # the second conv and the first linear layer
        groups = layer.weight.detach().reshape(layer.weight.shape[0], -1, 4).abs()
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.topk(2, dim=2).indices, True)
        torch_prune.custom_from_mask(layer, "weight", keep.reshape(layer.weight.shape))
    torch.save(model.state_dict(), tmp_path / "two_four.pt")
    (tmp_path / "two_four.json").write_text(json.dumps({"arch": "small_cnn", "input_shape": [1, 8, 8],
                                                        "num_classes": 10}))
    assert _cli(monkeypatch, capsys, "inspect", str(tmp_path / "two_four.pt"), "--json") == 0
    found = json.loads(capsys.readouterr().out)["structure"]
    assert found["structure"] == "nm n=2 m=4" and found["source"] == "tensors"
    assert set(found["layers"]) == {"0.2", "2"}


def _two_four_model() -> torch.nn.Module:
    """small_cnn whose second conv and first linear layer keep the 2 largest weights of every 4."""
    from advbench.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(1, 8, 8), num_classes=10)
    with torch.no_grad():
        for layer in (model.net[0][2], model.net[2]):
            groups = layer.weight.reshape(layer.weight.shape[0], -1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.abs().topk(2, dim=2).indices, True)
            layer.weight.mul_(keep.reshape(layer.weight.shape))
    return model


def _semi_structured_cpu(monkeypatch, layout: str, dense: torch.Tensor) -> torch.Tensor:
    """``dense`` as PyTorch's semi-structured tensor of ``layout``, built on the CPU.

    ``to_sparse_semi_structured`` refuses CPU tensors, so its device check is lifted here; the CUTLASS packing is
    torch's own CPU-capable code, and the saved file is what a GPU run writes (its device is remapped on load).
    cuSPARSELt's packing is a CUDA library call, so that layout gets stand-in packed values: only its refusal is
    tested here (the real one is tested on a GPU below)."""
    from torch.sparse.semi_structured import (
        SparseSemiStructuredTensor,
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    monkeypatch.setattr(SparseSemiStructuredTensor, "_validate_device_dim_dtype_shape",
                        classmethod(lambda cls, tensor: None))
    if layout == "cutlass":
        return SparseSemiStructuredTensorCUTLASS.from_dense(dense)
    packed = torch.zeros(dense.numel() * 9 // 16, dtype=dense.dtype)
    return SparseSemiStructuredTensorCUSPARSELT(dense.shape, packed, None, None, None, None)


@pytest.mark.filterwarnings("ignore:The PyTorch API of SparseSemiStructuredTensor")
def test_a_checkpoint_of_torch_semi_structured_tensors_loads_as_its_dense_two_four_weights(
        tmp_path, monkeypatch, capsys) -> None:
    """A state dict whose linear weight is a ``to_sparse_semi_structured`` tensor (CUTLASS layout), saved with
    torch.save: the safe loader accepts it, the weight comes back equal to the 2:4 dense tensor, inspect names the
    family, and the model attacks.  A cuSPARSELt tensor on a machine without a GPU is refused, saying why."""
    model = _two_four_model().half()
    dense = model.net[2].weight.detach().clone()
    model.net[2].weight = torch.nn.Parameter(_semi_structured_cpu(monkeypatch, "cutlass", dense), requires_grad=False)
    path = tmp_path / "semi.pt"
    torch.save(model.state_dict(), path)
    (tmp_path / "semi.json").write_text(json.dumps({"arch": "small_cnn", "input_shape": [1, 8, 8],
                                                    "num_classes": 10}))
    state, _ = read_checkpoint(path)
    assert type(state["net.2.weight"]) is torch.Tensor and torch.equal(state["net.2.weight"], dense)
    assert _cli(monkeypatch, capsys, "inspect", str(path), "--json") == 0
    found = json.loads(capsys.readouterr().out)["structure"]
    assert found["structure"] == "nm n=2 m=4" and {"0.2", "2"} <= set(found["layers"])
    loaded = load_model(path)
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(loaded(x), _two_four_model()(x), atol=0.05)  # same function up to fp16 rounding

    if torch.cuda.is_available():
        return
    model.net[2].weight = torch.nn.Parameter(_semi_structured_cpu(monkeypatch, "cusparselt", dense),
                                             requires_grad=False)
    torch.save(model.state_dict(), tmp_path / "cusparselt.pt")
    with pytest.raises(advbench.errors.CheckpointError, match=r"cusparselt\.pt: 'net\.2\.weight' is a cuSPARSELt"):
        read_checkpoint(tmp_path / "cusparselt.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="to_sparse_semi_structured needs a CUDA GPU")
def test_a_gpu_semi_structured_checkpoint_loads_as_two_four(tmp_path) -> None:
    """The real thing on a GPU: to_sparse_semi_structured with PyTorch's default backend, saved, read back dense."""
    from torch.sparse import to_sparse_semi_structured

    from advbench.compression.structures import recognise_nm

    model = _two_four_model().half().cuda()
    dense = model.net[2].weight.detach().clone()
    model.net[2].weight = torch.nn.Parameter(to_sparse_semi_structured(dense), requires_grad=False)
    torch.save(model.state_dict(), tmp_path / "gpu_semi.pt")
    state, _ = read_checkpoint(tmp_path / "gpu_semi.pt")
    assert torch.equal(state["net.2.weight"], dense.cpu())
    assert recognise_nm({"fc": state["net.2.weight"]}) == ["fc"]


def test_each_level_of_a_nested_batchnorm_model_gets_its_own_statistics(tmp_path, monkeypatch, capsys) -> None:
    """ResNet-20 (21 BatchNorms): levels share weights but not activations, so each level's BatchNorm statistics are
    re-estimated with its own weights and ?level=K loads them.  Checked against the activations themselves: the
    first BatchNorm's running mean equals the mean of its inputs over the training images at that level."""
    from advbench.checkpoints import save_checkpoint
    from advbench.compression.nested import NORM_PREFIX
    from advbench.datasets import load_dataset
    from advbench.models.resolve import resolve_model
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(arch="resnet20", dataset="digits", epochs=1), progress=False)
    parent = save_checkpoint(model, tmp_path / "resnet.safetensors", meta)
    child = tmp_path / "nested.safetensors"
    assert _cli(monkeypatch, capsys, "prune", "--checkpoint", str(parent), "--dataset", "digits", "--out",
                str(child), "--rounds", "1", "--retrain-epochs", "1", "--structure", "nested",
                "--levels", "0.5,0.9") == 0
    from safetensors import safe_open

    with safe_open(str(child), framework="pt") as fh:
        stored = [k for k in fh.keys() if k.startswith(NORM_PREFIX)]
    assert len(stored) == 21 * 3 * 2  # every BatchNorm, its three buffers, both levels
    x = load_dataset("digits", seed=int(meta["training"]["seed"])).x_train
    means = []
    for level in (0, 1):
        net = resolve_model(f"{child}?level={level}").model
        first = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        seen: list[torch.Tensor] = []
        hook = first.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0].mean(dim=(0, 2, 3))))
        with torch.no_grad():
            for batch in x.split(256):
                net(batch)
        hook.remove()
        assert torch.allclose(first.running_mean, torch.stack(seen).mean(0), atol=1e-5), level
        means.append(first.running_mean.clone())
    assert not torch.allclose(means[0], means[1], atol=1e-4)  # the sparser level's activations differ
    plain = resolve_model(str(child)).model
    first_plain = next(m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(first_plain.running_mean, means[0])  # without ?level: level 0, statistics included


def test_a_nested_checkpoint_is_evaluated_at_each_level(dense_cnn, tmp_path, monkeypatch, capsys) -> None:
    """One checkpoint, three levels: each level's sub-model is the denser one's subset, ?level=K loads it, and a
    tampered level mask fails inspect."""
    from safetensors.torch import save_file

    from advbench.errors import ConfigError
    from advbench.models.resolve import resolve_model

    child = tmp_path / "nested.safetensors"
    assert _cli(monkeypatch, capsys, "prune", "--checkpoint", str(dense_cnn), "--dataset", "digits", "--out",
                str(child), "--rounds", "2", "--retrain-epochs", "1", "--structure", "nested",
                "--levels", "0.5,0.75,0.9") == 0
    state, meta = read_checkpoint(child)
    levels = meta["compression"]["levels"]
    assert [lv["ratio"] for lv in levels] == [0.5, 0.75, 0.9]
    assert levels[0]["compression_ratio"] < levels[1]["compression_ratio"] < levels[2]["compression_ratio"]
    assert _cli(monkeypatch, capsys, "inspect", str(child), "--json") == 0
    assert not json.loads(capsys.readouterr().out)["structure"]["violations"]
    nonzero = []
    for k in range(3):
        model = resolve_model(f"{child}?level={k}").model
        w = model.net[2].weight.detach()
        nonzero.append(w != 0)
        assert int(nonzero[-1].sum()) <= round((1 - levels[k]["ratio"]) * w.numel())
    assert not bool((nonzero[2] & ~nonzero[1]).any()) and not bool((nonzero[1] & ~nonzero[0]).any())
    assert resolve_model(f"{child}?level=2").identity["level"] == 2
    with pytest.raises(ConfigError, match=r"level must be an integer in \[0, 2\]"):
        resolve_model(f"{child}?level=3")
    # a level-2 mask bit outside level 1: inspect names the layer and says it is not nested
    tampered = dict(state)
    key = "nested.2.2"
    mask = tampered[key].clone()
    row, col = (tampered["nested.2.1"] == 0).nonzero()[0].tolist()
    mask[row, col] = 1
    tampered[key] = mask
    bad = tmp_path / "nested-tampered.safetensors"
    save_file(tampered, str(bad))
    bad.with_suffix(".json").write_text(json.dumps(meta))
    assert _cli(monkeypatch, capsys, "inspect", str(bad), "--json") == 1
    assert "not nested" in " ".join(json.loads(capsys.readouterr().out)["structure"]["violations"]["2"])


@pytest.mark.parametrize("method", ["progressive", "reweighted"])
def test_progressive_and_reweighted_pruning_reach_the_target(method, dense_cnn) -> None:
    """Progressive ADMM walks its stages to the target; the reweighted regulariser shrinks what the structure will
    prune round after round; both end in the structure, with the masks held through retraining."""
    from advbench.cli.models import PruneMethod
    from advbench.compression import PruneConfig, admm_prune, create_structure, resolve_targets
    from advbench.compression.admm import METHODS
    from advbench.datasets import load_dataset

    assert [m.value for m in PruneMethod] == list(METHODS)
    model = load_model(dense_cnn)
    data = load_dataset("digits")
    targets = resolve_targets(model, structure="block", target=0.75)
    cfg = PruneConfig(method=method, structure="block", structure_options={"block_rows": 4, "block_cols": 8},
                      rounds=3, retrain_epochs=1, stages=2, rho=1e-2)
    report = admm_prune(model, data, targets, cfg, progress=False)
    shape = create_structure("block", block_rows=4, block_cols=8)
    layers = dict(model.named_modules())
    for name, ratio in targets.items():
        assert shape.violations(layers[name].weight.detach(), ratio) == [], name
    if method == "progressive":
        assert len(report.history) == 2 * 3 and report.history[2]["stage"] == 1  # 2 stages of 3 rounds
    else:
        residue = [h["pruned_weight_norm"] for h in report.history]
        assert residue[-1] < residue[0], "the reweighted penalty must shrink the weights the structure prunes"


def test_compare_reports_robustness_by_family_with_a_pareto_plot(dense_cnn, tmp_path, monkeypatch, capsys) -> None:
    """Several families (N:M, block, a nested checkpoint's sparsest level) against the dense parent in one
    compare run: each row names its family, the transfer and worst-class columns are filled, and the Pareto plot
    is written."""
    children = []
    for name, flags in (("nm", ["--structure", "nm"]), ("block", ["--structure", "block", "--target", "0.75"]),
                        ("nested", ["--structure", "nested", "--levels", "0.5,0.9"])):
        child = tmp_path / f"{name}.safetensors"
        assert _cli(monkeypatch, capsys, "prune", "--checkpoint", str(dense_cnn), "--dataset", "digits", "--out",
                    str(child), "--rounds", "1", "--retrain-epochs", "1", *flags) == 0
        children.append(str(child))
    children[-1] += "?level=1"
    from advbench.tracking import WandbSink

    logged: dict = {}
    monkeypatch.setattr(WandbSink, "log_metrics", lambda self, metrics, step=None: logged.update(metrics))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert _cli(monkeypatch, capsys, "compare", str(dense_cnn), *children, "--dataset", "digits", "--eps", "0.1",
                "--n-samples", "60", "--steps", "3", "--store", str(tmp_path / "r.db"), "--json", "--wandb") == 0
    assert {"robust_accuracy_vs_eps", "robust_accuracy_vs_compression"} <= set(logged)  # both plots reach W&B
    report = json.loads(capsys.readouterr().out)
    assert [row["family"] for row in report["models"]] == ["dense", "admm nm 2:4", "admm block", "admm nested"]
    nested = report["models"][-1]
    assert nested["model"].endswith("@level1")
    assert nested["compression_ratio"] > report["models"][1]["compression_ratio"]  # level 1 is 90% sparse
    for row in report["models"][1:]:
        point = row["curve"][0]
        assert point["transfer_asr_from_parent"] is not None and point["worst_class_drop"] is not None
    from pathlib import Path

    assert Path(report["pareto_plot"]).stat().st_size > 1000


def test_nested_levels_transfer_and_a_min_max_attack_over_the_levels(dense_cnn, tmp_path, monkeypatch,
                                                                      capsys) -> None:
    """From one nested checkpoint: attacks crafted on the densest level transferred to the sparsest and back
    (compare), and one perturbation for every level at once (the min-max ensemble recipe, levels as domains)."""
    child = tmp_path / "nested.safetensors"
    assert _cli(monkeypatch, capsys, "prune", "--checkpoint", str(dense_cnn), "--dataset", "digits", "--out",
                str(child), "--rounds", "1", "--retrain-epochs", "1", "--structure", "nested",
                "--levels", "0.5,0.8,0.95") == 0
    levels = [f"{child}?level={k}" for k in range(3)]
    assert _cli(monkeypatch, capsys, "compare", levels[0], levels[2], "--dataset", "digits", "--eps", "0.1",
                "--n-samples", "60", "--steps", "5", "--store", str(tmp_path / "c.db"), "--json") == 0
    sparse = json.loads(capsys.readouterr().out)["models"][1]["curve"][0]
    assert sparse["transfer_asr_from_parent"] is not None and sparse["transfer_asr_to_parent"] is not None
    outcome = advbench.run(advbench.RunConfig(models=levels, dataset="digits", attacks=["minmax-ensemble"],
                                              eps=["0.1"], n_samples=40, batch_size=20,
                                              attack_params={"minmax-ensemble": {"steps": 5}}),
                           store=tmp_path / "m.db", progress=False)
    metrics = outcome.record.metrics
    point = metrics["per_eps"][0] if "per_eps" in metrics else metrics
    assert outcome.record.config["experiment"] == "minmax"
    assert len(point["per_domain"]) == 3 and len(point["weights"]) == 3  # one domain per level
    assert point["asr_all"] <= min(point["per_domain"].values()) + 1e-12


def test_progressive_quantization_down_to_binary(dense_cnn) -> None:
    """Progressive ADMM with 1-bit weights: ADMM-NN rounds at 8, 4, 2 and 1 bit after the pruning stages; the
    result is binary (one magnitude per layer), the pruned weights stay zero, and at 1 bit the ADMM gap between
    the weights and their binary copy shrinks."""
    from advbench.compression import PruneConfig, admm_prune, resolve_targets
    from advbench.datasets import load_dataset

    model = load_model(dense_cnn)
    data = load_dataset("digits")
    targets = resolve_targets(model, structure="unstructured", target=0.8)
    cfg = PruneConfig(method="progressive", stages=2, rounds=2, retrain_epochs=1, quantize_bits=1, rho=1e-1)
    report = admm_prune(model, data, targets, cfg, progress=False)
    widths = [h["bits"] for h in report.history if "bits" in h]
    assert widths == [8, 8, 4, 4, 2, 2, 1, 1]
    layers = dict(model.named_modules())
    for name, mask in report.masks.items():
        w = layers[name].weight.detach()
        assert bool((w[mask == 0] == 0).all())
        assert len(w[w != 0].abs().unique()) == 1 and report.quantization[name.removeprefix("net.")]["bits"] == 1
    binary = [h["w_minus_z"] for h in report.history if h.get("bits") == 1]
    assert binary[-1] < binary[0], "ADMM-NN must pull the weights toward their binary copy"


def test_block_row_pruning_of_a_transformer(tmp_path, monkeypatch, capsys) -> None:
    """Block-structured pruning of transformer layers (Li et al., 2020): a timm ViT (random init, no download) is
    pruned with rows removed inside every 16x16 tile of its attention (qkv, proj) and MLP projections; inspect
    verifies the structure from the tensors, and the pruned ViT is attacked like any other classifier."""
    from advbench.checkpoints import save_checkpoint
    from advbench.compression.structures import create_structure
    from advbench.training import TrainConfig, train_classifier

    data = "synthetic:n=200,classes=4,size=32"
    model, meta = train_classifier(TrainConfig(arch="timm:vit_tiny_patch16_224", dataset=data, epochs=1),
                                   progress=False)
    parent = save_checkpoint(model, tmp_path / "vit.safetensors", meta)
    child = tmp_path / "vit-block-rows.safetensors"
    assert _cli(monkeypatch, capsys, "prune", "--checkpoint", str(parent), "--dataset", data, "--out", str(child),
                "--structure", "block", "--block", "16x16", "--block-prune", "rows", "--target", "0.5",
                "--rounds", "1", "--retrain-epochs", "1") == 0
    state, child_meta = read_checkpoint(child)
    assert child_meta["compression"]["family"]["structure"] == {
        "name": "block", "block_rows": 16, "block_cols": 16, "prune": "rows"}
    targets = child_meta["compression"]["targets"]
    assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.11.mlp.fc2"} <= set(targets)
    rows = create_structure("block", block_rows=16, block_cols=16, prune="rows")
    columns = create_structure("block", block_rows=16, block_cols=16)
    qkv = state["net.blocks.0.attn.qkv.weight"]
    assert rows.violations(qkv, 0.5) == [] and columns.violations(qkv, 0.5), "rows, not columns, are pruned"
    tile = qkv[:16, :16]
    assert int((tile != 0).any(dim=1).sum()) == 8, "half the rows of each tile are kept, whole"
    assert _cli(monkeypatch, capsys, "inspect", str(child), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["structure"]["structure"].startswith("block") and not stats["structure"]["violations"]
    pruned = load_model(child)
    x = advbench.datasets.load_dataset(data).x_test[:8]
    y = advbench.datasets.load_dataset(data).y_test[:8]
    out = advbench.create_attack("pgd", eps=0.03, steps=2)(pruned, x, y, generator=torch.Generator().manual_seed(0))
    assert out.x_adv.shape == x.shape


def test_every_nested_level_is_trained_not_only_cut_from_the_densest(dense_cnn) -> None:
    """Qin et al.'s nested models train all levels together.  The same ADMM run retrained at the densest level
    only and then cut by magnitude (what nested pruning did before) loses far more at the sparse levels."""
    import copy

    from advbench.compression import PruneConfig
    from advbench.compression.admm import admm_prune
    from advbench.compression.nested import nested_masks
    from advbench.compression.targets import prunable_layers
    from advbench.training import accuracy

    data = advbench.datasets.load_dataset("digits")
    levels = (0.5, 0.75, 0.9)

    def level_accuracies(model) -> list[float]:
        out = []
        for k in range(len(levels)):
            cut = copy.deepcopy(model)
            with torch.no_grad():
                for name, layer in prunable_layers(cut).items():
                    layer.weight.mul_(nested_masks(prunable_layers(model)[name].weight, levels)[k])
            out.append(accuracy(cut, data.x_test, data.y_test))
        return out

    results = {}
    for structure, options in (("nested", {"levels": levels}), ("unstructured", {})):
        model = load_model(dense_cnn)
        targets = dict.fromkeys(prunable_layers(model), levels[0])
        admm_prune(model, data, targets, PruneConfig(method="admm", structure=structure, structure_options=options,
                                                     rounds=2, retrain_epochs=2), progress=False)
        results[structure] = level_accuracies(model)
    joint, cut_only = results["nested"], results["unstructured"]
    assert joint[2] > cut_only[2] + 0.05 and joint[1] > cut_only[1], (joint, cut_only)
    assert min(joint) > 0.8, joint
