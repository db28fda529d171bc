"""The stealthy multi-task attack, its fixed-weight and all-tasks baselines, and `advbench run` on them (issue 8)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advbench import create_attack, list_attacks
from advbench.errors import ConfigError, UnknownNameError
from advbench.multitask.robustness import multitask_robustness


class _ToyNet(nn.Module):
    """seg logits from a 1x1 conv of the input; depth either input-dependent or a constant map."""

    def __init__(self, constant_depth: bool) -> None:
        super().__init__()
        self.tasks = ("seg", "depth")
        self.num_classes = 3
        with torch.random.fork_rng(devices=[]):  # the same weights whatever ran before
            torch.manual_seed(0)
            self.seg = nn.Conv2d(3, 3, 1)
            self.depth = nn.Conv2d(3, 1, 1)
        self.constant_depth = constant_depth

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        depth = torch.ones_like(x[:, :1]) * 2.0 if self.constant_depth else nn.functional.softplus(self.depth(x)) + 1
        return {"seg": self.seg(x), "depth": depth}


def _data(n: int = 6):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=gen)
    targets = {"seg": torch.randint(0, 3, (n, 8, 8), generator=gen), "depth": torch.rand(n, 1, 8, 8, generator=gen) + 1}
    return x, targets


def test_registry():
    names = {"stealthy-multitask", "fixed-weight-multitask", "all-tasks"}
    assert set(list_attacks(task="multi-task dense prediction")) == names


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_multipliers_stay_non_negative_and_the_budget_holds(norm, eps):
    model, (x, targets) = _ToyNet(constant_depth=False), _data()
    attack = create_attack("stealthy-multitask", norm=norm, eps=eps, steps=10, target_task="seg")
    result = attack(model, x, targets)
    assert result.tasks == ["seg", "depth"]
    trace = result.weight_trace
    assert torch.all(trace[:, :, 0] == 1) and torch.all(trace[:, :, 1:] >= 0)
    delta = (result.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-5).all()) and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert float(result.relative_change[:, 0].mean()) > 0, "the target's loss did not rise"


def test_a_constraint_that_is_never_violated_keeps_its_multiplier_at_zero():
    model, (x, targets) = _ToyNet(constant_depth=True), _data()
    result = create_attack("stealthy-multitask", eps=8 / 255, steps=8, target_task="seg")(model, x, targets)
    assert torch.all(result.weight_trace[:, :, 1] == 0)
    assert torch.all(result.relative_change[:, 1] == 0)


def test_violated_constraints_raise_their_multipliers():
    model, (x, targets) = _ToyNet(constant_depth=False), _data()
    attack = create_attack("stealthy-multitask", eps=16 / 255, steps=10, target_task="depth", dual_lr=1.0)
    result = attack(model, x, targets)
    assert float(result.weight_trace[-1, :, 1].max()) > 0  # seg degraded somewhere, so its multiplier rose


def test_same_inputs_same_result_and_fixed_weights():
    model, (x, targets) = _ToyNet(constant_depth=False), _data()
    a = create_attack("stealthy-multitask", eps=8 / 255, steps=5, target_task="seg")(model, x, targets)
    b = create_attack("stealthy-multitask", eps=8 / 255, steps=5, target_task="seg")(model, x, targets)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.weight_trace, b.weight_trace)
    fixed = create_attack("fixed-weight-multitask", eps=8 / 255, steps=5, target_task="seg",
                                    weights={"depth": 0.5})(model, x, targets)
    assert torch.all(fixed.weight_trace == torch.tensor([1.0, 0.5]))
    every = create_attack("all-tasks", eps=8 / 255, steps=5)(model, x, targets)
    assert torch.allclose(every.weights.sum(1), torch.ones(len(x))) and torch.all(every.weights >= 0)


def test_bad_task_names_and_tolerances():
    model, (x, targets) = _ToyNet(constant_depth=False), _data()
    with pytest.raises(UnknownNameError, match="seg, depth"):
        create_attack("stealthy-multitask", target_task="sky", steps=1)(model, x, targets)
    with pytest.raises(ConfigError, match="not among the model's heads"):
        create_attack("stealthy-multitask", target_task="normal", steps=1)(model, x, targets)
    with pytest.raises(ConfigError, match="needs --target-task"):
        create_attack("stealthy-multitask", steps=1)(model, x, targets)
    with pytest.raises(ConfigError, match="tolerance"):
        multitask_robustness(model, x, targets, create_attack("all-tasks", steps=1), tolerance=-0.1)
    with pytest.raises(ConfigError, match="weights"):
        create_attack("fixed-weight-multitask", weights=-1.0)


def test_robustness_summary_counts_stealth_per_image():
    model, (x, targets) = _ToyNet(constant_depth=True), _data()
    attack = create_attack("stealthy-multitask", eps=8 / 255, steps=5, target_task="seg")
    summary = multitask_robustness(model, x, targets, attack, margin=0.0, tolerance=0.0)
    m = summary["metrics"]
    # depth cannot change, so stealth success is exactly "seg did not get better"
    seg_worse = [row["seg_adv"] <= row["seg_clean"] for row in summary["samples"]]
    assert m["stealth_success_rate"] == pytest.approx(sum(seg_worse) / len(seg_worse))
    assert m["change"]["depth"]["degradation"] == 0 and set(m["weights"]) == {"seg", "depth"}


def test_run_cli_on_a_multitask_checkpoint(run_cli, tmp_path):
    ckpt = tmp_path / "mt.safetensors"
    code, _, err = run_cli("train-multitask", "--dataset", "synthetic-multitask:n=24,size=16", "--epochs", "1",
                           "--base", "4", "--levels", "2", "--out", str(ckpt), "--json")
    assert code == 0, err
    args = ["run", "--model", str(ckpt), "--dataset", "synthetic-multitask:n=24,size=16", "--attack",
            "stealthy-multitask", "--target-task", "seg", "--eps", "8/255", "--steps", "3", "--n-samples", "4",
            "--store", str(tmp_path / "r.db")]
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["target_task"] == "seg" and 0 <= payload["stealth_success_rate"] <= 1
    assert set(payload["change"]) == {"seg", "depth", "normal"} and payload["weights"]["seg"] == 1.0
    code, out, _ = run_cli(*args)
    assert code == 0 and "stealth success" in out
    code, _, err = run_cli(*args[:8], "sky", *args[9:])
    assert code == 2 and "seg, depth, normal" in err
    code, _, err = run_cli(*args, "--tolerance", "-1")
    assert code == 2 and "tolerance" in err
    code, _, err = run_cli(*args, "--device", "gpu")
    assert code == 2 and "--device 'gpu' is not a torch device" in err
