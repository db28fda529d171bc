"""The minmax and compare experiments: one batch against the library functions they are built from
(``evaluate_multidomain``; ``cascade_batch`` per model with transfer ASRs and class drops counted by hand),
per-model numbers against classifier-experiment runs, hand-checked transfer counts, and sharded runs against one
run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import advbench.experiments.compare  # noqa: F401 - registers "compare"
import advbench.experiments.minmax  # noqa: F401 - registers "minmax"
from advbench.errors import ConfigError
from advbench.experiments.compare import CompareExperiment, transfer_counts
from advbench.experiments.minmax import MinMaxExperiment
from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> str:
    """A small CNN trained for 3 epochs on sklearn digits (about 90% test accuracy): quick, and good enough."""
    from advbench.checkpoints import save_checkpoint
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="digits", epochs=3, seed=0), progress=False)
    path = tmp_path_factory.mktemp("parent") / "digits_cnn.safetensors"
    save_checkpoint(model, path, meta)
    return str(path)


@pytest.fixture(scope="module")
def child(parent, tmp_path_factory) -> str:
    """The parent with 85% of every layer's smallest-magnitude weights set to zero (a magnitude-pruned child)."""
    from advbench.checkpoints import save_checkpoint
    from advbench.compression.admm import prunable_layers
    from advbench.models.loading import load_model

    model = load_model(parent)
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            w = layer.weight
            cut = w.abs().flatten().kthvalue(int(0.85 * w.numel())).values
            w[w.abs() <= cut] = 0
    path = tmp_path_factory.mktemp("child") / "digits_cnn_pruned.safetensors"
    save_checkpoint(model, path, dict(model.checkpoint_meta))
    return str(path)


def _same(a, b) -> None:
    """Nested equality with floats compared to 1e-6 (the experiments sum counts where the old code took means)."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _same(u, v)
    elif isinstance(a, float) and b is not None:
        assert a == pytest.approx(b, abs=1e-6)
    else:
        assert a == b


def _without(metrics: dict, *keys: str) -> dict:
    return {k: v for k, v in metrics.items() if k not in keys}


# -- minmax --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attack,params,eps,both", [
    ("minmax-universal", {"k": 2, "steps": 5, "random_start": True}, [0.2, 0.4], False),
    ("minmax-ensemble", {"steps": 4, "random_start": True}, [0.15], True),
])
def test_minmax_one_batch_equals_evaluate_multidomain(parent, child, attack, params, eps, both) -> None:
    from advbench.multidomain_eval import evaluate_multidomain

    cfg = RunConfig.build(models=[parent, child] if both else [parent], dataset="digits", attacks=[attack], eps=eps,
                          n_samples=24, batch_size=24, attack_params={attack: params})
    exp = MinMaxExperiment(cfg)
    plan = exp.resolve()
    indices = np.arange(plan.n_samples)
    x, y = exp.victim.read(indices)
    result = exp.compute(0, indices, (x, y), torch.Generator().manual_seed(5))
    merged = exp.merge(plan.config.as_dict(), plan.warnings, [result])
    ref = evaluate_multidomain(exp.model, x, y, attack=attack, eps=eps, params=params, batch_size=24, seed=5)
    summary = ref.summary()
    assert summary["n"] > 0 and 0 < summary["asr_all"]  # the comparison is not between two empty runs
    _same({k: merged["metrics"][k] for k in summary}, summary)
    keys = ("sample_index", "eps", "label", "clean_correct", "robust", "broken_by")
    assert [tuple(r[k] for k in keys) for r in merged["samples"]] == [tuple(r[k] for k in keys) for r in ref.samples]
    assert merged["cost"]["gradients"] == ref.cost["gradients"] and merged["cost"]["queries"] == ref.cost["queries"]


def test_minmax_universal_shards_equal_one_run_and_rerun_is_skipped(parent, tmp_path) -> None:
    cfg = RunConfig.build(models=[parent], dataset="digits", attacks=["minmax-universal"], eps=[0.1, 0.3],
                          n_samples=24, batch_size=8, attack_params={"minmax-universal": {"k": 4, "steps": 3}})
    one = run(cfg, store=tmp_path / "r.db", progress=False)
    assert one.complete and not one.skipped and one.total == 3
    record = one.record.as_dict()
    metrics = record["metrics"]
    assert record["config"]["experiment"] == "minmax" and metrics["n"] % 4 == 0 and len(metrics["weights"]) == 4
    assert sum(metrics["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert len(metrics["weight_trace"]) == 4 and all(sum(step) == pytest.approx(1.0, abs=1e-5)
                                                     for step in metrics["weight_trace"])
    # over the three batches, asr_all is the share of attacked inputs whose group was fooled in every domain
    for point in metrics["curve"]:
        rows = [r for r in record["samples"] if r["eps"] == point["eps"]]
        assert len(rows) == metrics["n"]
        assert point["asr_all"] == pytest.approx(sum(not r["robust"] for r in rows) / len(rows))
    first = run(cfg, store=tmp_path / "s.db", shard=(1, 2), progress=False)
    assert not first.complete and 0 < first.committed < 3
    second = run(cfg, store=tmp_path / "s.db", shard=(2, 2), progress=False)
    assert second.complete and second.config_hash == one.config_hash
    assert second.record.metrics == one.record.metrics
    assert second.record.as_dict()["samples"] == record["samples"]
    again = run(cfg, store=tmp_path / "r.db", progress=False)
    assert again.skipped and again.record.metrics == one.record.metrics
    assert one.experiment.render(one.record).row_count == 2  # the min-max table: one row per eps


def test_minmax_ensemble_of_two_digits_models_runs(parent, child, tmp_path) -> None:
    cfg = RunConfig.build(models=[parent, child], dataset="digits", attacks=["minmax-ensemble"], eps=[0.1, 0.2],
                          n_samples=16, batch_size=8, attack_params={"minmax-ensemble": {"steps": 3}})
    outcome = run(cfg, store=tmp_path / "e.db", progress=False)
    config, metrics = outcome.record.config, outcome.record.metrics
    assert config["model"] == {"name": "digits_cnn+digits_cnn_pruned"} and len(config["models"]) == 2
    assert list(metrics["weights"]) == ["digits_cnn", "digits_cnn_pruned"]
    assert sum(metrics["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert metrics["curve"][0]["asr_all"] <= metrics["curve"][0]["asr_avg"] + 1e-9
    assert metrics["n_evaluated"] == 16 and outcome.record.cost["gradients"] > 0


def test_minmax_config_errors(parent, child) -> None:
    def resolve(**fields):
        base = {"models": [parent], "dataset": "digits", "eps": [0.1], "n_samples": 8, "batch_size": 8}
        return MinMaxExperiment(RunConfig.build(**{**base, **fields})).resolve()

    with pytest.raises(ConfigError, match="multiple of k"):
        resolve(attacks=["minmax-universal"], batch_size=6, attack_params={"minmax-universal": {"k": 4}})
    with pytest.raises(ConfigError, match="exactly one"):
        resolve(attacks=["minmax-universal", "avg-universal"])
    with pytest.raises(ConfigError, match="not a min-max recipe"):
        resolve(attacks=["pgd"])
    with pytest.raises(ConfigError, match="at least 2 models"):
        resolve(attacks=["minmax-ensemble"])
    with pytest.raises(ConfigError, match="one model at a time"):
        resolve(models=[parent, child], attacks=["minmax-universal"])
    with pytest.raises(ConfigError, match="no options"):
        resolve(attacks=["minmax-universal"], options={"margin": 1})


# -- compare -------------------------------------------------------------------------------------------
def test_transfer_counts_by_hand() -> None:
    """The target predicts the index of the largest of three pixels.  Sources rows: sample 0 fooled, 1 fooled,
    2 robust, 3 wrong when clean; the target is clean-correct on 0, 2, 3 only.  Usable: sample 0 (1 is wrong for
    the target, 2 was not fooled, 3 was not correct for the source); its example moves the max to pixel 2."""
    target = nn.Flatten()
    y = torch.tensor([0, 1, 2, 0])
    x_adv = torch.tensor([[0.1, 0.2, 0.9], [0.0, 0.9, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]).view(4, 1, 1, 3)
    rows = [{"clean_correct": True, "robust": False}, {"clean_correct": True, "robust": False},
            {"clean_correct": True, "robust": True}, {"clean_correct": False, "robust": False}]
    ok = torch.tensor([True, False, True, True])
    assert transfer_counts(target, ok, rows, x_adv, y) == [1, 1]
    x_adv[0, 0, 0] = torch.tensor([0.9, 0.2, 0.1])  # the example no longer fools the target
    assert transfer_counts(target, ok, rows, x_adv, y) == [1, 0]
    assert transfer_counts(target, torch.zeros(4, dtype=torch.bool), rows, x_adv, y) == [0, 0]


def test_compare_one_batch_equals_the_cascade_and_transfer_counted_by_hand(parent, child) -> None:
    from advbench.compression.admm import compression_stats
    from advbench.evaluate import cascade_batch
    from advbench.models.loading import load_model

    params = {"pgd": {"steps": 3}}
    cfg = RunConfig.build(models=[parent, child], dataset="digits", attacks=["pgd"], eps=[0.1, 0.05], n_samples=40,
                          batch_size=40, attack_params=params, experiment="compare")
    exp = CompareExperiment(cfg)
    plan = exp.resolve()
    indices = np.arange(plan.n_samples)
    x, y = exp.victim.read(indices)
    result = exp.compute(0, indices, (x, y), torch.Generator().manual_seed(0))
    ours = exp.merge(plan.config.as_dict(), plan.warnings, [result])["metrics"]
    assert ours["eps"] == [0.05, 0.1] and ours["attacks"] == ["pgd"] and ours["n"] == 40
    # the reference: each checkpoint loaded afresh and run through the cascade from the same generator seed
    models = [load_model(parent), load_model(child)]
    outs = [cascade_batch(m, x, y, exp.plan, generator=torch.Generator().manual_seed(0), keep_examples=True)
            for m in models]
    rows = [[[r for r in out.result["samples"] if r["eps"] == e] for e in (0.05, 0.1)] for out in outs]
    with torch.no_grad():
        clean_ok = [m(x).argmax(1) == y for m in models]
    for i, (row, model) in enumerate(zip(ours["models"], models, strict=True)):
        stats = compression_stats(model)
        assert row["sparsity"] == stats["sparsity"] and row["compression_ratio"] == stats["compression_ratio"]
        assert row["clean_accuracy"] == pytest.approx(float(clean_ok[i].float().mean()))
        for j, point in enumerate(row["curve"]):
            at = rows[i][j]
            correct = sum(r["clean_correct"] for r in at)
            broken = sum(r["clean_correct"] and not r["robust"] for r in at)
            assert point["robust_accuracy"] == pytest.approx(sum(r["robust"] for r in at) / 40)
            assert point["attack_success_rate"] == pytest.approx(broken / correct)
    assert ours["models"][1]["compression_ratio"] > 2 and ours["models"][0]["compression_ratio"] == 1.0

    def transfer_asr(source: int, target: int, j: int, eps: float) -> float | None:
        fooled = torch.tensor([r["clean_correct"] and not r["robust"] for r in rows[source][j]])
        usable = fooled & clean_ok[target]
        with torch.no_grad():
            moved = models[target](outs[source].x_adv[eps]).argmax(1) != y
        return int((moved & usable).sum()) / int(usable.sum()) if bool(usable.any()) else None

    kid = ours["models"][1]
    for j, (point, eps) in enumerate(zip(kid["curve"], (0.05, 0.1), strict=True)):
        assert point["eps"] == eps
        for key, (source, target) in (("transfer_asr_from_parent", (0, 1)), ("transfer_asr_to_parent", (1, 0))):
            expected = transfer_asr(source, target, j, eps)
            assert point[key] == (None if expected is None else pytest.approx(expected)), (key, eps)

        def per_class(m: int, j: int = j) -> dict[int, float]:
            labels = {r["label"] for r in rows[m][j]}
            return {c: sum(r["robust"] for r in rows[m][j] if r["label"] == c) /
                    sum(r["label"] == c for r in rows[m][j]) for c in labels}

        ref, mine = per_class(0), per_class(1)
        assert point["worst_class_drop"] == pytest.approx(max(ref[c] - mine.get(c, 0.0) for c in ref))
    assert any(p["transfer_asr_from_parent"] for p in kid["curve"])  # something transferred: not a 0 == 0 check
    assert "transfer_asr_from_parent" not in ours["models"][0]["curve"][0]


def test_compare_equals_classifier_runs_and_shards_equal_one_run(parent, child, tmp_path) -> None:
    import advbench.experiments.classifier  # noqa: F401

    fields = {"dataset": "digits", "attacks": ["fgsm", "pgd"], "eps": [0.05, 0.1], "n_samples": 24, "batch_size": 8,
              "attack_params": {"pgd": {"steps": 3}}, "seed": 3}
    cfg = RunConfig.build(models=[parent, child], experiment="compare", **fields)
    one = run(cfg, store=tmp_path / "r.db", progress=False)
    assert one.complete and one.total == 3 and one.record.config["experiment"] == "compare"
    report = one.record.metrics
    assert [m["model"] for m in report["models"]] == ["digits_cnn", "digits_cnn_pruned"]
    for spec, row in zip([parent, child], report["models"], strict=True):
        alone = run(RunConfig.build(models=[spec], experiment="classifier", **fields), progress=False).record.metrics
        assert row["clean_accuracy"] == alone["clean_accuracy"]
        assert [(p["eps"], p["robust_accuracy"], p["attack_success_rate"]) for p in row["curve"]] == \
            [(p["eps"], p["robust_accuracy"], p["attack_success_rate"]) for p in alone["curve"]]
        assert row["latency_ms"] > 0
    assert {s["model"] for s in one.record.samples} == {"digits_cnn", "digits_cnn_pruned"}
    assert len(one.record.samples) == 2 * 24 * 2
    first = run(cfg, store=tmp_path / "s.db", shard=(1, 2), progress=False)
    assert not first.complete
    second = run(cfg, store=tmp_path / "s.db", shard=(2, 2), progress=False)
    assert second.complete and second.config_hash == one.config_hash

    def measured_out(metrics):  # latency is measured: each run has its own
        return {**metrics, "models": [_without(m, "latency_ms") for m in metrics["models"]]}

    assert measured_out(second.record.metrics) == measured_out(report)
    assert second.record.as_dict()["samples"] == one.record.as_dict()["samples"]
    again = run(cfg, store=tmp_path / "r.db", progress=False)
    assert again.skipped and again.record.metrics == report
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(one.experiment.render(one.record))
    text = console.export_text()
    assert "digits_cnn_pruned" in text and "dense vs compressed on digits (fgsm, pgd, linf)" in text


def test_compare_config_errors(parent) -> None:
    base = {"dataset": "digits", "eps": [0.1], "n_samples": 8, "experiment": "compare"}
    with pytest.raises(ConfigError, match="at least one compressed child"):
        CompareExperiment(RunConfig.build(models=[parent], attacks=["pgd"], **base)).resolve()
    with pytest.raises(ConfigError, match="min-max recipes"):
        CompareExperiment(RunConfig.build(models=[parent, parent], attacks=["minmax-universal"], **base)).resolve()
    assert Path(parent).is_file()


def test_after_store_logs_both_experiments_to_wandb_offline(parent, child, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the suite disables W&B through the environment
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb = {"mode": "offline", "dir": str(tmp_path)}
    common = {"models": [parent, child], "dataset": "digits", "eps": [0.1], "n_samples": 8, "batch_size": 8}
    run(RunConfig.build(attacks=["minmax-ensemble"], attack_params={"minmax-ensemble": {"steps": 2}}, **common),
        progress=False, wandb=wandb)
    run(RunConfig.build(attacks=["fgsm"], experiment="compare", **common), progress=False, wandb=wandb)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(list(r.glob("*.wandb")) for r in runs)
