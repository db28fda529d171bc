"""Regression tests for bugs found in review: each failed before its fix."""

from __future__ import annotations

import pytest
import torch

import advbench
from advbench.errors import InputError
from advbench.models import create_model


def test_wrapped_attacks_leave_batchnorm_statistics_alone() -> None:
    """torchattacks restored its wrapper's (train) mode on the victim: BN statistics changed mid-attack."""
    torch.manual_seed(0)
    model = create_model("resnet20", input_shape=(3, 8, 8), num_classes=4).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    for name in ("ta-pgd", "apgd-ce", "square"):
        kw = {"n_queries": 20} if name == "square" else {"steps": 3}
        out = advbench.create_attack(name, eps=0.1, early_stop=False, **kw)(model, x, y)
        with torch.no_grad():
            assert torch.equal(out.adv_pred, model(out.x_adv).argmax(1))
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed during the attack"


def test_with_eps_rescales_the_default_step_size() -> None:
    for name in ("pgd", "ta-pgd"):
        small = advbench.create_attack(name, eps="2/255", steps=10)
        moved = small.with_eps(8 / 255)
        assert moved._step == pytest.approx(advbench.create_attack(name, eps=8 / 255, steps=10)._step)
        assert advbench.create_attack(name, eps=0.0, steps=10).with_eps(0.1)._step == pytest.approx(0.025)
        assert small.hyperparameters()["step_size"] is None  # recorded as 'the default rule', not a number
    explicit = advbench.create_attack("pgd", eps=0.1, step_size=0.01).with_eps(0.2)
    assert explicit._step == 0.01


@pytest.mark.slow
@pytest.mark.parametrize("early_stop", [True, False])
def test_apgd_success_always_means_misclassified(digits_model, digits_test, early_stop) -> None:
    """A checkpoint reset used to overwrite the successful iterate with the best-loss point; without early
    stop, found adversarial points were replaced by the best-loss point at the end."""
    x, y = digits_test[0][:150], digits_test[1][:150]
    for seed in range(6):
        out = advbench.create_attack("apgd", eps=0.06, steps=30, early_stop=early_stop)(
            digits_model, x, y, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            pred = digits_model(out.x_adv).argmax(1)
        assert torch.equal(out.success, pred != y)
        assert torch.equal(out.adv_pred, pred)


def test_universal_evaluation_uses_the_attacks_default_k(digits_model, digits_test) -> None:
    from advbench.multidomain_eval import evaluate_multidomain

    x, y = digits_test[0][:23], digits_test[1][:23]
    res = evaluate_multidomain(digits_model, x, y, attack="minmax-universal", eps=[0.2], params={"steps": 2})
    assert res.n_used % 5 == 0 and len(res.per_eps[0]["weights"]) == 5


def test_dlr_on_too_few_classes_is_a_clear_error() -> None:
    model = create_model("mlp", input_shape=(1, 4, 4), num_classes=3)
    x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 3, (4,))
    with pytest.raises(InputError, match="DLR loss needs at least 4 classes"):
        advbench.create_attack("apgd", eps=0.1, loss="dlr", targeted=True, steps=2)(model, x, y)


def test_success_step_is_set_for_attacks_that_do_not_track_steps(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    out = advbench.create_attack("deepfool", eps=3.0, targeted=True, steps=20)(digits_model, x, y)
    assert bool(out.success.any())
    assert bool((out.success_step[out.success] >= 0).all())


@pytest.mark.slow
def test_targeted_fab_reaches_the_target(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    out = advbench.create_attack("fab", eps=0.3, steps=20, targeted=True)(digits_model, x, y)
    assert out.success.float().mean() > 0.5
    with torch.no_grad():
        assert torch.equal(out.success, digits_model(out.x_adv).argmax(1) == out.target)
