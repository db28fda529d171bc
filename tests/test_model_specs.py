"""Your own model, in the formats researchers bring: each is saved to disk with random weights and loaded back
through the model spec the CLI takes, and its outputs are compared with the original module's."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from advbench.errors import CheckpointError, ConfigError, UnknownNameError
from advbench.models.resolve import ClassSubsetModel, ModelOptions, resolve_model
from advbench.models.specs import parse_model_spec

USER_MODULE = '''
import torch.nn as nn

def build(width=8, classes=10):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, classes))
'''


def _close(model: nn.Module, reference: nn.Module, shape, *, mean=None, std=None, atol=1e-5) -> None:
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1))
    xn = x if mean is None else (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference.eval()(xn), atol=atol)


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "mynet.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    try:
        import mynet  # noqa: F401  (the same file, imported the ordinary way, as the reference)
    finally:
        sys.path.remove(str(folder))
    torch.manual_seed(0)
    net = sys.modules["mynet"].build(width=8).eval()
    torch.save(net.state_dict(), folder / "mynet.pt")
    return folder, net


def test_spec_parser_splits_scheme_name_and_options() -> None:
    spec = parse_model_spec("timm:resnet18?weights=a.pth.tar&ema=true&num_classes=10")
    assert (spec.scheme, spec.name, spec.options) == ("timm", "resnet18", {"weights": "a.pth.tar", "ema": True,
                                                                          "num_classes": 10})
    assert parse_model_spec("runs/x.safetensors").scheme == ""
    with pytest.raises(ConfigError, match="twice"):
        parse_model_spec("timm:resnet18?weights=a&weights=b")


@pytest.mark.parametrize("layout", ["pth.tar", "pth.tar-ema", "pth", "safetensors", "model-key"])
def test_timm_checkpoint_files_round_trip(tmp_path, layout) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    ema = copy.deepcopy(net)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.01)
    state = net.state_dict()
    if layout.startswith("pth.tar"):  # what timm's train.py writes, argparse.Namespace included
        path = tmp_path / "checkpoint.pth.tar"
        torch.save({"epoch": 3, "arch": "test_resnet", "state_dict": state, "state_dict_ema": ema.state_dict(),
                    "args": argparse.Namespace(lr=0.1, model="test_resnet"), "metric": 0.5}, path)
    elif layout == "pth":
        path = tmp_path / "weights.pth"
        torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel prefixes
    elif layout == "model-key":
        path = tmp_path / "ref.pth"
        torch.save({"model": state, "epoch": 1}, path)  # torchvision reference scripts
    else:
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    ema_flag = "&ema=true" if layout == "pth.tar-ema" else ""
    resolved = resolve_model(f"timm:test_resnet?weights={path}{ema_flag}")
    cfg = net.pretrained_cfg
    assert resolved.num_classes == 7, "the class count comes from the classifier rows of the weights"
    assert resolved.input_shape == tuple(cfg["input_size"])
    crop = cfg["input_size"][1]
    assert resolved.preprocessing == {"resize": int(crop / cfg["crop_pct"]), "crop": crop,
                                      "interpolation": cfg["interpolation"]}
    assert resolved.identity["weights"]["ema"] is bool(ema_flag)
    _close(resolved.model, ema if ema_flag else net, resolved.input_shape, mean=cfg["mean"], std=cfg["std"])


def test_timm_unknown_name_and_wrong_class_count_are_clear(tmp_path) -> None:
    import timm

    with pytest.raises(UnknownNameError, match="unknown timm model 'resnet_nope'"):
        resolve_model("timm:resnet_nope")
    net = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    path = tmp_path / "w.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(CheckpointError, match="of another shape.*--num-classes"):
        resolve_model(f"timm:test_resnet?weights={path}", ModelOptions(num_classes=10))


def test_torchvision_model_with_its_weight_transforms(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=5).eval()
    path = tmp_path / "tv.pth"
    torch.save(net.state_dict(), path)
    resolved = resolve_model(f"torchvision:mobilenet_v3_small?weights={path}")
    assert resolved.num_classes == 5 and resolved.input_shape == (3, 224, 224)
    assert resolved.preprocessing == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    _close(resolved.model, net, (3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    flags = resolve_model(f"torchvision:mobilenet_v3_small?weights={path}",
                          ModelOptions(input_size=64, crop_pct=0.875, interpolation="bicubic"))
    assert flags.input_shape == (3, 64, 64)
    assert flags.preprocessing == {"resize": 73, "crop": 64, "interpolation": "bicubic"}


def test_robustbench_zoo_name_from_a_local_model_dir(tmp_path) -> None:
    """RobustBench's own layout <model_dir>/<dataset>/<threat>/<name>.pt, its key conventions ('module.' and
    a 'state_dict' key), and its [0,1]-input convention (no normalization added)."""
    from advbench.models.resolve import import_robustbench

    zoo, dataset_enum, threat_enum = import_robustbench()
    torch.manual_seed(0)
    net = zoo.model_dicts[dataset_enum("cifar10")][threat_enum("Linf")]["Wong2020Fast"]["model"]().eval()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, folder / "Wong2020Fast.pt")
    resolved = resolve_model(f"robustbench:Wong2020Fast?dataset=cifar10&threat=Linf&model_dir={tmp_path / 'models'}")
    assert resolved.input_shape == (3, 32, 32) and resolved.num_classes == 10
    assert resolved.identity["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    _close(resolved.model, net, (3, 32, 32))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model(f"robustbench:Standard?model_dir={tmp_path / 'models'}")
    with pytest.raises(UnknownNameError, match="not in RobustBench's cifar10/Linf zoo"):
        resolve_model("robustbench:NoSuchModel2099")


@pytest.mark.parametrize("arch", ["preact-resnet18", "resnet18-cifar"])
def test_bare_robustbench_style_state_dicts(tmp_path, arch) -> None:
    from advbench.models import create_model

    torch.manual_seed(0)
    net = create_model(arch, input_shape=(3, 32, 32), num_classes=10).net.eval()
    path = tmp_path / f"{arch}.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    resolved = resolve_model(f"{arch}?weights={path}", ModelOptions(num_classes=10, input_size=32))
    assert resolved.identity["normalization"]["std"] == [1.0] * 3  # RobustBench: normalization inside the model
    _close(resolved.model, net, (3, 32, 32))


def test_user_module_runs_with_its_weights_and_options(user_module) -> None:
    folder, net = user_module
    spec = f"py:{folder / 'mynet.py'}:build?weights={folder / 'mynet.pt'}&width=8"
    resolved = resolve_model(spec, ModelOptions(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert resolved.num_classes == 10, "the class count is read off one forward pass"
    _close(resolved.model, net, (3, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ConfigError, match="has no callable 'nope'"):
        resolve_model(f"py:{folder / 'mynet.py'}:nope", ModelOptions(input_size=16))


def test_a_weights_file_without_sidecar_says_how_to_name_its_architecture(tmp_path) -> None:
    path = tmp_path / "bare.pth"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="timm:NAME\\?weights="):
        resolve_model(str(path))


def test_int8_dynamic_and_static_load_and_declare_their_gradients(user_module, tmp_path) -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    folder, net = user_module
    base = f"py:{folder / 'mynet.py'}:build"
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
    torch.save(dynamic.state_dict(), tmp_path / "dq.pt")
    prepared = prepare_fx(copy.deepcopy(net), get_default_qconfig_mapping("x86"), (torch.rand(1, 3, 16, 16),))
    for _ in range(3):
        prepared(torch.rand(8, 3, 16, 16))
    static = convert_fx(prepared)
    torch.save(static.state_dict(), tmp_path / "sq.pt")
    opts = ModelOptions(input_size=16)
    for path, reference, mode in ((tmp_path / "dq.pt", dynamic, "dynamic"), (tmp_path / "sq.pt", static, "static")):
        resolved = resolve_model(f"{base}?weights={path}&quantized={mode}", opts)
        assert not resolved.differentiable and resolved.identity["quantization"]["mode"] == mode
        with torch.no_grad():
            assert torch.equal(resolved.model(x), reference(x)), "the int8 model's own outputs, bit for bit"
    bpda = resolve_model(f"{base}?weights={tmp_path / 'dq.pt'}&quantized=dynamic&gradients=bpda", opts)
    assert bpda.differentiable and "bpda" in bpda.identity["gradients"]
    xg = x.clone().requires_grad_(True)
    out = bpda.model(xg)
    assert torch.allclose(out, dynamic(x), atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), xg)
    assert grad.abs().sum() > 0, "BPDA passes the dequantized twin's gradient"
    parent = resolve_model(f"{base}?weights={tmp_path / 'sq.pt'}&quantized=static&surrogate={base}?weights="
                           f"{folder / 'mynet.pt'}", opts)
    assert parent.differentiable and parent.identity["gradients"]["surrogate"]["weights"]["sha256"]
    with pytest.raises(ConfigError, match="surrogate=PATH"):
        resolve_model(f"{base}?weights={tmp_path / 'sq.pt'}&quantized=static&gradients=bpda", opts)


def test_torchscript_int8_loads_and_is_flagged_non_differentiable(user_module, tmp_path) -> None:
    folder, net = user_module
    dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
    scripted = torch.jit.script(dynamic)
    path = tmp_path / "int8.ts.pt"
    scripted.save(str(path))
    with pytest.raises(CheckpointError, match="torchscript:"):
        resolve_model(f"mlp?weights={path}", ModelOptions(input_size=16, num_classes=10))
    resolved = resolve_model(f"torchscript:{path}", ModelOptions(input_size=16))
    assert resolved.num_classes == 10 and resolved.identity["weights"]["sha256"]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(resolved.model(x), dynamic(x))


def test_fp16_weights_cast_is_recorded_and_warned_or_kept(tmp_path) -> None:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=4).eval()
    path = tmp_path / "half.pth"
    torch.save(net.half().state_dict(), path)
    cast = resolve_model(f"timm:test_resnet?weights={path}")
    assert cast.identity["weights_dtype"] == "float16" and cast.identity["eval_dtype"] == "float32"
    assert any("float16" in w and "--dtype" in w for w in cast.warnings)
    own = resolve_model(f"timm:test_resnet?weights={path}", ModelOptions(dtype="bfloat16"))
    assert own.identity["eval_dtype"] == "bfloat16" and not own.warnings
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        assert own.model(x).dtype == torch.float32
        assert not torch.equal(own.model(x), cast.model(x)), "bf16 evaluation is not the float32 cast"


def test_class_subset_by_synset_names(tmp_path) -> None:
    import timm

    from advbench.models.resolve import imagenet_synsets
    from advbench.runner import map_classes

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False).eval()  # 1,000 ImageNet outputs
    path = tmp_path / "in1k.pth"
    torch.save(net.state_dict(), path)
    resolved = resolve_model(f"timm:test_resnet?weights={path}")
    synsets = imagenet_synsets()
    names = (synsets[7], synsets[3], synsets[900])
    model, entry = map_classes(resolved, tuple(sorted(names)), None, "m", "folder")
    assert isinstance(model, ClassSubsetModel) and entry["indices"] == sorted([7, 3, 900], key=lambda i: synsets[i])
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(model(x), resolved.model(x)[:, entry["indices"]])
    mapping = tmp_path / "map.txt"
    mapping.write_text("cat 281\ndog 207  # golden retriever\n")
    model, entry = map_classes(resolved, ("cat", "dog"), str(mapping), "m", "folder")
    assert entry["indices"] == [281, 207]
    mapping.write_text("cat 281\ndog two\n")
    with pytest.raises(ConfigError, match="line 2"):
        map_classes(resolved, ("cat", "dog"), str(mapping), "m", "folder")
    with pytest.raises(Exception, match="--class-map"):
        map_classes(resolved, ("cat", "dog"), None, "m", "folder")


def test_evaluate_is_a_function_on_every_call() -> None:
    """It was replaced by its own submodule after the first call ("'module' object is not callable")."""
    code = (
        "import torch, advbench\n"
        "from advbench.models import create_model\n"
        "m = create_model('mlp', input_shape=(1, 4, 4), num_classes=3)\n"
        "x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 3, (6,))\n"
        "a = advbench.evaluate(m, x, y, attacks=['fgsm'], eps=0.1).clean_accuracy\n"
        "import advbench.runner\n"
        "b = advbench.evaluate(m, x, y, attacks=['fgsm'], eps=0.1).clean_accuracy\n"
        "print(json.dumps([a, b, callable(advbench.evaluate)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    a, b, is_callable = json.loads(out.stdout.strip().splitlines()[-1])
    assert a == b and is_callable


def test_review_fixes_class_counts_seeds_and_identity(user_module, tmp_path) -> None:
    """Numbers that used to come out wrong without an error: an int8 head's class count, a factory that never
    saw --num-classes, unseeded random weights, an unhashed py: source, a torchvision EMA counter."""
    import torchvision

    folder, net = user_module
    base = f"py:{folder / 'mynet.py'}:build"
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
    torch.save(int8.state_dict(), tmp_path / "dq.pt")
    resolved = resolve_model(f"{base}?weights={tmp_path / 'dq.pt'}&quantized=dynamic", ModelOptions(input_size=16))
    assert resolved.num_classes == 10
    (tmp_path / "headed.py").write_text("import torch.nn as nn\n"
                                        "def build(num_classes=1000):\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))\n")
    headed = resolve_model(f"py:{tmp_path / 'headed.py'}:build?random=true", ModelOptions(input_size=8, num_classes=7))
    assert headed.num_classes == 7, "--num-classes reaches a factory that takes num_classes"
    again = resolve_model(f"py:{tmp_path / 'headed.py'}:build?random=true", ModelOptions(input_size=8, num_classes=7))
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(headed.model(x), again.model(x)), "random=true is seeded: one config, one result"
    assert len(headed.identity["source_sha256"]) == 64
    (tmp_path / "headed.py").write_text((tmp_path / "headed.py").read_text() + "# edited\n")
    edited = resolve_model(f"py:{tmp_path / 'headed.py'}:build?random=true", ModelOptions(input_size=8, num_classes=7))
    assert edited.identity["source_sha256"] != headed.identity["source_sha256"]
    with pytest.raises(ConfigError, match="outputs 1000 logits but 7"):
        (tmp_path / "fixed.py").write_text("import torch.nn as nn\n"
                                           "def build():\n"
                                           "    return nn.Sequential(nn.Flatten(), nn.Linear(192, 1000))\n")
        resolve_model(f"py:{tmp_path / 'fixed.py'}:build?random=true", ModelOptions(input_size=8, num_classes=7))
    tv = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=4)
    averaged = torch.optim.swa_utils.AveragedModel(tv)
    torch.save({"model": tv.state_dict(), "model_ema": averaged.state_dict()}, tmp_path / "ref.pth")
    ema = resolve_model(f"torchvision:mobilenet_v3_small?weights={tmp_path / 'ref.pth'}&ema=true")
    assert ema.num_classes == 4


def test_review_fixes_class_names_preprocessing_and_data_shape(tmp_path) -> None:
    import timm

    from advbench.runner import load_victim, map_classes

    torch.manual_seed(0)
    path = tmp_path / "in1k.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    resolved = resolve_model(f"timm:test_resnet?weights={path}")
    numbered = tuple(str(i) for i in range(1000))
    with pytest.raises(Exception, match="cannot be matched to the outputs by name.*--class-map"):
        map_classes(resolved, numbered, None, "m", "folder")
    with pytest.raises(ConfigError, match="Crop288"):
        _refused_robustbench_preprocessing()
    torch.manual_seed(0)
    from advbench.models import create_model

    cnn = create_model("small_cnn", input_shape=(1, 8, 8), num_classes=10).net
    torch.save(cnn.state_dict(), tmp_path / "cnn.pt")
    victim = load_victim(f"small_cnn?weights={tmp_path / 'cnn.pt'}", "digits", n_samples=10,
                         options=ModelOptions(input_size=8, num_classes=10))
    assert tuple(victim.x.shape[1:]) == (1, 8, 8), "the channel count comes from the data, not a 3-channel guess"


def _refused_robustbench_preprocessing():
    from advbench.models.resolve import RB_UNSUPPORTED_PREPROCESSING, import_robustbench

    zoo, dataset_enum, threat_enum = import_robustbench()
    table = zoo.model_dicts[dataset_enum("imagenet")][threat_enum("Linf")]
    name = next(k for k, v in table.items() if v.get("preprocessing") == "Crop288")
    assert "Crop288" in RB_UNSUPPORTED_PREPROCESSING
    resolve_model(f"robustbench:{name}?dataset=imagenet&weights=/nowhere.pt")
