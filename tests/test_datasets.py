"""Tests for advbench.datasets: loaders, splits, the restricted CIFAR unpickler, imagefolder, augmentation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advbench.datasets import (
    DATASETS,
    ClassificationData,
    augment_batch,
    list_datasets,
    load_dataset,
    training_augmentation,
)
from advbench.datasets.safe_pickle import safe_load_pickle
from advbench.datasets.splits import stratified_split
from advbench.errors import DatasetError, InputError, MissingPathError, UnknownNameError

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _check_contract(data: ClassificationData, shape: tuple[int, int, int], n_train: int, n_test: int) -> None:
    assert data.input_shape == shape
    assert tuple(data.x_train.shape) == (n_train, *shape)
    assert tuple(data.x_test.shape) == (n_test, *shape)
    for x in (data.x_train, data.x_test):
        assert x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    for y, n in ((data.y_train, n_train), (data.y_test, n_test)):
        assert y.dtype == torch.int64 and y.shape == (n,)
        assert int(y.min()) >= 0 and int(y.max()) < data.num_classes
    assert len(data.class_names) == data.num_classes


def _rows(x: torch.Tensor) -> np.ndarray:
    """Sorted unique rows with counts, to compare image multisets independent of order."""
    rows, counts = np.unique(x.reshape(len(x), -1).numpy(), axis=0, return_counts=True)
    return np.concatenate([rows, counts[:, None]], axis=1)


# --------------------------------------------------------------------------- built-in data sets


def test_list_datasets_names_every_scheme() -> None:
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "mnist5k", "synthetic"]


def test_digits_contract_and_values() -> None:
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    _check_contract(data, (1, 8, 8), 1438, 359)
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert float(data.x_train.max()) == 1.0  # pixel 16 / 16
    # train and test together are exactly sklearn's images, scaled by 1/16, no image lost or duplicated
    raw = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]
    both = torch.cat([data.x_train, data.x_test])
    np.testing.assert_array_equal(_rows(both), _rows(raw))
    # stratified: every class appears in the test split in proportion (~36 each)
    assert data.y_test.bincount(minlength=10).min() >= 34


def test_mnist5k_contract_and_balance() -> None:
    data = load_dataset("mnist5k")
    _check_contract(data, (1, 28, 28), 4000, 1000)
    assert data.y_train.bincount(minlength=10).tolist() == [400] * 10
    assert data.y_test.bincount(minlength=10).tolist() == [100] * 10
    assert float(data.x_train.max()) == 1.0
    # real digits: mostly black background with a bright stroke
    assert 0.08 < float(data.x_train.mean()) < 0.2
    # the train set is shuffled, not sorted by class
    assert len(set(data.y_train[:50].tolist())) > 3


def test_mnist5k_pad_gives_lenets_32x32_input() -> None:
    plain, padded = load_dataset("mnist5k"), load_dataset("mnist5k:pad=2")
    _check_contract(padded, (1, 32, 32), 4000, 1000)
    assert padded.name == "mnist5k:pad=2"
    assert torch.equal(padded.x_test[:, :, 2:-2, 2:-2], plain.x_test)
    border = padded.x_train.clone()
    border[:, :, 2:-2, 2:-2] = 0
    assert float(border.abs().max()) == 0.0
    with pytest.raises(DatasetError, match="pad"):
        load_dataset("mnist5k:pad=-1")
    with pytest.raises(DatasetError, match="size"):
        load_dataset("mnist5k:size=32")


def test_synthetic_defaults_and_options() -> None:
    small = load_dataset("synthetic")
    _check_contract(small, (1, 8, 8), 480, 120)
    assert small.num_classes == 4
    custom = load_dataset("synthetic:n=500,classes=4,size=16,channels=3")
    _check_contract(custom, (3, 16, 16), 400, 100)
    assert custom.name == "synthetic:n=500,classes=4,size=16,channels=3"
    assert custom.y_test.bincount().tolist() == [25, 25, 25, 25]


def test_synthetic_is_learnable() -> None:
    data = load_dataset("synthetic:n=800,classes=5")
    xtr = data.x_train.reshape(len(data.x_train), -1)
    centroids = torch.stack([xtr[data.y_train == c].mean(0) for c in range(data.num_classes)])
    pred = torch.cdist(data.x_test.reshape(len(data.x_test), -1), centroids).argmin(1)
    accuracy = float((pred == data.y_test).float().mean())
    assert accuracy > 0.9, accuracy
    # but not constant images: noise is present
    assert float(data.x_train.std(dim=0).mean()) > 0.1


def test_load_dataset_caches_per_spec_and_seed() -> None:
    assert load_dataset("digits") is load_dataset("digits", seed=0)
    assert load_dataset("digits", seed=1) is not load_dataset("digits", seed=0)


@pytest.mark.parametrize("scheme", ["digits", "mnist5k", "synthetic"])
def test_split_is_deterministic_for_a_seed_and_differs_across_seeds(scheme: str) -> None:
    loader = DATASETS.get(scheme)  # bypass the cache to really re-run the split
    a, b, c = loader(None, seed=7), loader(None, seed=7), loader(None, seed=8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_stratified_split_exact_sizes_and_disjoint() -> None:
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    train, test = stratified_split(labels, 3, seed=0)
    assert len(test) == 3 and len(train) == 7
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(10))
    assert set(labels[train]) == {0, 1, 2}  # every class keeps a training example
    with pytest.raises(DatasetError, match="n_test"):
        stratified_split(labels, 10, seed=0)


def test_channel_stats_and_std_floor() -> None:
    data = load_dataset("synthetic:n=100,classes=2,size=4,channels=3")
    mean, std = data.channel_stats()
    x = data.x_train.double()
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist())
    assert std == pytest.approx(x.std(dim=(0, 2, 3), correction=0).tolist())
    flat = ClassificationData(
        name="flat",
        x_train=torch.full((4, 1, 2, 2), 0.5),
        y_train=torch.tensor([0, 1, 0, 1]),
        x_test=torch.full((2, 1, 2, 2), 0.5),
        y_test=torch.tensor([0, 1]),
        num_classes=2,
        class_names=("a", "b"),
    )
    assert flat.channel_stats() == ((0.5,), (1e-3,))


def test_classification_data_rejects_broken_contracts() -> None:
    good = {
        "name": "t",
        "x_train": torch.zeros(2, 1, 2, 2),
        "y_train": torch.tensor([0, 1]),
        "x_test": torch.zeros(1, 1, 2, 2),
        "y_test": torch.tensor([1]),
        "num_classes": 2,
        "class_names": ("a", "b"),
    }
    ClassificationData(**good)
    for field, value, message in [
        ("x_train", torch.zeros(2, 1, 2, 2, dtype=torch.float64), "float32"),
        ("x_train", torch.full((2, 1, 2, 2), 2.0), r"\[0, 1\]"),
        ("y_train", torch.tensor([0, 2]), "labels must lie"),
        ("y_test", torch.tensor([0, 1]), "1 images"),
        ("x_test", torch.zeros(1, 1, 3, 3), "image shape"),
        ("class_names", ("a",), "class_names"),
    ]:
        with pytest.raises(DatasetError, match=message):
            ClassificationData(**{**good, field: value})


# --------------------------------------------------------------------------- errors


def test_unknown_scheme_lists_known_names() -> None:
    with pytest.raises(UnknownNameError, match="digits") as info:
        load_dataset("nosuchset")
    assert "nosuchset" in str(info.value) and "mnist5k" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("synthetic:colour=3", "'colour'"),
        ("synthetic:n=abc", "'n'"),
        ("synthetic:channels=2", "'channels'"),
        ("synthetic:classes=1", "'classes'"),
        ("synthetic:n", "'n'"),
        ("digits:extra", "takes no argument"),
        ("cifar10", "needs a path"),
        ("", "non-empty"),
    ],
)
def test_bad_options_raise_dataset_error(spec: str, pattern: str) -> None:
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(spec)


def test_bad_seed_type() -> None:
    with pytest.raises(DatasetError, match="seed"):
        load_dataset("digits", seed="0")  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["cifar10", "imagefolder"])
def test_missing_path_names_the_path(tmp_path: Path, scheme: str) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(MissingPathError, match="does-not-exist"):
        load_dataset(f"{scheme}:{missing}")


# --------------------------------------------------------------------------- CIFAR-10


def _fake_batch(rng: np.random.Generator, n: int, tag: str) -> dict:
    return {
        b"batch_label": tag.encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write_fake_cifar(root: Path, protocol: int = 2) -> dict[str, dict]:
    """A miniature CIFAR-10 folder with the real file names and dict layout (4 images per batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _fake_batch(rng, 4, f"training batch {i} of 5") for i in range(1, 6)}
    batches["test_batch"] = _fake_batch(rng, 3, "testing batch 1 of 1")
    meta = {b"num_cases_per_batch": 4, b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    for name, obj in {**batches, "batches.meta": meta}.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_fake_cifar10_loads(tmp_path: Path, protocol: int) -> None:
    batches = _write_fake_cifar(tmp_path, protocol)
    data = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    _check_contract(data, (3, 32, 32), 20, 3)
    assert data.class_names == tuple(CIFAR_NAMES) and data.num_classes == 10
    first = batches["data_batch_1"]
    expected = torch.from_numpy(first[b"data"][1].reshape(3, 32, 32).astype(np.float32) / 255.0)
    torch.testing.assert_close(data.x_train[1], expected, rtol=0, atol=1e-7)
    last = torch.from_numpy(batches["test_batch"][b"data"][2].reshape(3, 32, 32).astype(np.float32) / 255.0)
    torch.testing.assert_close(data.x_test[2], last, rtol=0, atol=1e-7)
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert data.y_train.tolist() == labels
    assert data.y_test.tolist() == batches["test_batch"][b"labels"]
    # the parent folder that holds cifar-10-batches-py/ is accepted too
    parent = load_dataset(f"cifar10:{tmp_path}")
    assert torch.equal(parent.x_train, data.x_train)


def test_cifar10_missing_batch_file_is_named(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_corrupt_batch_is_named(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset(f"cifar10:{tmp_path}")


class _MkdirPayload:
    """Unpickling this would create a marker folder (harmless, but observable)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class _ExecPayload:
    """Unpickling this would run Python source that writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize(("payload", "global_name"), [(_MkdirPayload, "mkdir"), (_ExecPayload, "exec")])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path: Path, payload: type, global_name: str) -> None:
    batches = _write_fake_cifar(tmp_path)
    marker = tmp_path / "PAYLOAD_RAN"
    evil = {**batches["data_batch_2"], b"data": payload(marker)}
    target = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    target.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetError, match=f"data_batch_2.*{global_name}"):
        load_dataset(f"cifar10:{tmp_path}")
    assert not marker.exists()
    with pytest.raises(DatasetError, match=global_name):
        safe_load_pickle(target)
    assert not marker.exists()
    # control: the payload is live -- a plain pickle.load of the same file does run it (harmlessly)
    with open(target, "rb") as handle:
        pickle.load(handle, encoding="bytes")
    assert marker.exists()


def test_restricted_unpickler_still_reads_numpy_arrays(tmp_path: Path) -> None:
    path = tmp_path / "arrays.pkl"
    obj = {b"a": np.arange(6, dtype=np.int64).reshape(2, 3), b"s": np.float32(1.5), b"l": [1, b"x"]}
    path.write_bytes(pickle.dumps(obj, protocol=2))
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded[b"a"], obj[b"a"])
    assert loaded[b"s"] == np.float32(1.5) and loaded[b"l"] == [1, b"x"]


# --------------------------------------------------------------------------- imagefolder

COLOURS = {"blue": (0, 0, 255), "red": (255, 0, 0)}


def _write_rgb_tree(root: Path, per_class: int = 5, size: tuple[int, int] = (6, 6)) -> None:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, colour).save(root / name / f"{i}.png")


def test_imagefolder_rgb_split_and_values(tmp_path: Path) -> None:
    _write_rgb_tree(tmp_path)
    (tmp_path / "red" / "notes.txt").write_text("ignored: not an image suffix")
    # a single tree is never split silently: the hold-out fraction must be asked for
    with pytest.raises(DatasetError, match=r"no train/ and test/.*\?holdout=0\.2"):
        load_dataset(f"imagefolder:{tmp_path}")
    data = load_dataset(f"imagefolder:{tmp_path}?holdout=0.2")
    _check_contract(data, (3, 6, 6), 8, 2)
    assert data.class_names == ("blue", "red")
    assert sorted(data.y_test.tolist()) == [0, 1]  # stratified
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        channel = torch.where(y == 1, 0, 2)  # red images light channel 0, blue images channel 2
        lit = x[torch.arange(len(x)), channel]
        assert torch.all(lit == 1.0)
        assert float(x.sum()) == pytest.approx(len(x) * 36)


def test_imagefolder_train_test_folders_grayscale_and_resize(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("test", 2)):
        for label, value in (("dark", 10), ("light", 240)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                size = (5, 7) if i == 0 else (10, 14)  # first image sets the size; others are resized
                Image.new("L", size, value).save(folder / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}")
    _check_contract(data, (1, 7, 5), 6, 4)  # PIL size is (width, height)
    assert data.class_names == ("dark", "light")
    assert data.y_test.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(data.x_test[3], torch.full((1, 7, 5), 240 / 255))
    resized = load_dataset(f"imagefolder:{tmp_path}?size=4")
    assert resized.input_shape == (1, 4, 4)


def test_imagefolder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_dataset(f"imagefolder:{empty}")
    tree = tmp_path / "tree"
    _write_rgb_tree(tree)
    (tree / "red" / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(f"imagefolder:{tree}?holdout=0.2")
    with pytest.raises(DatasetError, match="'holdout'"):
        load_dataset(f"imagefolder:{tree}?holdout=1.5")
    with pytest.raises(DatasetError, match="'split'"):
        load_dataset(f"imagefolder:{tree}?split=val")
    with pytest.raises(DatasetError, match="'colour'"):
        load_dataset(f"imagefolder:{tree}?colour=1")
    with pytest.raises(DatasetError, match="'size'"):
        load_dataset(f"imagefolder:{tree}?size=0")
    (tree / "red" / "broken.png").unlink()
    (tree / "green").mkdir()
    with pytest.raises(DatasetError, match="green"):
        load_dataset(f"imagefolder:{tree}?holdout=0.2")


# --------------------------------------------------------------------------- augmentation


def test_augment_batch_grayscale_shape_range_and_determinism() -> None:
    data = load_dataset("digits")
    x = data.x_train[:32]
    before = x.clone()
    a = augment_batch(x, training_augmentation(data, seed=3))
    b = augment_batch(x, training_augmentation(data, seed=3))
    c = augment_batch(x, training_augmentation(data, seed=4))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)  # it really augments
    assert torch.equal(x, before)  # and leaves the input alone


def test_augment_batch_rgb_crop_flip() -> None:
    data = load_dataset("synthetic:n=100,classes=2,size=16,channels=3")
    pipeline = training_augmentation(data, seed=0)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip"]
    x = data.x_train[:16]
    out = augment_batch(x, pipeline)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)
    # a crop of the zero-padded image keeps pixel content; nothing is brighter than the input maximum
    assert float(out.max()) <= float(x.max())


def test_augment_batch_rejects_bad_input() -> None:
    data = load_dataset("digits")
    pipeline = training_augmentation(data, seed=0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        augment_batch(data.x_train[:2] * 2.0, pipeline)
    with pytest.raises(InputError, match="NCHW"):
        augment_batch(data.x_train[0], pipeline)


def test_files_by_stem_pairs_by_name_and_refuses_two_files_with_one_stem(tmp_path):
    from advbench.datasets.imagefolder import files_by_stem

    for name in ("a.png", "b.JPG", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    found = files_by_stem(tmp_path, {".png", ".jpg"}, "image/mask pairing")
    assert found == {"a": tmp_path / "a.png", "b": tmp_path / "b.JPG"}
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="same stem 'a', so the image/mask pairing is ambiguous"):
        files_by_stem(tmp_path, {".png", ".jpg"}, "image/mask pairing")


def test_scheme_loaders_check_the_seed_and_the_scheme():
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.datasets.sod import load_sod_dataset

    for load, spec in ((load_sod_dataset, "synthetic-sod:n=4"), (load_multitask_dataset, "synthetic-multitask:n=4")):
        with pytest.raises(DatasetError, match="seed must be an int, got str"):
            load(spec, seed="1")
        with pytest.raises(UnknownNameError):
            load("no-such-scheme:x", seed=0)
