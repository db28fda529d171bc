"""Shared fixtures: offline environment, a device option, and small trained digits models."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for tests that can use one (e.g. cuda)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA device requested but not available")
    return dev


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory):
    """A small CNN trained on sklearn digits (about 97% test accuracy), saved and reloaded."""
    from advbench.checkpoints import save_checkpoint
    from advbench.models.loading import load_model
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="digits", epochs=8, seed=0), progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "digits_cnn.safetensors"
    save_checkpoint(model, path, meta)
    loaded = load_model(path)
    loaded.checkpoint_file = str(path)
    return loaded


@pytest.fixture(scope="session")
def digits_test():
    from advbench.datasets import load_dataset

    data = load_dataset("digits", seed=0)
    return data.x_test, data.y_test


@pytest.fixture(scope="session")
def digits_batch(digits_model, digits_test):
    """64 correctly classified test digits."""
    x, y = digits_test
    with torch.no_grad():
        correct = digits_model(x).argmax(1) == y
    return x[correct][:64], y[correct][:64]


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run the console script's entry point (with its error handling): ``run_cli(*args) -> (code, stdout, stderr)``."""
    import sys

    from advbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["advbench", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny tensors: fastest there, and no fight with other work on a small
    machine (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
