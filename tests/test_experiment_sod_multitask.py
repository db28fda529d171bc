"""The SOD and multi-task experiments on the one pipeline: the numbers of the whole-set functions they replace
(``sod_robustness``, ``multitask_robustness``) when a run is one batch, shards that merge into the record one run
writes, and a rerun answered from the store."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import advbench.multitask.experiment  # noqa: F401 - registers "multitask"
import advbench.sod.experiment  # noqa: F401 - registers "sod"
from advbench.errors import ConfigError
from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import run
from advbench.pipeline.experiment import batch_generator

SOD_DATA = "synthetic-sod:n=24,size=16"
MT_DATA = "synthetic-multitask:n=24,size=16"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sod_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    from advbench.datasets.sod import load_sod_dataset
    from advbench.training.sod import save_sod_model, train_sod

    torch.manual_seed(0)
    model, _ = train_sod(load_sod_dataset(SOD_DATA), epochs=1, batch_size=8, model_options={"base": 4, "depth": 2},
                         progress=False)
    return str(save_sod_model(model, tmp_path_factory.mktemp("exp_sod") / "sod.safetensors"))


@pytest.fixture(scope="module")
def mt_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.training.multitask import save_multitask_model, train_multitask

    data = load_multitask_dataset(MT_DATA, seed=0)
    model, _ = train_multitask(data, epochs=1, batch_size=8, model_options={"base": 4, "levels": 2}, progress=False)
    return str(save_multitask_model(model, tmp_path_factory.mktemp("exp_mt") / "mt.safetensors"))


def close(got: Any, want: Any, rel: float, where: str = "") -> None:
    """Nested dicts / lists of numbers equal up to ``rel`` (NaN equals NaN, infinities must match)."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            close(got[key], want[key], rel, f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, rel, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        if math.isnan(want):
            assert math.isnan(got), where
        else:
            assert got == pytest.approx(want, rel=rel, abs=1e-12), where
    else:
        assert got == want, where


def text_of(renderable: Any) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(renderable)
    return console.file.getvalue()


def same_record(a: Any, b: Any) -> None:
    """Metrics and per-sample rows identical (compared as JSON, so NaN matches NaN)."""
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    assert json.dumps(a.samples, sort_keys=True) == json.dumps(b.samples, sort_keys=True)
    assert a.config_hash == b.config_hash


# ----------------------------------------------------------------------------------------------------------- SOD

def sod_config(ckpt: str, **fields: Any) -> RunConfig:
    base: dict[str, Any] = {"models": [ckpt], "dataset": SOD_DATA, "attacks": ["adv-cloud", "pgd"], "eps": ["8/255"],
                            "n_samples": 6, "seed": 3, "batch_size": 8,
                            "attack_params": {"adv-cloud": {"steps": 2}, "pgd": {"steps": 2}}}
    return RunConfig.build(**{**base, **fields})


def test_sod_one_batch_equals_sod_robustness(sod_ckpt: str, tmp_path: Path) -> None:
    """One batch (batch size >= n): every row of ``sod_robustness`` on the same images, with the clouds drawn
    from one ``torch.randint`` draw of batch 0's generator; defended and transfer rows included."""
    from advbench.datasets.sod import load_sod_dataset
    from advbench.runner import defend
    from advbench.sod.robustness import CloudAttackConfig, sod_robustness
    from advbench.training.sod import load_sod_model

    config = sod_config(sod_ckpt, defense="bitdepth:bits=5")  # experiment chosen from the checkpoint's task
    outcome = run(config, store=tmp_path / "r.db", progress=False, wandb={"mode": "disabled", "dir": str(tmp_path)})
    record = outcome.record
    assert record is not None and not outcome.skipped and outcome.total == 1

    victim = load_sod_model(sod_ckpt)
    data = load_sod_dataset(SOD_DATA)
    defended, _ = defend(victim, "bitdepth:bits=5")
    want = sod_robustness(victim, data.x_test[:6], data.m_test[:6], defense=defended.preprocess,
                          cfg=CloudAttackConfig(eps_n=8 / 255, steps=2, pgd_steps=2), attacks=["adv-cloud", "pgd"],
                          seed=int(torch.randint(0, 2**62, (1,), generator=batch_generator(3, 0))))
    assert list(record.metrics["rows"]) == list(want["rows"])
    assert len(want["rows"]) == 10 and "defended pgd (transfer)" in want["rows"]
    close(record.metrics["rows"], want["rows"], rel=1e-12)
    assert record.metrics["rows"]["adv-cloud"]["mae"] != record.metrics["rows"]["clean"]["mae"]
    for key in ("n_images", "attacks", "attack", "clouds"):
        assert record.metrics[key] == want[key], key
    assert set(record.cost) >= {"victim_s", "defended_s", "ratio", "wall_time_s"}

    cfg = record.config
    assert cfg["experiment"] == "sod" and cfg["task"] == "sod" and cfg["eps"] == [8 / 255]
    assert cfg["arch"] == "unet-sod" and cfg["n_samples"] == 6 and len(cfg["data"]["fingerprint"]) == 64
    assert cfg["model"]["name"] == "sod" and len(cfg["model"]["sha256"]) == 64
    assert cfg["defense"]["name"] == "bitdepth" and [a["name"] for a in cfg["attacks"]] == ["adv-cloud", "pgd"]
    assert [s["sample_index"] for s in record.samples] == list(range(6))
    # the per-image values average to the set's means
    for row in ("clean", "defended adv-cloud"):
        for key in ("mae", "s_measure", "adaptive_f"):
            mean = sum(s["rows"][row][key] for s in record.samples) / 6
            assert mean == pytest.approx(record.metrics["rows"][row][key], rel=1e-9), (row, key)
    table = text_of(advbench.sod.experiment.SODExperiment(config).render(record))
    assert "SOD robustness of sod" in table and "defended adv-cloud (transfer)" in table


def test_sod_shards_merge_into_the_record_of_one_run(sod_ckpt: str, tmp_path: Path) -> None:
    """Two shards of three batches (batch size 2) give the record of one run; the clean row, which draws
    nothing, equals the SOD metrics of the whole set (curves averaged over all images, not over batches)."""
    from advbench.datasets.sod import load_sod_dataset
    from advbench.sod.metrics import sod_metrics
    from advbench.sod.robustness import predict_saliency
    from advbench.training.sod import load_sod_model

    config = sod_config(sod_ckpt, batch_size=2, attacks=["pgd", "adv-cloud"], experiment="sod")
    first = run(config, store=tmp_path / "shards.db", shard=(1, 2), progress=False)
    assert first.record is None and first.total == 3
    second = run(config, store=tmp_path / "shards.db", shard=(2, 2), progress=False)
    whole = run(config, store=tmp_path / "one.db", progress=False)
    assert second.record is not None and whole.record is not None
    same_record(second.record, whole.record)
    assert list(whole.record.metrics["rows"])[:4] == ["clean", "cloudy", "adv-cloud", "pgd"]

    data = load_sod_dataset(SOD_DATA)
    clean = sod_metrics(predict_saliency(load_sod_model(sod_ckpt), data.x_test[:6]), data.m_test[:6])
    close(whole.record.metrics["rows"]["clean"], clean, rel=1e-12)

    again = run(config, store=tmp_path / "one.db", progress=False)
    assert again.skipped and again.record.metrics == whole.record.metrics
    other = run(sod_config(sod_ckpt, batch_size=2, seed=4), store=tmp_path / "one.db", progress=False)
    assert not other.skipped and other.config_hash != whole.config_hash
    assert other.record.metrics["rows"]["cloudy"] != whole.record.metrics["rows"]["cloudy"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"attacks": ["square"]}, "adv-cloud, pgd"),
    ({"eps": ["4/255", "8/255"]}, "one --eps"),
    ({"attack_params": {"adv-cloud": {"bogus": 1}}}, "adv-cloud.bogus"),
    ({"attack_params": {"pgd": {"step_size": 0.1}}}, "pgd.step_size"),
    ({"attack_params": {"adv-cloud": {"mode": "max"}}}, "mode"),
    ({"attack_params": {"adv-cloud": {"steps": 0}}}, "adv-cloud.steps"),
    ({"norm": "l2"}, "linf"),
])
def test_sod_config_errors(sod_ckpt: str, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        run(sod_config(sod_ckpt, experiment="sod", **fields), progress=False)


# ---------------------------------------------------------------------------------------------------- multi-task

def mt_config(ckpt: str, **fields: Any) -> RunConfig:
    base: dict[str, Any] = {"models": [ckpt], "dataset": MT_DATA, "attacks": ["stealthy-multitask"],
                            "eps": ["8/255"], "n_samples": 6, "seed": 0, "batch_size": 8,
                            "attack_params": {"stealthy-multitask": {"steps": 2}},
                            "options": {"target_task": "seg", "margin": 0.1, "tolerance": 0.05}}
    return RunConfig.build(**{**base, **fields})


def test_multitask_one_batch_equals_multitask_robustness(mt_ckpt: str, tmp_path: Path) -> None:
    from advbench import create_attack
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.multitask.robustness import multitask_robustness
    from advbench.training.multitask import load_multitask_model

    config = mt_config(mt_ckpt, options={"target_task": "seg", "margin": 0.02, "tolerance": 0.5})
    outcome = run(config, store=tmp_path / "r.db", progress=False, wandb={"mode": "disabled", "dir": str(tmp_path)})
    record = outcome.record
    assert record is not None and outcome.total == 1

    net = load_multitask_model(mt_ckpt)
    data = load_multitask_dataset(MT_DATA, seed=0)
    attack = create_attack("stealthy-multitask", norm="linf", eps=8 / 255, target_task="seg", steps=2)
    want = multitask_robustness(net, data.x_test[:6], {t: v[:6] for t, v in data.targets_test.items()
                                                       if t in net.tasks}, attack, margin=0.02, tolerance=0.5)
    got = dict(record.metrics)
    assert got.pop("warnings") == []
    assert got["tasks"] == want["metrics"]["tasks"] and len(got["tasks"]) >= 2
    # pooled set metrics and stealth from counts; weights are float32 means in multitask_robustness
    close({k: v for k, v in got.items() if k not in ("weights", "relative_loss_change")},
          {k: v for k, v in want["metrics"].items() if k not in ("weights", "relative_loss_change")}, rel=1e-9)
    close(got["weights"], want["metrics"]["weights"], rel=1e-5)
    close(got["relative_loss_change"], want["metrics"]["relative_loss_change"], rel=1e-5)
    assert 0 < got["stealth_success_rate"] <= 1
    close(record.samples, want["samples"], rel=1e-9)
    assert record.cost["gradients"] == want["cost"]["gradients"]
    cfg = record.config
    assert cfg["experiment"] == "multitask" and cfg["task"] == "multitask" and cfg["arch"] == "mtl-unet"
    assert (cfg["margin"], cfg["tolerance"]) == (0.02, 0.5) and cfg["model"]["name"] == "mt"
    assert cfg["attacks"][0]["name"] == "stealthy-multitask" and cfg["attacks"][0]["target_task"] == "seg"
    assert "eps" not in cfg["attacks"][0] and cfg["eps"] == [8 / 255]
    table = text_of(advbench.multitask.experiment.MultiTaskExperiment(config).render(record))
    assert "stealthy-multitask on mt (target seg" in table and "degradation" in table


def test_multitask_shards_merge_into_the_record_of_one_run(mt_ckpt: str, tmp_path: Path) -> None:
    """Three batches of 2 in two shards == one run; the clean set metrics pool every image (mIoU of summed
    intersections and unions, not a mean of batch mIoUs) and equal ``evaluate_multitask`` on the whole set."""
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.multitask.metrics import evaluate_multitask
    from advbench.training.multitask import load_multitask_model

    config = mt_config(mt_ckpt, batch_size=2, experiment="multitask")
    assert run(config, store=tmp_path / "shards.db", shard=(2, 2), progress=False).record is None
    merged = run(config, store=tmp_path / "shards.db", shard=(1, 2), progress=False).record
    whole = run(config, store=tmp_path / "one.db", progress=False).record
    assert merged is not None and whole is not None
    same_record(merged, whole)
    data = load_multitask_dataset(MT_DATA, seed=0)
    net = load_multitask_model(mt_ckpt)
    close(whole.metrics["clean"], evaluate_multitask(net, data.x_test[:6], {t: v[:6] for t, v in
                                                                          data.targets_test.items()}), rel=1e-9)
    assert run(config, store=tmp_path / "one.db", progress=False).skipped
    untargeted = run(mt_config(mt_ckpt, attacks=["all-tasks"], attack_params={"all-tasks": {"steps": 2}},
                               options={}, batch_size=4), progress=False).record
    assert "stealth_success_rate" not in untargeted.metrics
    assert not any(s["stealth_success"] for s in untargeted.samples)


@pytest.mark.parametrize(("fields", "message"), [
    ({"options": {"target": "seg"}}, "unknown option"),
    ({"options": {"margin": -0.1}}, "margin"),
    ({"options": {"target_task": "edges"}}, "edges"),
    ({"attacks": ["stealthy-multitask", "all-tasks"]}, "one --attack"),
    ({"eps": ["4/255", "8/255"]}, "one --eps"),
    ({"defense": "jpeg:quality=60"}, "--defense"),
    ({"models": ["a.safetensors", "b.safetensors"]}, "one --model"),
])
def test_multitask_config_errors(mt_ckpt: str, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(mt_config(mt_ckpt, experiment="multitask", **fields), progress=False)
