"""Published behaviour against references: torchattacks PGD on the same model, and the C&W margin."""

from __future__ import annotations

import pytest
import torch
import torchattacks

import advbench
from advbench.evaluate import evaluate
from advbench.losses import cw_margin, cw_targeted_margin, get_loss


@pytest.mark.parametrize("eps,steps", [(0.1, 20), (0.15, 10)])
def test_native_pgd_matches_torchattacks_pgd(eps, steps, digits_model, digits_test) -> None:
    """Random start off: both attacks are deterministic sign-gradient ascent; robust accuracy within 1 point."""
    x, y = digits_test
    alpha = 2.5 * eps / steps
    native = advbench.create_attack("pgd", eps=eps, steps=steps, step_size=alpha, random_start=False,
                                    early_stop=False)
    res = evaluate(digits_model, x, y, attacks=[native], eps=[eps], sanity_checks=False)
    reference = torchattacks.PGD(digits_model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    x_ref = reference(x, y)
    with torch.no_grad():
        ref_acc = float((digits_model(x_ref).argmax(1) == y).float().mean())
    assert 0.05 < ref_acc < 0.9, "the reference point should be informative, not 0% or 100%"
    assert abs(res.per_eps[0].robust_accuracy - ref_acc) <= 0.01


def test_native_pgd_iterates_equal_torchattacks_without_early_stop(digits_model, digits_batch) -> None:
    x, y = digits_batch
    native = advbench.create_attack("pgd", eps=0.1, steps=5, step_size=0.02, random_start=False, early_stop=False)
    out = native(digits_model, x, y)
    ref = torchattacks.PGD(digits_model, eps=0.1, alpha=0.02, steps=5, random_start=False)(x, y)
    assert torch.allclose(out.x_adv, ref, atol=1e-6)


def test_cw_margin_hand_computed() -> None:
    logits = torch.tensor([[1.0, 4.0, 2.5, -1.0], [3.0, 0.0, 3.5, 1.0]])
    labels = torch.tensor([1, 0])
    # sample 0: Z_y = 4, best other = 2.5 -> 1.5 (+kappa); sample 1: Z_y = 3, best other = 3.5 -> -0.5 -> 0
    assert torch.allclose(cw_margin(logits, labels, kappa=0.0), torch.tensor([1.5, 0.0]))
    assert torch.allclose(cw_margin(logits, labels, kappa=50.0), torch.tensor([51.5, 49.5]))
    # targeted at class 2: sample 0 best other = 4 -> 4 - 2.5 = 1.5; sample 1: best other 3 -> 3 - 3.5 -> 0
    assert torch.allclose(cw_targeted_margin(logits, torch.tensor([2, 2]), 0.0), torch.tensor([1.5, 0.0]))
    # the loss an attack maximises is the negated margin
    assert torch.allclose(get_loss("cw", 0.0)(logits, labels, False), -torch.tensor([1.5, 0.0]))
    # the 'wrong logit' is the real max over the other classes, not 0 as in the released TF code
    neg = torch.tensor([[-5.0, -1.0, -3.0]])
    assert torch.allclose(cw_margin(neg, torch.tensor([1])), torch.tensor([2.0]))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_native_apgd_is_as_strong_as_torchattacks_apgd(loss, digits_model, digits_test) -> None:
    """Same budget and iterations: the native APGD's robust accuracy is within 2 points of torchattacks'
    (both use random starts, so they differ slightly), and not weaker than plain PGD."""
    x, y = digits_test
    eps, steps = 0.08, 20
    ours = evaluate(digits_model, x, y, attacks=["apgd"], eps=[eps],
                    attack_kwargs={"apgd": {"steps": steps, "loss": loss}}, sanity_checks=False)
    theirs = evaluate(digits_model, x, y, attacks=["apgd-ce" if loss == "ce" else "apgd-dlr"], eps=[eps],
                      attack_kwargs={"apgd-ce": {"steps": steps}, "apgd-dlr": {"steps": steps}}, sanity_checks=False)
    pgd = evaluate(digits_model, x, y, attacks=["pgd"], eps=[eps], attack_kwargs={"pgd": {"steps": steps}},
                   sanity_checks=False)
    ra, rb, rp = (r.per_eps[0].robust_accuracy for r in (ours, theirs, pgd))
    assert 0.05 < rb < 0.95
    assert abs(ra - rb) <= 0.02
    assert ra <= rp + 0.01
