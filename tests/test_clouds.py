"""Cloud synthesis (Perlin noise, soft-threshold masks, compositing) and `advbench cloudify`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advbench.attacks.clouds import (
    CloudSpec,
    cloud_mask,
    cloud_noise,
    cloudify,
    image_seed,
    is_mask_path,
    parse_colour,
    sample_clouds,
)
from advbench.errors import ConfigError, InputError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _f32(value: float) -> float:
    """``value`` as the masks store it (float32), for exact bound checks."""
    return float(torch.tensor(value, dtype=torch.float32))


def test_noise_is_in_unit_range_with_the_right_shape() -> None:
    noise = cloud_noise(3, 20, 28, octaves=4, generator=_gen(0))
    assert noise.shape == (3, 1, 20, 28) and noise.dtype == torch.float32
    assert float(noise.min()) == 0.0 and float(noise.max()) == 1.0  # rescaled per image
    assert not torch.equal(noise[0], noise[1])  # each image its own cloud
    single = cloud_noise(1, 1, 1, generator=_gen(0))
    assert single.shape == (1, 1, 1, 1) and 0.0 <= float(single) <= 1.0


def test_masks_are_in_unit_range_and_bounded_by_thickness() -> None:
    spec = CloudSpec(coverage=0.6, thickness=0.7)
    mask = sample_clouds(spec, 4, 24, 24, _gen(1))
    assert mask.shape == (4, 1, 24, 24)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= _f32(0.7)
    noise = cloud_noise(2, 24, 24, generator=_gen(1))
    for thickness in (0.0, 0.3, 1.0):
        m = cloud_mask(noise, coverage=1.0, thickness=thickness)
        assert float(m.max()) <= _f32(thickness)
        assert float(m.max()) >= 0.95 * thickness  # full coverage reaches (nearly) the peak opacity


def test_same_seed_same_mask_different_seed_different_mask() -> None:
    spec = CloudSpec()
    a = sample_clouds(spec, 2, 16, 20, _gen(7))
    b = sample_clouds(spec, 2, 16, 20, _gen(7))
    c = sample_clouds(spec, 2, 16, 20, _gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_coverage_is_monotone_and_sets_the_share_of_cloudy_pixels() -> None:
    noise = cloud_noise(2, 32, 32, generator=_gen(3))
    thickness = 0.8
    previous_mask, previous_share = None, -1.0
    for coverage in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        mask = cloud_mask(noise, coverage=coverage, thickness=thickness)
        share = float((mask > thickness / 2).float().mean())
        assert abs(share - coverage) <= 2 / (32 * 32)
        assert share >= previous_share
        if previous_mask is not None:
            assert bool((mask >= previous_mask).all())  # pointwise: more coverage never thins a cloud
        previous_mask, previous_share = mask, share
    assert previous_share > 0.99


def test_hand_case_for_the_quantile_threshold() -> None:
    noise = torch.tensor([0.0, 0.25, 0.5, 1.0]).reshape(1, 1, 2, 2)
    mask = cloud_mask(noise, coverage=0.5, thickness=1.0, softness=0.1)
    # the 0.5 quantile interpolates between 0.25 and 0.5: threshold 0.375
    expected = torch.sigmoid((noise - 0.375) / 0.1)
    assert torch.allclose(mask, expected)


def test_gradient_flows_to_noise_coverage_and_thickness() -> None:
    noise = cloud_noise(2, 12, 12, generator=_gen(4)).requires_grad_(True)
    coverage = torch.tensor([0.3, 0.6], requires_grad=True)
    thickness = torch.tensor(0.7, requires_grad=True)
    mask = cloud_mask(noise, coverage=coverage, thickness=thickness)
    g_noise, g_cov, g_thick = torch.autograd.grad(mask.sum(), (noise, coverage, thickness))
    assert bool((g_cov > 0).all())  # more coverage, more cloud
    assert float(g_thick) > 0
    assert float(g_noise.abs().sum()) > 0


def test_cloudify_hand_case_white_and_tinted() -> None:
    x = torch.tensor([0.2, 0.4, 0.6]).reshape(1, 3, 1, 1).expand(1, 3, 1, 2).clone()
    mask = torch.tensor([0.0, 0.5]).reshape(1, 1, 1, 2)
    white = cloudify(x, mask)
    assert torch.allclose(white[0, :, 0, 0], torch.tensor([0.2, 0.4, 0.6]))
    assert torch.allclose(white[0, :, 0, 1], torch.tensor([0.6, 0.7, 0.8]))
    tinted = cloudify(x, mask, colour=(1.0, 0.0, 0.5))
    assert torch.allclose(tinted[0, :, 0, 1], torch.tensor([0.6, 0.2, 0.55]))
    grey = cloudify(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), colour=(1.0, 1.0, 1.0))
    assert torch.allclose(grey, torch.ones(1, 1, 1, 1))


def test_cloudify_refuses_mismatched_shapes_and_bad_values() -> None:
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(InputError) as info:
        cloudify(x, torch.zeros(2, 1, 8, 6))
    assert "(2, 1, 8, 6)" in str(info.value) and "(2, 3, 8, 8)" in str(info.value)
    with pytest.raises(InputError, match="mask must lie in"):
        cloudify(x, torch.full((2, 1, 8, 8), 1.5))
    with pytest.raises(ConfigError, match="colour"):
        cloudify(x, torch.zeros(2, 1, 8, 8), colour=(1.0, 1.0))
    with pytest.raises(ConfigError, match="colour"):
        cloudify(x, torch.zeros(2, 1, 8, 8), colour=(1.0, 2.0, 1.0))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"coverage": 1.5}, "CloudSpec.coverage"),
        ({"thickness": -0.1}, "CloudSpec.thickness"),
        ({"octaves": 0}, "CloudSpec.octaves"),
        ({"softness": 0.0}, "CloudSpec.softness"),
        ({"persistence": 1.5}, "CloudSpec.persistence"),
        ({"base_scale": 0}, "CloudSpec.base_scale"),
        ({"colour": (1.0, 1.0)}, "CloudSpec.colour"),
    ],
)
def test_cloud_spec_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CloudSpec(**kwargs)


def test_function_arguments_are_validated() -> None:
    with pytest.raises(ConfigError, match="generator"):
        cloud_noise(1, 4, 4, generator=None)  # type: ignore[arg-type]
    noise = cloud_noise(2, 4, 4, generator=_gen(0))
    with pytest.raises(ConfigError, match="coverage"):
        cloud_mask(noise, coverage=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ConfigError, match="thickness"):
        cloud_mask(noise, thickness=torch.tensor(1.2))
    with pytest.raises(InputError, match=r"\(B,1,H,W\)"):
        cloud_mask(noise[:, 0])
    assert parse_colour("1,0.9, 0.8") == (1.0, 0.9, 0.8)
    with pytest.raises(ConfigError, match="--colour"):
        parse_colour("white")


def test_helpers_for_folders() -> None:
    assert is_mask_path(Path("train/masks/a.png")) and is_mask_path(Path("GT/a.png"))
    assert is_mask_path(Path("test-labels/a.png")) and not is_mask_path(Path("images/labels.png"))
    assert image_seed(0, Path("a/b.png")) == image_seed(0, Path("a/b.png"))
    assert image_seed(0, Path("a/b.png")) != image_seed(1, Path("a/b.png"))


# ------------------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    (src / "train-images" / "sub").mkdir(parents=True)
    (src / "train-labels").mkdir()
    (src / "masks").mkdir()
    Image.fromarray(rng.integers(0, 120, (12, 10, 3), dtype=np.uint8)).save(src / "train-images" / "a.png")
    Image.fromarray(rng.integers(0, 120, (9, 14, 3), dtype=np.uint8)).save(src / "train-images" / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 120, (8, 8), dtype=np.uint8)).save(src / "grey.png")
    binary = (rng.integers(0, 2, (12, 10)) * 255).astype(np.uint8)
    Image.fromarray(binary).save(src / "train-labels" / "a.png")
    Image.fromarray(binary).save(src / "masks" / "a.png")
    (src / "README.txt").write_text("EORSSD-like sample\n")
    return src


def test_cli_cloudify_writes_images_masks_and_copies(run_cli, image_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli("cloudify", str(image_tree), str(out), "--seed", "3", "--coverage", "0.6",
                                "--thickness", "0.9", "--colour", "1,1,0.9", "--octaves", "3", "--json")
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["images"] == 3 and payload["copied"] == 3
    for rel in ("train-labels/a.png", "masks/a.png", "README.txt"):  # copied byte for byte
        assert (out / rel).read_bytes() == (image_tree / rel).read_bytes()
    for rel, mask_rel in (("train-images/a.png", "train-images/a.png"), ("train-images/sub/b.jpg",
                                                                         "train-images/sub/b.png"),
                          ("grey.png", "grey.png")):
        before, after = Image.open(image_tree / rel), Image.open(out / rel)
        assert after.size == before.size and after.mode == before.mode
        cloud = np.asarray(Image.open(out / "clouds" / mask_rel))
        assert cloud.shape == (before.size[1], before.size[0]) and cloud.max() <= round(0.9 * 255)
        assert np.asarray(after, dtype=float).mean() > np.asarray(before, dtype=float).mean()  # white clouds
    assert not (out / "clouds" / "masks").exists() and not (out / "clouds" / "train-labels").exists()

    again = tmp_path / "again"
    code, _, err = run_cli("cloudify", str(image_tree), str(again), "--seed", "3", "--coverage", "0.6",
                           "--thickness", "0.9", "--colour", "1,1,0.9", "--octaves", "3")
    assert code == 0, err
    assert (again / "train-images/a.png").read_bytes() == (out / "train-images/a.png").read_bytes()
    other = tmp_path / "other"
    assert run_cli("cloudify", str(image_tree), str(other), "--seed", "4")[0] == 0
    assert (other / "clouds/grey.png").read_bytes() != (again / "clouds/grey.png").read_bytes()


def test_cli_cloudify_refuses_non_empty_out_and_bad_options(run_cli, image_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, _, err = run_cli("cloudify", str(image_tree), str(out))
    assert code == 2 and "not an empty folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("cloudify", str(image_tree), str(empty), "--colour", "red")
    assert code == 2 and "--colour" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("cloudify", str(image_tree), str(empty), "--coverage", "2")
    assert code == 2 and "coverage" in err
    code, _, err = run_cli("cloudify", str(tmp_path / "missing"), str(empty))
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli("cloudify", str(image_tree), str(image_tree / "inner"))
    assert code == 2 and "inside SRC" in err
    assert list(empty.iterdir()) == []


def test_cli_cloudify_leaves_nothing_behind_on_a_bad_image(run_cli, image_tree: Path, tmp_path: Path) -> None:
    (image_tree / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code, _, err = run_cli("cloudify", str(image_tree), str(out))
    assert code == 2 and "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.partial*"))
