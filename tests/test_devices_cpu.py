"""Device names and device mismatches fail early with clear errors (runs on every machine; the GPU checks
themselves are in test_device.py)."""

from __future__ import annotations

import pytest
import torch

import advbench
from advbench.devices import check_device
from advbench.errors import ConfigError, InputError
from advbench.runner import RunSpec, device_entry


@pytest.mark.parametrize("name,fragment", [("gpu", "not a torch device"), ("mps", "cpu or cuda"),
                                           ("cuda:99", "numbered from 0|CUDA is not available")])
def test_bad_devices_are_refused_naming_the_option(name, fragment) -> None:
    if name == "cuda:99" and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    with pytest.raises(ConfigError, match=fragment) as info:
        check_device(name, param="--device")
    assert "--device" in str(info.value)
    with pytest.raises(ConfigError, match="--device"):
        RunSpec(model="m.safetensors", dataset="digits", attacks=["pgd"], eps=[0.1], device=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_so_and_how_to_fix_it(run_cli) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available.*--device cpu"):
        check_device("cuda")
    code, _, err = run_cli("detect-attack", "--dataset", "evd4uav:/nowhere", "--detector", "fcos-mnv3", "--attack",
                           "patch-whitebox", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


def test_cpu_runs_keep_their_stored_configuration_and_gpu_runs_get_their_own(digits_model) -> None:
    from advbench.runner import prepare

    assert device_entry("cpu") == {} and device_entry(torch.device("cpu")) == {}
    assert device_entry("cuda:1") == {"device": "cuda"}
    config = prepare(RunSpec(model=digits_model.checkpoint_file, dataset="digits", attacks=["pgd"], eps=[0.1],
                             n_samples=8))[3]
    assert "device" not in config, "a CPU run's configuration (and so its stored hash) must not change"


def test_labels_on_another_device_than_the_inputs_are_refused(digits_model, digits_batch) -> None:
    x, y = digits_batch
    with pytest.raises(InputError, match="labels are on meta but x is on cpu"):
        advbench.create_attack("pgd", eps=0.1, steps=1)(digits_model, x, y.to("meta"))


@pytest.mark.parametrize("command", [
    ["train", "--model", "small_cnn", "--dataset", "digits", "--out", "m.safetensors"],
    ["train-sod", "--dataset", "synthetic-sod:n=12,size=32", "--out", "s.safetensors"],
    ["train-multitask", "--dataset", "synthetic-multitask:n=12,size=16", "--out", "mt.safetensors"],
    ["defend", "train", "--victim", "v.safetensors", "--dataset", "digits", "--out", "d.safetensors"],
    ["train-detector", "--dataset", "evd4uav:/nowhere", "--out", "d.safetensors"],
    ["run", "--model", "small_cnn?random=true", "--dataset", "digits", "--attack", "pgd", "--eps", "0.1"],
    ["prune", "--checkpoint", "m.safetensors", "--dataset", "digits", "--out", "p.safetensors", "--target", "0.5"],
])
def test_every_command_with_a_device_option_refuses_a_bad_one_before_working(command, run_cli, tmp_path,
                                                                             monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*command, "--device", "gpu")
    assert code == 2 and "--device 'gpu' is not a torch device" in err
    assert not list(tmp_path.iterdir()), "nothing may be written before the device is checked"


def test_a_device_description_is_not_described_twice() -> None:
    from advbench.records import device_name

    assert device_name("cpu") == device_name(torch.device("cpu")) == "cpu"
    assert device_name("cuda:NVIDIA H100 80GB HBM3") == "cuda:NVIDIA H100 80GB HBM3"
    with pytest.raises(RuntimeError):
        device_name("gpu")
