"""Checkpoints load without executing pickled code, and bad files get clear errors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from advbench.checkpoints import normalize_state_dict, read_checkpoint, save_checkpoint
from advbench.errors import CheckpointError, MissingPathError, UnknownNameError, UnsafeCheckpointError
from advbench.models import create_model, list_models
from advbench.models.loading import load_model


def _meta(arch="mlp", shape=(1, 8, 8), classes=10):
    return {"arch": arch, "input_shape": list(shape), "num_classes": classes,
            "normalization": {"mean": [0.3], "std": [0.4]}}


def test_safetensors_round_trip_with_sidecar(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("lenet5", input_shape=(1, 28, 28), num_classes=10, mean=[0.1], std=[0.3])
    path = save_checkpoint(model, tmp_path / "m.safetensors", _meta("lenet5", (1, 28, 28)) | {
        "normalization": model.normalization()})
    assert json.loads((tmp_path / "m.json").read_text())["arch"] == "lenet5"
    loaded = load_model(path)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    (tmp_path / "m.json").unlink()  # the header metadata alone is enough
    assert torch.equal(load_model(path)(x), model(x))


def test_pt_state_dict_with_module_prefix_and_prune_pairs(tmp_path) -> None:
    model = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    w = state.pop("module.net.1.weight")
    mask = (torch.rand_like(w) > 0.5).float()
    state["module.net.1.weight_orig"] = w
    state["module.net.1.weight_mask"] = mask
    torch.save(state, tmp_path / "pruned.pt")
    (tmp_path / "pruned.json").write_text(json.dumps(_meta()))
    loaded = load_model(tmp_path / "pruned.pt")
    assert torch.equal(loaded.net[1].weight, w * mask)


def test_normalize_state_dict_folds_masks() -> None:
    pair = {"module.a.weight_orig": torch.ones(2), "module.a.weight_mask": torch.tensor([1.0, 0.0])}
    out = normalize_state_dict(pair)
    assert list(out) == ["a.weight"] and out["a.weight"].tolist() == [1.0, 0.0]


class _Payload:
    def __reduce__(self):
        import os

        return (os.makedirs, ("PAYLOAD_DIR_PLACEHOLDER",))


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path) -> None:
    marker = tmp_path / "payload-ran"
    payload = _Payload()
    data = pickle.dumps({"weight": payload}).replace(b"PAYLOAD_DIR_PLACEHOLDER", str(marker).encode())
    evil = tmp_path / "evil.pt"
    torch.save({"x": torch.ones(1)}, evil)  # start from a valid zip layout, then swap the pickle inside
    import zipfile

    with zipfile.ZipFile(evil) as zf:
        names = zf.namelist()
        members = {n: zf.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    members[pkl] = data
    with zipfile.ZipFile(evil, "w") as zf:
        for n, content in members.items():
            zf.writestr(n, content)
    with pytest.raises(UnsafeCheckpointError, match="needs to run code.*safetensors"):
        read_checkpoint(evil)
    assert not marker.exists(), "the pickled payload must never execute"
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(data)  # a bare (non-zip) pickle too
    with pytest.raises(CheckpointError):
        read_checkpoint(legacy)
    assert not marker.exists()


def test_corrupt_missing_and_mismatched_checkpoints(tmp_path) -> None:
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(bad)
    with pytest.raises(MissingPathError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    model = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    path = save_checkpoint(model, tmp_path / "mlp.safetensors", _meta())
    side = tmp_path / "mlp.json"
    side.write_text(json.dumps(_meta(arch="small_cnn")))
    with pytest.raises(CheckpointError, match="does not match architecture 'small_cnn'"):
        load_model(path)
    side.write_text(json.dumps(_meta(classes=5)))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(path)
    side.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(path)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(2)}, str(bare))
    with pytest.raises(CheckpointError, match="no sidecar metadata"):
        load_model(bare)
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        (tmp_path / "m.h5").write_text("x")
        load_model(tmp_path / "m.h5")


def test_model_names_and_timm_adapter() -> None:
    assert {"mlp", "small_cnn", "lenet5", "resnet20"} <= set(list_models())
    assert list_models("res*") == ["resnet18-cifar", "resnet20", "resnet50-cifar"]
    with pytest.raises(UnknownNameError, match="known classification models: lenet5"):
        create_model("nope", input_shape=(1, 8, 8), num_classes=10)
    import advbench.models.sod  # noqa: F401  (registers the SOD U-Net in the one model registry)

    with pytest.raises(UnknownNameError, match="'unet-sod' is a salient-object detection model, not a classification"):
        create_model("unet-sod", input_shape=(3, 8, 8), num_classes=2)  # one registry; the task keeps them apart
    model = load_model("timm:resnet18", input_shape=(3, 16, 16), num_classes=4)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    with pytest.raises(UnknownNameError, match="unknown timm model"):
        create_model("timm:not_a_real_net", input_shape=(3, 16, 16), num_classes=4)


def test_timm_local_weights(tmp_path) -> None:
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=3, in_chans=1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    model = create_model("timm:resnet18", input_shape=(1, 16, 16), num_classes=3,
                         weights=str(tmp_path / "r18.safetensors"))
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(model.eval()(x), net.eval()(x))


@pytest.mark.parametrize("task", ["sod", "multitask", "detection", "defense"])
def test_load_model_names_the_task_of_a_non_classifier_checkpoint(tmp_path, task):
    model = torch.nn.Conv2d(3, 1, 1)
    path = save_checkpoint(model, tmp_path / f"{task}.safetensors", {"task": task, "arch": "some-arch"})
    with pytest.raises(CheckpointError, match=f"'{task}' checkpoint .* not an image classifier; load it with"):
        load_model(path)
