"""Detectors, patch placement, patch losses and the four patch attacks (issue 6)."""

from __future__ import annotations

import math

import pytest
import torch

from advbench import create_attack, list_attacks
from advbench.attacks.patch import PatchSet
from advbench.attacks.patch_losses import (
    DEFAULT_PALETTE,
    load_palette,
    non_printability,
    total_variation,
    vehicle_scores,
)
from advbench.attacks.patches import (
    PatchPlacement,
    PatchTransform,
    apply_patch,
    apply_patch_each,
    footprint_filter,
    patch_regions,
    region_mask,
    rotated_or_axis_boxes,
)
from advbench.datasets.detection import generate_aerial_dataset, load_detection_dataset
from advbench.detection.protocol import altitude_subset, split_by_group
from advbench.errors import CheckpointError, ConfigError, DatasetError, InputError, UnknownNameError
from advbench.minmax import project_simplex
from advbench.models.detectors import Candidates, create_detector
from advbench.models.registry import list_models
from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import run as run_pipeline
from advbench.training.detection import DetectorTrainConfig, load_detector, save_detector, train_detector


@pytest.fixture(scope="module")
def aerial(tmp_path_factory):
    root = generate_aerial_dataset(tmp_path_factory.mktemp("aerial") / "evd", n_images=12, size=(128, 96), seed=3)
    return root, load_detection_dataset(f"evd4uav:{root}")


@pytest.fixture(scope="module")
def fcos(aerial, tmp_path_factory):
    """A briefly trained FCOS, saved and loaded back (its scores are not meaningful, its gradients are)."""
    _, samples = aerial
    det, _ = train_detector(samples, DetectorTrainConfig(arch="fcos-mnv3", epochs=2, seed=0), progress=False)
    path = save_detector(det, tmp_path_factory.mktemp("det") / "fcos.safetensors")
    return load_detector(path), path


# -- placement --------------------------------------------------------------------------------------
def test_patch_stays_in_unit_box_and_inside_its_vehicle():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 80, 100, generator=gen)
    rboxes = [torch.tensor([[30.0, 30.0, 40.0, 20.0, 25.0], [70.0, 55.0, 36.0, 18.0, -60.0]]),
              torch.tensor([[50.0, 40.0, 44.0, 22.0, 80.0]])]
    patch = torch.rand(3, 12, 12, generator=gen)
    for _ in range(5):  # random rotation jitter must never push the patch off the vehicle
        out = apply_patch(images, patch, rboxes, PatchPlacement((0.6, 0.8)), PatchTransform(), gen)
        assert out.min() >= 0 and out.max() <= 1
        for i in range(2):
            changed = (out[i] - images[i]).abs().amax(dim=0) > 1e-6
            inside = region_mask(rboxes[i], 80, 100)
            assert changed.any()
            assert not (changed & ~inside).any(), "patch pixels outside the vehicle's rotated box"


def test_patch_region_shrinks_to_fit_rotated_jitter():
    box = torch.tensor([[0.0, 0.0, 20.0, 10.0, 0.0]])
    plain = patch_regions(box, PatchPlacement((1.0, 1.0)))
    assert plain[0, 2:4].tolist() == [20.0, 10.0]
    turned = patch_regions(box, PatchPlacement((1.0, 1.0)), torch.tensor([20.0]))
    a, b, t = float(turned[0, 2]), float(turned[0, 3]), math.radians(20)
    assert a * math.cos(t) + b * math.sin(t) <= 20 + 1e-4 and a * math.sin(t) + b * math.cos(t) <= 10 + 1e-4
    assert a / b == pytest.approx(2.0)


def test_patch_is_aligned_with_the_vehicle_axis():
    image = torch.zeros(1, 3, 60, 60)
    vertical = [torch.tensor([[30.0, 30.0, 40.0, 10.0, 90.0]])]  # long side pointing down the image
    out = apply_patch(image, torch.ones(3, 6, 6), vertical, PatchPlacement((0.5, 1.0)))
    cover = out[0, 0] > 0.5
    rows, cols = cover.any(dim=1).sum().item(), cover.any(dim=0).sum().item()
    assert rows == 20 and cols == 10


def test_patch_gradient_and_seeded_jitter():
    images = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    rb = [torch.tensor([[20.0, 20.0, 24.0, 12.0, 10.0]])]
    patch = torch.full((3, 8, 8), 0.5, requires_grad=True)
    a = apply_patch(images, patch, rb, transform=PatchTransform(), gen=torch.Generator().manual_seed(5))
    b = apply_patch(images, patch, rb, transform=PatchTransform(), gen=torch.Generator().manual_seed(5))
    c = apply_patch(images, patch, rb, transform=PatchTransform(), gen=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert patch.grad is not None and patch.grad.abs().sum() > 0


def _placements(images, rboxes, placement, batched):
    """Patched images, the patch's gradient and the generator's state after placing image by image
    (``batched=False`` through apply_patch itself) or through apply_patch_each."""
    patch = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    jitter = torch.Generator().manual_seed(7)
    if batched is False:
        out = [apply_patch(img[None], patch, [rb], placement, PatchTransform(), jitter)[0]
               for img, rb in zip(images, rboxes, strict=True)]
    else:
        out = apply_patch_each(images, patch, rboxes, placement, PatchTransform(), jitter, batched=batched)
    weights = [torch.rand(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(out)]
    (grad,) = torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights, strict=True)), patch)
    return out, grad, jitter.get_state()


@pytest.mark.parametrize("footprint", [False, True])
@pytest.mark.parametrize("scale", [1.0, 5.0])  # 5x: patch regions larger than the 12-texel patch (magnified)
def test_batched_placement_matches_image_by_image_placement(footprint, scale):
    """apply_patch_each batches the placement (one call per image size) for speed on a GPU.  Batched, the draws
    and the pixels are exactly those of one apply_patch per image and the patch's gradient agrees to float32
    rounding.  On the CPU the default stays image by image: bit-identical in every case, so the documented
    seeded results do not depend on the batching."""
    gen = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 96, 128, generator=gen), torch.rand(3, 80, 80, generator=gen),
              torch.rand(3, 96, 128, generator=gen), torch.rand(3, 96, 128, generator=gen)]
    size = torch.tensor([1.0, 1.0, scale, scale, 1.0])
    rboxes = [torch.tensor([[20.0, 20.0, 24.0, 12.0, 10.0], [44.0, 30.0, 18.0, 9.0, -35.0],
                            [25.0, 24.0, 20.0, 10.0, 80.0]]) * size,
              torch.tensor([[20.0, 18.0, 16.0, 8.0, 0.0]]) * size,
              torch.zeros(0, 5),
              torch.tensor([[120.0, 88.0, 20.0, 12.0, 30.0], [10.0, 10.0, 14.0, 7.0, 45.0]]) * size]  # edge-crossing
    placement = PatchPlacement(footprint_filter=footprint)
    out, grad, state = _placements(images, rboxes, placement, False)
    default_out, default_grad, default_state = _placements(images, rboxes, placement, None)
    assert all(torch.equal(a, b) for a, b in zip(out, default_out, strict=True))
    assert torch.equal(grad, default_grad) and torch.equal(state, default_state)
    batched_out, batched_grad, batched_state = _placements(images, rboxes, placement, True)
    assert all(torch.equal(a, b) for a, b in zip(out, batched_out, strict=True))
    assert torch.equal(batched_out[2], images[2]), "an image without vehicles comes back unchanged"
    assert torch.equal(state, batched_state)
    assert torch.allclose(grad, batched_grad, rtol=1e-5, atol=1e-6)  # the same float32 terms, maybe regrouped
    with pytest.raises(InputError, match="rotated boxes for 1 images"):
        apply_patch_each(images, torch.rand(3, 8, 8), rboxes[:1])
    with pytest.raises(InputError, match=r"images must be \(3, H, W\), got \(1, 3, 96, 128\)"):
        apply_patch_each([images[0][None]], torch.rand(3, 8, 8), rboxes[:1])
    with pytest.raises(InputError, match=r"patch must be \(3, P, Q\)"):
        apply_patch_each(images, torch.rand(8, 8), rboxes)


def _checkerboard(size: int) -> torch.Tensor:
    board = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2
    return board.float().expand(3, -1, -1)


def test_footprint_filter_averages_texels_smaller_than_a_pixel():
    board = _checkerboard(24)
    regions = torch.tensor([[0, 0, 48.0, 30.0, 0], [0, 0, 24.0, 24.0, 0], [0, 0, 6.0, 6.0, 0], [0, 0, 3.0, 5.0, 0]])
    out = footprint_filter(board.expand(4, -1, -1, -1), regions)
    assert torch.equal(out[0], board) and torch.equal(out[1], board)  # >= 1 pixel per texel: unchanged
    assert torch.allclose(out[2], torch.full_like(out[2], 0.5))  # 4 texels per pixel: the checker averages out
    assert torch.allclose(out[3], torch.full_like(out[3], 0.5))
    # between two mipmap levels the copy is their blend: 1.5 texels per pixel keeps a checker of reduced contrast
    mid = footprint_filter(board[None], torch.tensor([[0, 0, 16.0, 16.0, 0]]))[0]
    assert 0.0 < float(mid.min()) < 0.5 < float(mid.max()) < 1.0
    flat = torch.rand(3, 1, 1).expand(3, 24, 24)
    assert torch.allclose(footprint_filter(flat.expand(4, -1, -1, -1), regions), flat.expand(4, -1, -1, -1))


def test_footprint_filter_in_placement_keeps_gradients_and_is_an_attack_option():
    images = torch.full((1, 3, 40, 40), 0.5)  # the checker's mean: edge pixels blend two equal greys
    small = [torch.tensor([[20.0, 20.0, 8.0, 5.0, 30.0]])]  # a 4 x 4 pixel patch region for 24 x 24 texels
    stripes = ((torch.arange(24) // 2) % 2).float()  # 2-texel stripes: point samples land on either colour
    patch = stripes.expand(3, 24, -1).clone().requires_grad_(True)
    filtered = apply_patch(images, patch, small, PatchPlacement(footprint_filter=True))
    plain = apply_patch(images, patch, small)  # the default: plain bilinear point samples
    inside = region_mask(small[0], 40, 40)
    values, aliased = filtered.detach()[0, 0][inside], plain.detach()[0, 0][inside]
    assert float((values - 0.5).abs().max()) < 0.1  # the checker's mean everywhere
    assert float((aliased - 0.5).abs().max()) > 0.25  # point samples show single texels
    filtered.sum().backward()
    assert (patch.grad.abs() > 0).float().mean() > 0.5  # the footprint average spreads the gradient over texels
    assert "footprint_filter" not in create_attack("patch-whitebox").hyperparameters()  # off: as before
    attack = create_attack("patch-whitebox", footprint_filter=True)
    assert attack.hyperparameters()["footprint_filter"] is True and attack.placement.footprint_filter
    with pytest.raises(ConfigError, match="footprint_filter"):
        create_attack("patch-whitebox", footprint_filter="yes")


def test_axis_boxes_become_rotated_boxes():
    rb = rotated_or_axis_boxes(torch.tensor([[0.0, 0.0, 10.0, 4.0], [0.0, 0.0, 4.0, 10.0]]), None)
    assert rb.tolist() == [[5.0, 2.0, 10.0, 4.0, 0.0], [2.0, 5.0, 10.0, 4.0, -90.0]]


def test_placement_and_transform_validation():
    with pytest.raises(ConfigError, match="fraction"):
        PatchPlacement((1.2, 0.5))
    with pytest.raises(ConfigError, match="contrast"):
        PatchTransform(contrast=(1.2, 0.8))
    with pytest.raises(InputError, match="patch must be"):
        apply_patch(torch.zeros(1, 3, 8, 8), torch.zeros(8, 8), [torch.zeros(0, 5)])
    with pytest.raises(ConfigError, match="Generator"):  # jitter never draws from the global generator
        apply_patch(torch.zeros(1, 3, 8, 8), torch.zeros(3, 4, 4), [torch.tensor([[4.0, 4, 6, 4, 0]])],
                    transform=PatchTransform())


# -- losses -----------------------------------------------------------------------------------------
def test_vehicle_scores_take_the_best_overlapping_candidate():
    cand = Candidates(boxes=torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11], [50.0, 50, 60, 60]]),
                      scores=torch.tensor([0.3, 0.8, 0.9]),
                      objectness_boxes=torch.tensor([[0.0, 0, 10, 10]]), objectness=torch.tensor([0.4]))
    targets = [torch.tensor([[0.0, 0, 10, 10], [100.0, 100, 110, 110]])]
    assert vehicle_scores([cand], targets)[0].tolist() == pytest.approx([0.8, 0.0])
    assert vehicle_scores([cand], targets, kind="objectness")[0].tolist() == pytest.approx([0.4, 0.0])
    assert vehicle_scores([cand], targets, reduction="image")[0].tolist() == pytest.approx([0.9])
    with pytest.raises(ConfigError, match="score kind"):
        vehicle_scores([cand], targets, kind="logits")


def test_nps_and_tv_hand_values(tmp_path):
    on_palette = DEFAULT_PALETTE[5].view(3, 1, 1).expand(3, 4, 4)
    assert float(non_printability(on_palette)) == pytest.approx(0.0, abs=1e-6)
    assert float(non_printability(torch.zeros(3, 2, 2))) == pytest.approx(math.sqrt(3 * 0.1**2), rel=1e-5)
    stripes = torch.zeros(3, 2, 4)
    stripes[:, :, 1::2] = 1.0  # every horizontal neighbour differs by 1, vertical neighbours are equal
    assert float(total_variation(stripes)) == pytest.approx(1.0)
    assert float(total_variation(torch.full((3, 5, 5), 0.3))) == 0.0
    good = tmp_path / "palette.txt"
    good.write_text("# r g b\n255,0,0\n0 255 0\n")
    assert load_palette(good).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1 0.2 0.3\n0.1 0.2\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2"):
        load_palette(bad)


# -- detectors --------------------------------------------------------------------------------------
def test_detector_registry_and_candidate_gradients():
    assert {"fasterrcnn-mnv3", "fcos-mnv3"} <= set(list_models(task="detection"))
    for arch in ("fasterrcnn-mnv3", "fcos-mnv3"):
        det = create_detector(arch, class_names=("Car", "Bus"), image_size=(96, 64), seed=0)
        images = torch.rand(2, 3, 64, 96, requires_grad=True)
        cands = det.candidates(images)
        assert len(cands) == 2 and cands[0].boxes.shape[0] == cands[0].scores.shape[0]
        assert cands[0].objectness.shape[0] == cands[0].objectness_boxes.shape[0]
        assert 0 <= cands[0].scores.min().item() and cands[0].scores.max().item() <= 1
        (cands[0].scores.max() + cands[1].objectness.max()).backward()
        assert images.grad[0].abs().sum() > 0 and images.grad[1].abs().sum() > 0
        for d in det.detect(images.detach()):
            assert d["labels"].numel() == 0 or (0 <= int(d["labels"].min()) and int(d["labels"].max()) < 2)
    with pytest.raises(UnknownNameError, match="fcos-mnv3"):
        create_detector("yolo", class_names=("Car",), image_size=(64, 64))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        det.detect(torch.zeros(3, 64, 96))


def test_detector_checkpoint_round_trip(fcos, aerial, tmp_path):
    det, path = fcos
    _, samples = aerial
    image = samples[0].load_image()[None]
    again = load_detector(path)
    a, b = det.detect(image)[0], again.detect(image)[0]
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])
    # the user's own weights: a bare torchvision state dict plus the architecture facts
    bare = tmp_path / "mine.pt"
    torch.save(det.model.state_dict(), bare)
    mine = load_detector(bare, arch="fcos-mnv3", class_names=det.class_names, image_size=det.image_size)
    assert torch.equal(mine.detect(image)[0]["scores"], a["scores"])
    with pytest.raises(CheckpointError, match="no detector metadata"):
        load_detector(bare)
    with pytest.raises(CheckpointError, match="does not match"):
        load_detector(bare, arch="fcos-mnv3", class_names=("Car",), image_size=det.image_size)


def test_classifier_checkpoint_is_not_a_detector(digits_model):
    with pytest.raises(CheckpointError, match="not a detector"):
        load_detector(digits_model.checkpoint_file)


# -- attacks ----------------------------------------------------------------------------------------
def test_patch_attack_registry_and_errors(fcos, aerial):
    names = {"patch-whitebox", "patch-transfer", "patch-random-search", "patch-minmax"}
    assert set(list_attacks(task="detection")) == names
    with pytest.raises(ConfigError, match="steps"):
        create_attack("patch-whitebox", steps=0)
    with pytest.raises(ConfigError, match="no parameter 'epsilon'"):
        create_attack("patch-whitebox", epsilon=3)
    with pytest.raises(ConfigError, match="no parameter 'seed'"):  # randomness comes from the call's generator
        create_attack("patch-whitebox", seed=3)
    with pytest.raises(InputError, match="empty"):
        create_attack("patch-whitebox", steps=1)(fcos[0], PatchSet([], [], [], []))
    with pytest.raises(ConfigError, match="surrogate"):
        create_attack("patch-transfer", steps=1)(fcos[0], PatchSet.from_samples(aerial[1][:2]))


def test_whitebox_patch_is_learned_within_bounds(fcos, aerial):
    det, _ = fcos
    data = PatchSet.from_samples(aerial[1][:6])
    attack = create_attack("patch-whitebox", steps=4, batch_size=2, patch_size=8)
    fit = attack(det, data)
    assert fit.patch.shape == (3, 8, 8) and float(fit.patch.min()) >= 0 and float(fit.patch.max()) <= 1
    assert not torch.allclose(fit.patch, torch.full_like(fit.patch, 0.5)), "the patch never moved"
    again = create_attack("patch-whitebox", steps=4, batch_size=2, patch_size=8)(det, data)
    assert torch.equal(fit.patch, again.patch), "same seed, different patch"


def test_minmax_patch_weights_stay_on_the_simplex(fcos, aerial):
    det, _ = fcos
    data = PatchSet.from_samples(aerial[1])
    # a barely trained detector rarely overlaps vehicles, so score the image-level maximum
    attack = create_attack("patch-minmax", steps=4, batch_size=3, patch_size=8, beta=0.5, gamma=0.1,
                                 reduction="image")
    fit = attack(det, data)
    assert fit.info["domains"] == ["50m", "70m", "90m"]
    trace = torch.tensor(fit.info["weight_trace"])
    assert trace.shape == (5, 3)
    assert torch.all(trace >= 0) and torch.allclose(trace.sum(dim=1), torch.ones(5))
    assert torch.allclose(project_simplex(trace), trace, atol=1e-6)
    assert not torch.allclose(trace[-1], trace[0]), "the altitude weights never moved"
    assert float(fit.patch.min()) >= 0 and float(fit.patch.max()) <= 1


def test_minmax_weights_can_follow_the_detection_rate(fcos, aerial):
    from advbench.attacks.patch import _AltitudeDomains

    det, _ = fcos
    data = PatchSet.from_samples(aerial[1])
    attack = create_attack("patch-minmax", steps=3, batch_size=3, patch_size=8, gamma=0.1,
                                 score_threshold=0.05, weight_signal="detection-rate")
    assert attack.hyperparameters()["weight_signal"] == "detection-rate"
    fit = attack(det, data)
    rates = fit.info["detection_rates"]
    assert set(rates) == {"50m", "70m", "90m"} and any(r is not None for r in rates.values())
    assert all(0 <= r <= 1 for r in rates.values() if r is not None), "still-detected shares"
    trace = torch.tensor(fit.info["weight_trace"])
    assert torch.allclose(trace.sum(dim=1), torch.ones(4)) and torch.all(trace >= 0)
    # the running rate by hand: 2 of 3 clean-found vehicles kept, then 0 of 1 (the unfound one never counts)
    domains = _AltitudeDomains(attack, [det], data, 1, torch.Generator().manual_seed(0), 0.5)
    found = [torch.tensor([True, True, False, True])]
    assert domains._rate(0, found, [torch.tensor([0.9, 0.2, 0.99, 0.6])]) == pytest.approx(2 / 3)
    assert domains._rate(0, [torch.tensor([True, False])], [torch.tensor([0.1, 0.9])]) == pytest.approx(0.8 * 2 / 3)
    assert domains._rate(1, [torch.tensor([False])], [torch.tensor([0.9])]) is None  # nothing found yet
    with pytest.raises(ConfigError, match="weight_signal"):
        create_attack("patch-minmax", weight_signal="asr")
    with pytest.raises(ConfigError, match="reduction='vehicle'"):
        create_attack("patch-minmax", weight_signal="detection-rate", reduction="image")


def test_soft_threshold_counts_vehicles_still_detected(fcos, aerial):
    det, _ = fcos
    data = PatchSet.from_samples(aerial[1][:3])
    patch = torch.full((3, 8, 8), 0.5)
    plain = create_attack("patch-whitebox", patch_size=8, reduction="image")
    soft = create_attack("patch-whitebox", patch_size=8, reduction="image", soft_threshold=0.05)
    with torch.no_grad():
        scores = plain.image_scores(det, patch, data, [0, 1, 2], None, jitter=False)
        counted = soft.image_scores(det, patch, data, [0, 1, 2], None, jitter=False)
    assert torch.allclose(counted, torch.sigmoid((scores - 0.05) / 0.1))
    with pytest.raises(ConfigError, match="soft_threshold"):
        create_attack("patch-whitebox", soft_threshold=1.5)


def test_random_search_respects_its_query_budget(fcos, aerial):
    det, _ = fcos
    data = PatchSet.from_samples(aerial[1])
    attack = create_attack("patch-random-search", queries=20, search_images=3, patch_size=8)
    fit = attack(det, data)
    assert fit.info["detector_queries"] <= 20 and fit.info["proposals"] == 5
    assert all(b <= a + 1e-12 for a, b in zip(fit.history, fit.history[1:], strict=False)), "accepted a worse patch"
    with pytest.raises(ConfigError, match="queries"):
        create_attack("patch-random-search", queries=2, search_images=3)(det, data)


def test_transfer_never_queries_the_victim(fcos, aerial):
    det, _ = fcos
    surrogate = create_detector("fcos-mnv3", class_names=det.class_names, image_size=det.image_size, seed=9)
    calls = {"victim": 0}
    original = det.candidates

    def counting(images):
        calls["victim"] += 1
        return original(images)

    det.candidates = counting
    try:
        attack = create_attack("patch-transfer", surrogate=surrogate, steps=2, batch_size=2, patch_size=8)
        fit = attack(det, PatchSet.from_samples(aerial[1][:4]))
    finally:
        del det.candidates
    assert calls["victim"] == 0 and fit.info["surrogate"] == "fcos-mnv3"


# -- the experiment ---------------------------------------------------------------------------------
def test_split_keeps_every_altitude_in_both_parts(aerial):
    _, samples = aerial
    train, test = split_by_group(samples, 0.5, seed=0)
    assert len(train) + len(test) == len(samples)
    assert {s.altitude for s in train} == {s.altitude for s in test} == {"50m", "70m", "90m"}
    assert not {s.image_id for s in train} & {s.image_id for s in test}


def test_altitude_subset_keeps_only_the_named_altitudes(aerial):
    train, _ = split_by_group(aerial[1], 0.5, seed=0)
    only = altitude_subset(train, ["90m", "50m"])
    assert only and {s.altitude for s in only} == {"50m", "90m"}
    assert [s.image_id for s in only] == [s.image_id for s in train if s.altitude in ("50m", "90m")]
    with pytest.raises(InputError, match=r"has altitudes \['50m', '70m', '90m'\]"):
        altitude_subset(train, ["120m"])
    with pytest.raises(InputError, match="pick some of those"):
        altitude_subset(train, [])


def detection_run(dataset: str, detector: str, attack: str, params: dict, **options) -> RunConfig:
    """The RunConfig ``advbench detect-attack`` builds: every image (no --max-images), test images in batches of
    64, the patch attack's hyperparameters in attack_params and the rest as the experiment's options."""
    return RunConfig.build(models=[detector], dataset=dataset, attacks=[attack], eps=[0.0], n_samples=None,
                           batch_size=64, experiment="detection", attack_params={attack: params},
                           options={"progress": False, **options})


def test_detect_attack_run_is_stored_and_skipped(fcos, aerial, tmp_path):
    root, _ = aerial
    _, path = fcos
    params = {"steps": 2, "batch_size": 3, "patch_size": 8}
    cfg = detection_run(f"evd4uav:{root}", str(path), "patch-minmax", params, score_threshold=0.05)
    store = tmp_path / "results.db"
    first = run_pipeline(cfg, store=store, progress=False)
    assert first.complete and not first.skipped
    metrics = first.record.metrics
    assert set(metrics["asr_by_altitude"]) == {"50m", "70m", "90m"}
    assert set(metrics["weights"]) == {"50m", "70m", "90m"}
    assert sum(metrics["weights"].values()) == pytest.approx(1.0)
    assert metrics["patch"]["min"] >= 0 and metrics["patch"]["max"] <= 1
    assert "AP50" in metrics["ap_clean"] and "control_asr" in metrics
    n_vehicles = metrics["counts"]["overall"]["vehicles"]
    assert len(first.record.samples) == n_vehicles > 0
    assert first.record.config["model"]["sha256"] and first.record.config["attacks"][0]["name"] == "patch-minmax"
    again = run_pipeline(cfg, store=store, progress=False)
    assert again.skipped and again.config_hash == first.config_hash and again.record.metrics["asr"] == metrics["asr"]
    assert "patch_altitudes" not in first.record.config  # unset: the config (and store key) is as before
    # a patch learned on one altitude only is another run, and is still measured on every altitude
    only_90 = run_pipeline(detection_run(f"evd4uav:{root}", str(path), "patch-minmax", params, score_threshold=0.05,
                                         patch_altitudes=["90m"]), store=store, progress=False)
    assert not only_90.skipped and only_90.config_hash != first.config_hash
    rec = only_90.record
    assert rec.metrics["domains"] == ["90m"] and rec.metrics["weights"] == {"90m": 1.0}
    assert set(rec.metrics["asr_by_altitude"]) == {"50m", "70m", "90m"}
    assert rec.config["patch_altitudes"] == ["90m"]
    assert 0 < rec.config["data"]["n_patch_train"] < rec.config["data"]["n_train"]
    assert rec.config["n_samples"] == first.record.config["n_samples"]  # the same held-out images are measured
    with pytest.raises(InputError, match=r"has altitudes \['50m', '70m', '90m'\]"):
        run_pipeline(detection_run(f"evd4uav:{root}", str(path), "patch-minmax", params, patch_altitudes=["120m"]),
                     progress=False)


def test_detector_named_by_arch_is_trained_only_when_the_run_is_not_stored(fcos, aerial, tmp_path, monkeypatch):
    from advbench.detection import protocol

    root, _ = aerial
    calls = []

    def fake_train(samples, cfg, progress=True, device="cpu"):
        assert device == "cpu"
        calls.append((cfg.arch, cfg.epochs, cfg.seed))
        return fcos[0], {"final_loss": 0.5}

    monkeypatch.setattr(protocol, "train_detector", fake_train)
    dataset, params = f"evd4uav:{root}", {"steps": 1, "batch_size": 2, "patch_size": 8}
    cfg = detection_run(dataset, "fcos-mnv3", "patch-whitebox", params, detector_epochs=3, score_threshold=0.05)
    store = tmp_path / "results.db"
    first = run_pipeline(cfg, store=store, progress=False)
    assert calls == [("fcos-mnv3", 3, 0)] and first.complete and not first.skipped
    assert first.record.config["model"] == {"name": "fcos-mnv3", "arch": "fcos-mnv3",
                                            "trained_here": {"epochs": 3, "seed": 0}}
    assert first.record.cost["detectors_trained_here"] == [{"arch": "fcos-mnv3", "final_loss": 0.5}]
    again = run_pipeline(cfg, store=store, progress=False)
    assert again.skipped and calls == [("fcos-mnv3", 3, 0)]  # answered from the store: no second training
    other = run_pipeline(detection_run(dataset, "fcos-mnv3", "patch-whitebox", params, detector_epochs=4,
                                       score_threshold=0.05), store=store, progress=False)
    assert not other.skipped and other.config_hash != first.config_hash  # another recipe is another run
    assert calls[-1] == ("fcos-mnv3", 4, 0)
    transfer = detection_run(dataset, str(fcos[1]), "patch-transfer", params, detector_epochs=3, score_threshold=0.05,
                             surrogate="fcos-mnv3")
    rec = run_pipeline(transfer, store=store, progress=False).record
    assert calls[-1] == ("fcos-mnv3", 3, 1)  # the surrogate trains with the run's seed + 1
    assert rec.config["surrogate"] == {"arch": "fcos-mnv3", "trained_here": {"epochs": 3, "seed": 1}}
    assert rec.config["model"]["checkpoint"] == str(fcos[1]) and "surrogate" not in rec.config["attacks"][0]
    assert rec.cost["detectors_trained_here"] == [{"arch": "fcos-mnv3", "final_loss": 0.5}]  # the victim was loaded
    assert run_pipeline(transfer, store=store, progress=False).skipped and len(calls) == 3


def test_detect_attack_rejects_bad_input(aerial):
    root, _ = aerial
    dataset, params = f"evd4uav:{root}", {"steps": 1}
    with pytest.raises(InputError, match="neither a checkpoint"):
        run_pipeline(detection_run(dataset, "/no/such.safetensors", "patch-whitebox", params), progress=False)
    with pytest.raises(ConfigError, match="patch-transfer needs the option surrogate"):
        run_pipeline(detection_run(dataset, "fcos-mnv3", "patch-transfer", params), progress=False)
    with pytest.raises(ConfigError, match="option train_fraction must lie in"):
        run_pipeline(detection_run(dataset, "fcos-mnv3", "patch-whitebox", params, train_fraction=1.0), progress=False)
    with pytest.raises(ConfigError, match="option score_threshold must lie in"):
        run_pipeline(detection_run(dataset, "fcos-mnv3", "patch-whitebox", params, score_threshold=2), progress=False)
    with pytest.raises(ConfigError, match="'pgd' is a classification attack"):
        run_pipeline(detection_run(dataset, "fcos-mnv3", "pgd", {}), progress=False)
    with pytest.raises(UnknownNameError, match="patch-whitebox"):  # the error lists the known attacks
        run_pipeline(detection_run(dataset, "fcos-mnv3", "patch-whiteboxx", {}), progress=False)
