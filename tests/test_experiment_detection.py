"""The detection experiment (a roof patch on a vehicle detector) through the one pipeline.

A seeded, untrained Faster R-CNN stands in for a trained detector (no training, so the tests stay fast): its
random proposals still find about half of the synthetic vehicles at IoU 0.2, so ASR and the counts are real
numbers.  They are checked against the library functions the experiment is built from, called by hand on the
whole test set: the per-altitude split, the patch attack's ``fit``, the detector, the placement, and
``attack_success`` / ``coco_map`` (its APs are 0; the merge test replays made-up detections with a real AP).
"""

from __future__ import annotations

import pytest
import torch

import advbench.detection.experiment  # noqa: F401 - registers "detection"
from advbench.datasets.detection import generate_aerial_dataset, load_detection_dataset
from advbench.detection.experiment import CONTROL_SEED_OFFSET, DetectionExperiment, detection_table
from advbench.detection.metrics import attack_success, coco_map, coco_map_by
from advbench.errors import ConfigError
from advbench.models.detectors import create_detector
from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import run
from advbench.training.detection import save_detector

pytestmark = pytest.mark.usefixtures("one_thread")

#: 4 images per altitude, 1 of each learns the patch: 3 training and 9 test images, so batches of 8 are cut
#: where a detector call of the experiment is cut (8 images each).
SPLIT = {"train_fraction": 0.25, "score_threshold": 0.05, "iou": 0.2}
MINMAX = {"steps": 2, "batch_size": 3, "patch_size": 8}
WHITEBOX = {"steps": 1, "batch_size": 2, "patch_size": 8}


@pytest.fixture(scope="module")
def aerial(tmp_path_factory):
    root = generate_aerial_dataset(tmp_path_factory.mktemp("aerial") / "evd", n_images=12, size=(128, 96), seed=3)
    samples = load_detection_dataset(f"evd4uav:{root}")
    det = create_detector("fasterrcnn-mnv3", class_names=samples[0].class_names, image_size=(128, 96), seed=2)
    path = save_detector(det, tmp_path_factory.mktemp("det") / "frcnn.safetensors")
    return f"evd4uav:{root}", str(path)


def config(aerial, attack: str, params: dict, *, batch_size: int = 8, seed: int = 0, n_samples: int | None = None,
           **options) -> RunConfig:
    dataset, detector = aerial
    return RunConfig.build(models=[detector], dataset=dataset, attacks=[attack], eps=[0.0], experiment="detection",
                           n_samples=n_samples, seed=seed, batch_size=batch_size, attack_params={attack: params},
                           options={**SPLIT, "progress": False, **options})


def _detect(detector, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The detector on ``images``, 8 at a time (where the pipeline's batches of 8 cut its calls)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 8):
            out += detector.detect(images[start:start + 8])
    return out


def test_pipeline_gives_the_metrics_of_the_patch_fitted_and_measured_by_hand(aerial, tmp_path):
    from advbench import create_attack
    from advbench.attacks.patch import PatchSet
    from advbench.checkpoints import file_sha256
    from advbench.detection.protocol import patch_images, split_by_group
    from advbench.training.detection import load_detector

    dataset, path = aerial
    outcome = run(config(aerial, "patch-minmax", MINMAX), store=tmp_path / "r.db", progress=False)
    record = outcome.record
    assert outcome.complete and not outcome.skipped and outcome.total == 2  # 9 test images in batches of 8
    # by hand: the split, the patch learned on the training images with the run's seed, the test detections
    train, test = split_by_group(load_detection_dataset(dataset), SPLIT["train_fraction"], seed=0)
    assert record.config["n_samples"] == len(test) == 9 and record.config["data"]["n_train"] == len(train) == 3
    det = load_detector(path)
    attack = create_attack("patch-minmax", **MINMAX)
    fit = attack(det, PatchSet.from_samples(train))
    assert torch.equal(outcome.experiment.fitted.patch, fit.patch)
    images = [s.load_image() for s in test]
    clean = _detect(det, images)
    adv = _detect(det, patch_images(images, test, fit.patch, attack))
    noise = torch.rand(fit.patch.shape, generator=torch.Generator().manual_seed(CONTROL_SEED_OFFSET))
    control = _detect(det, patch_images(images, test, noise, attack))
    thresholds = {"score_threshold": SPLIT["score_threshold"], "iou": SPLIT["iou"]}
    success = attack_success(test, clean, adv, **thresholds)
    summary = success.to_dict()
    m = record.metrics
    assert summary["overall"]["detected_clean"] > 0 and m["asr"] == success.asr
    assert m["counts"] == {k: summary[k] for k in ("overall", "by_altitude", "by_colour", "by_type")}
    for group in ("altitude", "colour", "type"):
        assert m[f"asr_by_{group}"] == {k: v["asr"] for k, v in summary[f"by_{group}"].items()}
    assert m["control_asr"] == attack_success(test, clean, control, **thresholds).asr
    assert m["ap_clean"] == coco_map(test, clean) and m["ap_adversarial"] == coco_map(test, adv)
    assert m["ap_adversarial_by_altitude"] == coco_map_by(test, adv, "altitude")
    assert m["weights"] == fit.info["weights"] and set(m["weights"]) == {"50m", "70m", "90m"}
    assert m["patch"] == {"size": list(fit.patch.shape), "min": float(fit.patch.min()), "max": float(fit.patch.max())}
    # one row per test vehicle, with the flags attack_success gave it
    flags = [(i, j, bool(success.detected_clean[i][j]), bool(success.detected_adv[i][j]))
             for i, s in enumerate(test) for j in range(len(s))]
    assert [(r["sample_index"], r["box"], r["detected_clean"], r["detected_adv"]) for r in record.samples] == flags
    assert [r["image_id"] for r in record.samples] == [test[i].image_id for i, *_ in flags]
    assert m["counts"]["overall"]["vehicles"] == len(record.samples)
    assert record.cost["steps"] == len(fit.history) == 3  # min-max evaluates its start too
    hyper = {k: v for k, v in attack.hyperparameters().items() if k != "detectors"}  # detectors: in the config
    assert record.config["attacks"][0] == {**hyper, "seed": 0}  # and the seed of the generator it drew from
    assert record.config["model"]["sha256"] == file_sha256(path)
    assert "control ASR" in str([c.header for c in detection_table(record).columns])


def made_up_detections(samples, keep_every: int, shift: float) -> list[dict[str, torch.Tensor]]:
    """Near-misses of the ground truth with falling scores, some wrong labels and one false positive per image."""
    out = []
    for i, s in enumerate(samples):
        keep = [j for j in range(len(s)) if (i + j) % keep_every]
        boxes = [[v + shift * (j % 4) for v in s.boxes[j].tolist()] for j in keep] + [[1.0, 1.0, 9.0, 7.0]]
        labels = [int(s.labels[j]) if j % 5 else (int(s.labels[j]) + 1) % 3 for j in keep] + [0]
        scores = [0.95 - 0.07 * k for k in range(len(keep))] + [0.6]
        out.append({"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores).clamp(0.01),
                    "labels": torch.tensor(labels)})
    return out


def test_merge_of_batches_equals_the_metrics_over_the_whole_set(aerial):
    from advbench.detection.experiment import detections_json, image_json

    samples = load_detection_dataset(aerial[0])[:9]
    clean, adv = made_up_detections(samples, 4, 1.5), made_up_detections(samples, 2, 3.0)
    control = made_up_detections(samples, 3, 0.5)
    thresholds = {"score_threshold": 0.5, "iou": 0.5}
    fit = {"steps": 1, "fit_seconds": 0.5, "trained": [], "detector_queries": 0, "weights": {"50m": 1.0},
           "patch": {"size": [3, 8, 8], "min": 0.0, "max": 1.0}}
    results = []
    for part in (range(0, 5), range(5, 9)):  # two batches
        results.append({"samples": [], "wall_time_s": 0.25, "images": [
            {**image_json(samples[i]), "clean": detections_json(clean[i]),
             "adversarial": detections_json(adv[i]),
             "control": detections_json(control[i], control[i]["scores"] >= 0.5)} for i in part]})
    results[0]["fit"] = fit
    config = {"data": {"classes": list(samples[0].class_names)}, **thresholds}
    merged = DetectionExperiment.merge(None, config, [], results)
    metrics = merged["metrics"]
    # the reference: the metric functions over all nine images at once (the control's detections unfiltered)
    success = attack_success(samples, clean, adv, **thresholds)
    summary = success.to_dict()
    control_summary = attack_success(samples, clean, control, **thresholds).to_dict()
    assert 0 < metrics["ap_clean"]["mAP"] < metrics["ap_clean"]["AP50"] < 1  # a real AP, not an edge case
    assert metrics["ap_clean"] == coco_map(samples, clean) and metrics["ap_adversarial"] == coco_map(samples, adv)
    assert metrics["ap_clean_by_altitude"] == coco_map_by(samples, clean, "altitude")
    assert metrics["ap_adversarial_by_altitude"] == coco_map_by(samples, adv, "altitude")
    assert 0 < metrics["asr"] < 1 and metrics["asr"] == success.asr
    assert metrics["counts"] == {k: summary[k] for k in ("overall", "by_altitude", "by_colour", "by_type")}
    by_altitude = {k: v["asr"] for k, v in summary["by_altitude"].items()}
    assert metrics["asr_by_altitude"] == by_altitude and len(by_altitude) > 1
    assert metrics["worst_altitude_asr"] == min(v for v in by_altitude.values() if v is not None)
    assert metrics["asr_by_colour"] == {k: v["asr"] for k, v in summary["by_colour"].items()}
    assert metrics["control_asr"] == control_summary["asr"] and metrics["control_asr"] != metrics["asr"]
    assert metrics["control_asr_by_altitude"] == {k: v["asr"] for k, v in control_summary["by_altitude"].items()}
    assert metrics["weights"] == {"50m": 1.0} and metrics["patch"] == fit["patch"]
    assert merged["cost"] == {"fit_seconds": 0.5, "total_seconds": 1.0, "detector_queries": 0, "steps": 1}


def test_shards_merge_into_the_record_of_one_run_and_a_rerun_is_skipped(aerial, tmp_path, monkeypatch):
    cfg = config(aerial, "patch-whitebox", WHITEBOX, batch_size=2, n_samples=9)  # 6 test images: 3 batches
    whole = run(cfg, store=tmp_path / "one.db", progress=False).record
    assert whole.config["data"]["n_images"] == 9 and whole.config["n_samples"] == 6
    first = run(cfg, store=tmp_path / "shards.db", shard=(1, 2), progress=False)
    assert first.record is None and first.committed == 1 and first.total == 3
    second = run(cfg, store=tmp_path / "shards.db", shard=(2, 2), progress=False)  # another resolve, another fit
    assert second.complete and second.config_hash == first.config_hash == whole.config_hash
    assert second.record.metrics == whole.metrics
    assert second.record.samples == whole.samples

    def no_fit(self):
        raise AssertionError("a stored run must not fit its patch again")

    monkeypatch.setattr(DetectionExperiment, "_fit", no_fit)
    again = run(cfg, store=tmp_path / "shards.db", progress=False)
    assert again.skipped and again.record.metrics == whole.metrics


def test_two_resolves_fit_the_same_patch(aerial):
    def patch(cfg: RunConfig) -> torch.Tensor:
        experiment = DetectionExperiment(cfg)
        experiment.resolve()
        return experiment.fitted.patch

    cfg = config(aerial, "patch-whitebox", WHITEBOX)
    first = patch(cfg)
    assert torch.equal(first, patch(cfg))
    assert not torch.equal(first, patch(config(aerial, "patch-whitebox", WHITEBOX, seed=1)))
    # the attack's generator seed alone: same split, another patch, and the record says which seed drew it
    reseeded = DetectionExperiment(config(aerial, "patch-whitebox", WHITEBOX, attack_seed=7))
    plan = reseeded.resolve()
    assert plan.config.attacks[0]["seed"] == 7 and plan.config.split_seed == 0
    assert not torch.equal(first, reseeded.fitted.patch)
    with pytest.raises(ConfigError, match="no seed of its own"):
        DetectionExperiment(config(aerial, "patch-whitebox", {**WHITEBOX, "seed": 3})).resolve()
    # learning on one altitude only: the option reaches the training set and the run's identity
    experiment = DetectionExperiment(config(aerial, "patch-whitebox", WHITEBOX, patch_altitudes="90m"))
    plan = experiment.resolve()
    assert {s.altitude for s in experiment.patch_train} == {"90m"}
    assert plan.config.patch_altitudes == ["90m"] and plan.config.data["n_patch_train"] == 1
    assert plan.config.config_hash() != DetectionExperiment(cfg).resolve().config.config_hash()


@pytest.mark.parametrize(("fields", "options", "message"), [
    ({}, {"train_fraction": 1.5}, r"option train_fraction must lie in \(0, 1\)"),
    ({}, {"iou": 0}, r"option iou must lie in \(0, 1\]"),
    ({}, {"score_threshold": "high"}, "option score_threshold must be a number"),
    ({}, {"detector_epochs": 0}, "option detector_epochs must be a positive integer"),
    ({}, {"image_size": "256by192"}, "option image_size"),
    ({}, {"patch_altitudes": []}, "option patch_altitudes"),
    ({}, {"margin": 1}, "no option 'margin'"),
    ({"attacks": ["patch-transfer"]}, {}, "patch-transfer needs the option surrogate"),
    ({"attacks": ["patch-whitebox", "patch-minmax"]}, {}, "one patch per run"),
    ({"attacks": ["pgd"]}, {}, "'pgd' is a classification attack"),
    ({"defense": "jpeg"}, {}, "no input defenses"),
])
def test_options_are_checked_before_any_work(fields, options, message):
    cfg = RunConfig.build(**{"models": ["fcos-mnv3"], "dataset": "evd4uav:/no/such/folder", "eps": [0.0],
                             "attacks": ["patch-whitebox"], "experiment": "detection", "options": options, **fields})
    with pytest.raises((ConfigError, KeyError), match=message):
        DetectionExperiment(cfg).resolve()
