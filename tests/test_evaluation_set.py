"""Tests for advbench.datasets.evaluation_set: folders as they stand, CIFAR from its test file, seeded
class-balanced and listed selections, timm-style resize + centre crop, and decoding only what is selected."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advbench.datasets import EvaluationSet, Preprocessing, load_dataset, load_evaluation_set
from advbench.datasets.evaluation_set import balanced_indices
from advbench.errors import ConfigError, DatasetError, InputError, MissingPathError, UnknownNameError

N_CLASSES, PER_CLASS = 10, 12
CLASSES = tuple(f"c{k:02d}" for k in range(N_CLASSES))


def _picture(label: int, index: int) -> Image.Image:
    """A JPEG-able RGB picture whose colour depends on the class and whose size on the index (64..90 px)."""
    width, height = 64 + (7 * index + 3 * label) % 27, 64 + (5 * index + 2 * label) % 27
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.array([(37 * label) % 256, (91 * label + 60) % 256, (153 * label + 120) % 256])
    pixels = (base[None, None, :] + 2 * xx[..., None] + yy[..., None] * np.array([1, 0, 2])) % 256
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def _write_jpeg_classes(root: Path, classes=CLASSES, per_class: int = PER_CLASS) -> None:
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _picture(label, i).save(root / name / f"img_{i:03d}.jpg", quality=90)


def _write_png_classes(root: Path, classes: tuple[str, ...], per_class: int, size: int = 8) -> None:
    """Small same-size PNGs; pixel value = 10 * class + image index, so each file is recognisable."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (size, size), 10 * label + i).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jpegs")
    _write_jpeg_classes(root)
    return root


@pytest.fixture(scope="module")
def crop56() -> Preprocessing:
    return Preprocessing.from_crop_pct(56, 0.875)


def _spec(root: Path) -> str:
    return f"imagefolder:{root}"


# --------------------------------------------------------------------------- image folders


def test_folder_is_used_whole_in_the_fixed_order(jpeg_root: Path, crop56: Preprocessing) -> None:
    ev = load_evaluation_set(_spec(jpeg_root), preprocessing=crop56)
    assert isinstance(ev, EvaluationSet)
    n = N_CLASSES * PER_CLASS
    assert ev.x.shape == (n, 3, 56, 56) and ev.x.dtype == torch.float32 and ev.input_shape == (3, 56, 56)
    assert 0.0 <= float(ev.x.min()) and float(ev.x.max()) <= 1.0
    assert ev.class_names == CLASSES and ev.num_classes == N_CLASSES
    assert ev.y.dtype == torch.int64 and ev.y.bincount().tolist() == [PER_CLASS] * N_CLASSES
    assert ev.sample_ids[:2] == ("c00/img_000.jpg", "c00/img_001.jpg") and list(ev.sample_ids) == sorted(ev.sample_ids)
    assert ev.source == {"spec": _spec(jpeg_root), "split": "folder", "n_available": n}
    assert ev.selection["n"] == n and ev.selection["n_available"] == n
    assert ev.preprocessing == {"resize": 64, "crop": 56, "interpolation": "bilinear"}
    assert ev.warnings == ()


def test_val_or_test_subfolder_is_used_and_both_must_be_chosen_between(tmp_path: Path) -> None:
    _write_png_classes(tmp_path / "train", ("ant", "bee", "cat"), 1)
    _write_png_classes(tmp_path / "val", ("bee", "cat"), 3)
    ev = load_evaluation_set(_spec(tmp_path))
    assert ev.source["split"] == "val" and ev.source["n_available"] == 6
    # class indices follow train/ (as the model was trained), ids are relative to val/
    assert ev.class_names == ("ant", "bee", "cat") and ev.y.tolist() == [1, 1, 1, 2, 2, 2]
    assert ev.sample_ids[0] == "bee/0.png" and ev.input_shape == (1, 8, 8)  # all grayscale: one channel
    torch.testing.assert_close(ev.x[4], torch.full((1, 8, 8), 11 / 255))  # val/cat/1.png (written as 10 * 1 + 1)
    _write_png_classes(tmp_path / "test", ("ant",), 2)
    with pytest.raises(DatasetError, match=r"both 'val/' and 'test/'.*\?split=val"):
        load_evaluation_set(_spec(tmp_path))
    chosen = load_evaluation_set(f"{_spec(tmp_path)}?split=test")
    assert chosen.source["split"] == "test" and chosen.y.tolist() == [0, 0] and chosen.sample_ids[0] == "ant/0.png"
    with pytest.raises(DatasetError, match="no 'nope/' subfolder"):
        load_evaluation_set(f"{_spec(tmp_path)}?split=nope")
    # a val/ tree on its own: its own class names
    alone = load_evaluation_set(_spec(tmp_path / "val"))
    assert alone.class_names == ("bee", "cat") and alone.source["split"] == "folder"


def test_train_test_layout_evaluates_the_test_tree(tmp_path: Path) -> None:
    _write_png_classes(tmp_path / "train", ("a", "b"), 4)
    _write_png_classes(tmp_path / "test", ("a", "b"), 2)
    ev = load_evaluation_set(_spec(tmp_path), n_samples=2)
    assert ev.source == {"spec": _spec(tmp_path), "split": "test", "n_available": 4}
    assert ev.y.tolist() == [0, 1]  # balanced: one of each class


def test_holdout_spec_evaluates_the_files_training_held_out(tmp_path: Path) -> None:
    _write_png_classes(tmp_path, ("a", "b", "c"), 8)
    spec = f"{_spec(tmp_path)}?holdout=0.25"
    train = load_dataset(spec, seed=3)
    ev = load_evaluation_set(spec, split_seed=3)
    assert ev.source["split"] == "holdout" and len(ev.x) == len(train.x_test) == 6
    values = lambda x: sorted(round(float(v) * 255) for v in x[:, 0, 0, 0])  # noqa: E731
    assert values(ev.x) == values(train.x_test)
    assert values(load_evaluation_set(spec, split_seed=4).x) != values(ev.x)


def test_balanced_selection_is_class_balanced_and_seeded(jpeg_root: Path, crop56: Preprocessing) -> None:
    spec = _spec(jpeg_root)
    for n in (30, 25, 7):
        ev = load_evaluation_set(spec, n_samples=n, seed=0, preprocessing=crop56)
        counts = np.bincount(ev.y.numpy(), minlength=N_CLASSES)
        assert counts.sum() == n == len(ev.sample_ids) and counts.max() - counts.min() <= 1, counts
        assert list(ev.sample_ids) == sorted(ev.sample_ids)  # returned in the fixed order
    a = load_evaluation_set(spec, n_samples=30, seed=5, preprocessing=crop56)
    b = load_evaluation_set(spec, n_samples=30, seed=5, preprocessing=crop56)
    c = load_evaluation_set(spec, n_samples=30, seed=6, preprocessing=crop56)
    assert a.sample_ids == b.sample_ids and torch.equal(a.x, b.x)
    assert a.sample_ids != c.sample_ids
    assert a.selection["method"] == "balanced" and a.selection["seed"] == 5 and a.selection["n"] == 30
    assert a.selection["ids_sha256"] == b.selection["ids_sha256"] != c.selection["ids_sha256"]
    # the labels belong to the files
    assert all(ev_id.startswith(CLASSES[label]) for ev_id, label in zip(a.sample_ids, a.y.tolist(), strict=True))


def test_balanced_indices_gives_spare_slots_of_small_classes_to_the_others() -> None:
    labels = np.array([0] * 2 + [1] * 10 + [2] * 10)
    chosen = balanced_indices(labels, 12, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [2, 5, 5]
    assert chosen.tolist() == sorted(set(chosen.tolist()))
    # the odd slot goes to a class drawn with the seed, not always to the first
    extra = {int(np.argmax(np.bincount(labels[balanced_indices(labels, 13, seed=s)])[1:])) for s in range(20)}
    assert extra == {0, 1}


def test_first_selection_takes_the_head_of_the_fixed_order(jpeg_root: Path, crop56: Preprocessing) -> None:
    ev = load_evaluation_set(_spec(jpeg_root), n_samples=15, selection="first", preprocessing=crop56)
    assert ev.y.tolist() == [0] * 12 + [1] * 3
    assert ev.sample_ids[-1] == "c01/img_002.jpg"
    assert ev.selection == {"method": "first", "n": 15, "n_available": 120, "ids_sha256": ev.selection["ids_sha256"]}


def test_sample_list_by_indices_and_by_names(jpeg_root: Path, crop56: Preprocessing, tmp_path: Path) -> None:
    spec = _spec(jpeg_root)
    full = load_evaluation_set(spec, preprocessing=crop56)
    text = tmp_path / "ids.txt"
    text.write_text("# RobustBench-style fixed subset\n\n37\n5  # a comment\n119\n")
    by_index = load_evaluation_set(spec, samples=text, preprocessing=crop56)
    assert by_index.sample_ids == tuple(full.sample_ids[i] for i in (37, 5, 119))  # the list's own order
    assert torch.equal(by_index.x, full.x[[37, 5, 119]]) and torch.equal(by_index.y, full.y[[37, 5, 119]])
    assert by_index.selection["method"] == "list" and by_index.selection["n"] == 3
    assert "seed" not in by_index.selection
    names = tmp_path / "ids.json"
    names.write_text(json.dumps(["c03/img_001.jpg", "val/c04/img_002.jpg", 17]))
    by_name = load_evaluation_set(spec, samples=names, preprocessing=crop56)
    assert by_name.sample_ids == ("c03/img_001.jpg", "c04/img_002.jpg", full.sample_ids[17])
    # n_samples takes the head of the list; more than listed is capped with a warning
    head = load_evaluation_set(spec, samples=text, n_samples=2, preprocessing=crop56)
    assert head.sample_ids == by_index.sample_ids[:2]
    capped = load_evaluation_set(spec, samples=text, n_samples=9, preprocessing=crop56)
    assert capped.warnings == (f"--n-samples 9 asked for more than the 3 samples listed in {text}; evaluating all 3",)


def test_bare_file_names_resolve_when_unambiguous(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _write_png_classes(root, ("a", "b"), 2)
    Image.new("L", (8, 8), 200).save(root / "b" / "only_here.png")
    listing = tmp_path / "ids.txt"
    listing.write_text("only_here.png\n")
    assert load_evaluation_set(_spec(root), samples=listing).sample_ids == ("b/only_here.png",)
    listing.write_text("only_here.png\n1.png\n")
    with pytest.raises(DatasetError, match=r"line 2: file name '1.png' is ambiguous \('a/1.png', 'b/1.png'"):
        load_evaluation_set(_spec(root), samples=listing)


def test_bad_list_entries_name_the_file_and_line(jpeg_root: Path, tmp_path: Path) -> None:
    spec = _spec(jpeg_root)
    listing = tmp_path / "subset.txt"
    listing.write_text("c00/img_000.jpg\n# comment\nc00/no_such.jpg\n")
    with pytest.raises(DatasetError, match=r"subset\.txt', line 3: 'c00/no_such\.jpg' is not a sample of"):
        load_evaluation_set(spec, samples=listing)
    listing.write_text("3\n120\n")
    with pytest.raises(DatasetError, match=r"line 2: index 120 is out of range.*0\.\.119"):
        load_evaluation_set(spec, samples=listing)
    listing.write_text("3\nc00/img_003.jpg\n")
    with pytest.raises(DatasetError, match=r"line 2: sample 'c00/img_003\.jpg' is listed twice \(first on line 1\)"):
        load_evaluation_set(spec, samples=listing)
    as_json = tmp_path / "subset.json"
    as_json.write_text('[\n  0,\n  1,\n  "missing.jpg",\n  2\n]\n')
    with pytest.raises(DatasetError, match=r"subset\.json', line 4: 'missing\.jpg'"):
        load_evaluation_set(spec, samples=as_json)
    as_json.write_text('[0, 1.5]')
    with pytest.raises(DatasetError, match=r"line 1: 1\.5 is neither a sample index nor a file name"):
        load_evaluation_set(spec, samples=as_json)
    as_json.write_text('{"ids": [0]}')
    with pytest.raises(DatasetError, match="JSON dict"):
        load_evaluation_set(spec, samples=as_json)
    listing.write_text("# nothing\n")
    with pytest.raises(DatasetError, match="lists no samples"):
        load_evaluation_set(spec, samples=listing)
    with pytest.raises(MissingPathError, match="absent.txt"):
        load_evaluation_set(spec, samples=tmp_path / "absent.txt")


def test_more_samples_than_available_warns_and_takes_all(tmp_path: Path) -> None:
    _write_png_classes(tmp_path, ("a", "b"), 3)
    ev = load_evaluation_set(_spec(tmp_path), n_samples=100000)
    assert len(ev.x) == 6 and ev.selection["n"] == 6
    assert ev.warnings == (f"--n-samples 100000 asked for more than the 6 samples of {_spec(tmp_path)}; "
                           "evaluating all 6",)


def test_mixed_sizes_without_preprocessing_is_a_clear_error(jpeg_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"differ in size: '.*img_000\.jpg' is 64x64 but '.*img_001\.jpg' is "
                                           r"71x69.*--input-size.*\?size=N"):
        load_evaluation_set(_spec(jpeg_root))
    resized = load_evaluation_set(f"{_spec(jpeg_root)}?size=20", n_samples=10)
    assert resized.input_shape == (3, 20, 20) and resized.preprocessing is None
    with pytest.raises(DatasetError, match=r"only one of '\?size=N' and --input-size"):
        load_evaluation_set(f"{_spec(jpeg_root)}?size=20", preprocessing=Preprocessing(crop=8, resize=8))


def test_preprocessing_matches_a_hand_done_resize_and_centre_crop(jpeg_root: Path, crop56: Preprocessing) -> None:
    assert (crop56.resize, crop56.crop) == (64, 56)
    ev = load_evaluation_set(_spec(jpeg_root), n_samples=20, preprocessing=crop56)
    checked = 0
    for i, sample_id in enumerate(ev.sample_ids):
        with Image.open(jpeg_root / sample_id) as img:
            img = img.convert("RGB")
        w, h = img.size
        if w == h:
            continue
        size = (64, int(64 * h / w)) if w < h else (int(64 * w / h), 64)
        img = img.resize(size, Image.Resampling.BILINEAR)
        left, top = int(round((size[0] - 56) / 2)), int(round((size[1] - 56) / 2))
        expected = np.asarray(img.crop((left, top, left + 56, top + 56)), dtype=np.float32) / 255
        assert torch.equal(ev.x[i], torch.from_numpy(expected).permute(2, 0, 1)), sample_id
        checked += 1
    assert checked >= 10


def test_only_the_selected_files_are_opened(jpeg_root: Path, crop56: Preprocessing,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(Path(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    ev = load_evaluation_set(_spec(jpeg_root), n_samples=10, preprocessing=crop56, seed=2)
    selected = {jpeg_root / sample_id for sample_id in ev.sample_ids}
    assert set(opened) == selected  # no other file is opened
    # each selected file is decoded once; the channel check reads headers until the first colour image
    assert all(1 <= count <= 2 for count in Counter(opened).values())


def test_grayscale_and_rgb_mix_gives_three_channels(tmp_path: Path) -> None:
    _write_png_classes(tmp_path, ("a",), 1)
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "b" / "red.png")
    ev = load_evaluation_set(_spec(tmp_path))
    assert ev.input_shape == (3, 8, 8)
    torch.testing.assert_close(ev.x[0], torch.zeros(3, 8, 8))  # grey value 0 on all channels
    assert ev.x[1, 0].eq(1).all() and ev.x[1, 1:].eq(0).all()


# --------------------------------------------------------------------------- CIFAR


def _write_cifar(folder: Path, files: dict[str, dict]) -> None:
    folder.mkdir(parents=True)
    for name, obj in files.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, labels_key: bytes) -> dict:
    return {
        b"batch_label": b"testing batch 1 of 1",
        labels_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def test_cifar10_evaluates_from_the_test_batch_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    test = _cifar_batch(rng, 40, 10, b"labels")
    names = [f"class{k}".encode() for k in range(10)]
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, {"test_batch": test, "batches.meta": {b"label_names": names, b"num_vis": 3072}})
    ev = load_evaluation_set(f"cifar10:{tmp_path}", n_samples=20, seed=1)
    assert ev.x.shape == (20, 3, 32, 32) and ev.class_names == tuple(f"class{k}" for k in range(10))
    index = [int(s.removeprefix("test:")) for s in ev.sample_ids]
    assert all(s.startswith("test:") for s in ev.sample_ids) and index == sorted(index)
    expected = torch.from_numpy(test[b"data"][index].reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(ev.x, expected) and ev.y.tolist() == [test[b"labels"][i] for i in index]
    assert ev.source == {"spec": f"cifar10:{tmp_path}", "split": "test", "n_available": 40}
    # training still needs every batch, and says which one is missing
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset(f"cifar10:{folder}")
    # preprocessing an in-memory set: resize + centre crop on tensors
    big = load_evaluation_set(f"cifar10:{folder}", preprocessing=Preprocessing.from_crop_pct(48, 0.875))
    assert big.x.shape == (40, 3, 48, 48) and big.preprocessing == {"resize": 54, "crop": 48,
                                                                    "interpolation": "bilinear"}
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetError, match=r"batches\.meta' is missing"):
        load_evaluation_set(f"cifar10:{folder}")


def test_cifar100_test_file_for_evaluation_and_all_files_for_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    test = _cifar_batch(rng, 30, 100, b"fine_labels")
    test[b"coarse_labels"] = [v // 5 for v in test[b"fine_labels"]]
    meta = {b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
            b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)]}
    folder = tmp_path / "cifar-100-python"
    _write_cifar(folder, {"test": test, "meta": meta})
    ev = load_evaluation_set(f"cifar100:{tmp_path}", selection="first", n_samples=5)
    assert ev.num_classes == 100 and ev.class_names[7] == "fine7"
    assert ev.y.tolist() == test[b"fine_labels"][:5] and ev.sample_ids == tuple(f"test:{i}" for i in range(5))
    with pytest.raises(DatasetError, match=r"cifar-100-python/train' is missing"):
        load_dataset(f"cifar100:{folder}")
    train = _cifar_batch(rng, 50, 100, b"fine_labels")
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    data = load_dataset(f"cifar100:{folder}")
    assert len(data.x_train) == 50 and len(data.x_test) == 30 and data.num_classes == 100
    assert data.y_train.tolist() == train[b"fine_labels"]


# --------------------------------------------------------------------------- array sets and arguments


def test_digits_through_the_same_function() -> None:
    ev = load_evaluation_set("digits", n_samples=50, seed=0)
    assert ev.x.shape == (50, 1, 8, 8) and ev.y.bincount(minlength=10).tolist() == [5] * 10
    index = [int(s.split(":")[1]) for s in ev.sample_ids]
    data = load_dataset("digits")
    assert torch.equal(ev.x, data.x_test[index]) and torch.equal(ev.y, data.y_test[index])
    assert ev.source == {"spec": "digits", "split": "test", "n_available": 359}
    assert load_evaluation_set("digits", n_samples=50, seed=0).sample_ids == ev.sample_ids
    other_split = load_evaluation_set("digits", n_samples=50, seed=0, split_seed=1)
    assert not torch.equal(other_split.x, ev.x)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"])
def test_apply_tensor_resizes_and_crops_into_the_unit_box(interpolation: str) -> None:
    pre = Preprocessing.from_crop_pct(48, 0.875, interpolation)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[:, :, ::2] = 1.0  # sharp stripes make bicubic and lanczos overshoot before the clamp
    out = pre.apply_tensor(x)
    assert out.shape == (4, 3, 48, 48) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # on a smooth image (no overshoot, which PIL clips between its two 8-bit passes) the tensor path agrees
    # with the PIL path to within about one grey level
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    smooth = torch.stack([(xx + yy) / 71, (xx * yy) / 1209, 0.5 + 0.4 * torch.sin(xx / 5)])
    pixels = (smooth * 255).round().to(torch.uint8)
    via_pil = np.asarray(pre.apply_pil(Image.fromarray(pixels.permute(1, 2, 0).numpy())), dtype=np.float32)
    via_tensor = pre.apply_tensor(pixels[None].float() / 255)[0]
    assert float((torch.from_numpy(via_pil / 255).permute(2, 0, 1) - via_tensor).abs().max()) <= 1.5 / 255


def test_preprocessing_follows_timms_crop_pct_and_validates() -> None:
    assert Preprocessing.from_crop_pct(224).describe() == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert Preprocessing.from_crop_pct(224, 0.9, "bicubic").resize == 248  # floor(248.9)
    assert Preprocessing.from_crop_pct(288, 1.0).resize == 288
    pre = Preprocessing(crop=4, resize=6)
    assert pre.apply_pil(Image.new("RGB", (12, 9))).size == (4, 4)
    for make, pattern in [
        (lambda: Preprocessing(crop=224, resize=200), "smaller than crop"),
        (lambda: Preprocessing(crop=0, resize=8), "crop must be a positive int"),
        (lambda: Preprocessing(crop=8, resize=8, interpolation="cubic"), "valid interpolations: bilinear"),
        (lambda: Preprocessing.from_crop_pct(224, 0.0), "crop_pct"),
        (lambda: Preprocessing.from_crop_pct(224, 1.2), "crop_pct"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            make()
    with pytest.raises(InputError, match="NCHW"):
        pre.apply_tensor(torch.zeros(3, 8, 8))


def test_bad_arguments_say_what_is_valid(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="valid selections: balanced, first, list"):
        load_evaluation_set("digits", selection="random")
    with pytest.raises(DatasetError, match="needs a sample list"):
        load_evaluation_set("digits", selection="list")
    with pytest.raises(DatasetError, match=r"n_samples \(--n-samples\) must be an int >= 1"):
        load_evaluation_set("digits", n_samples=0)
    with pytest.raises(DatasetError, match="seed must be an int"):
        load_evaluation_set("digits", seed="1")  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="cifar100"):
        load_evaluation_set("imagenet:/data")
    with pytest.raises(MissingPathError, match="nowhere"):
        load_evaluation_set(f"imagefolder:{tmp_path / 'nowhere'}")
    _write_png_classes(tmp_path / "train", ("a",), 1)
    with pytest.raises(DatasetError, match=r"no 'val/' or 'test/'.*\?split=train"):
        load_evaluation_set(_spec(tmp_path))


def test_the_models_channel_count_decides_how_a_folder_is_decoded(tmp_path) -> None:
    """A selection that happens to hold only grayscale files of an RGB folder still gives an RGB model 3
    channels (the model's channel count is passed in); without it, the old rule (all gray -> 1) holds."""
    from PIL import Image

    from advbench.datasets.evaluation_set import load_evaluation_set

    for c, mode in enumerate(("L", "RGB")):
        folder = tmp_path / f"c{c}"
        folder.mkdir()
        Image.new(mode, (8, 8), 100 if mode == "L" else (100, 20, 30)).save(folder / "a.png")
    spec = f"imagefolder:{tmp_path}"
    gray_only = load_evaluation_set(spec, samples=_write_list(tmp_path, ["c0/a.png"]))
    assert gray_only.x.shape[1] == 1
    forced = load_evaluation_set(spec, samples=_write_list(tmp_path, ["c0/a.png"]), channels=3)
    assert forced.x.shape[1] == 3 and bool((forced.x[:, 0] == forced.x[:, 1]).all())


def _write_list(folder, names):
    path = folder / "ids.txt"
    path.write_text("\n".join(names) + "\n")
    return path
