"""Cascade evaluation: cascade semantics, the eps curve, metrics and sanity warnings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advbench
from advbench.errors import ConfigError
from advbench.evaluate import evaluate
from advbench.sanity import BlackBoxStrongerWarning, ZeroGradientWarning


def test_cascade_attacks_only_robust_samples(digits_model, digits_test) -> None:
    x, y = digits_test[0][:120], digits_test[1][:120]
    res = evaluate(digits_model, x, y, attacks=["fgsm", "pgd"], eps=[0.1], attack_kwargs={"pgd": {"steps": 10}})
    r = res.per_eps[0]
    n_correct = round(res.clean_accuracy * 120)
    assert r.per_attack["fgsm"]["attacked"] == n_correct
    assert r.per_attack["pgd"]["attacked"] == n_correct - r.per_attack["fgsm"]["broken"]
    broken = sum(v["broken"] for v in r.per_attack.values())
    assert r.robust_accuracy == pytest.approx((n_correct - broken) / 120)
    assert r.attack_success_rate == pytest.approx(broken / n_correct)
    # per-sample rows agree with the aggregate
    rows = [s for s in res.samples if s["eps"] == 0.1]
    assert sum(s["robust"] for s in rows) == round(r.robust_accuracy * 120)
    for s in rows:
        if s["broken_by"] in ("fgsm", "pgd"):
            assert s["adv_pred"] != s["label"] and s["perturbation_norm"] <= 0.1 + 1e-6
    # the stored adversarial examples really fool the model
    won = torch.tensor([s["broken_by"] in ("fgsm", "pgd") for s in rows])
    with torch.no_grad():
        assert bool((digits_model(res.x_adv[0.1][won]).argmax(1) != y[won]).all())


def test_eps_curve_is_monotone_and_matches_separate_runs(digits_model, digits_test) -> None:
    x, y = digits_test[0][:100], digits_test[1][:100]
    kw = {"pgd": {"steps": 10, "random_start": False}}
    res = evaluate(digits_model, x, y, attacks=["pgd"], eps=[0.2, "1/20", 0.1], attack_kwargs=kw)
    eps = [r.eps for r in res.per_eps]
    assert eps == sorted(eps) == [0.05, 0.1, 0.2]
    accs = [r.robust_accuracy for r in res.per_eps]
    assert accs == sorted(accs, reverse=True)
    single = evaluate(digits_model, x, y, attacks=["pgd"], eps=[0.05], attack_kwargs=kw)
    assert single.per_eps[0].robust_accuracy == accs[0]
    summary = res.summary()
    assert [p["eps"] for p in summary["curve"]] == eps
    assert summary["robust_accuracy"] == accs[-1]


def test_per_class_and_perturbation_metrics(digits_model, digits_test) -> None:
    x, y = digits_test[0][:80], digits_test[1][:80]
    res = evaluate(digits_model, x, y, attacks=["pgd"], eps=[0.15], norm="l2")
    r = res.per_eps[0]
    rows = [s for s in res.samples if s["eps"] == 0.15]
    for c, acc in r.per_class_robust_accuracy.items():
        members = [s for s in rows if s["label"] == c]
        assert acc == pytest.approx(sum(s["robust"] for s in members) / len(members))
    norms = [s["perturbation_norm"] for s in rows if s["perturbation_norm"] is not None]
    assert r.max_perturbation == pytest.approx(max(norms)) and r.max_perturbation <= 0.15 + 1e-5
    assert r.mean_perturbation == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def test_cost_is_counted(digits_model, digits_test) -> None:
    x, y = digits_test[0][:50], digits_test[1][:50]
    res = evaluate(digits_model, x, y, attacks=["pgd"], eps=[0.3], attack_kwargs={"pgd": {"steps": 7}})
    per = res.per_eps[0].per_attack["pgd"]
    assert 0 < per["gradients"] <= 7 * per["attacked"]
    assert res.cost["gradients"] == per["gradients"] and res.cost["wall_time_s"] > 0


class _MaskedGradients(nn.Module):
    """Quantizes its input: the classic gradient-masking defence (zero gradient almost everywhere)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


def test_zero_gradient_and_black_box_warnings(digits_model, digits_test) -> None:
    x, y = digits_test[0][:60], digits_test[1][:60]
    masked = _MaskedGradients(digits_model)
    with pytest.warns(ZeroGradientWarning):
        with pytest.warns(BlackBoxStrongerWarning):
            res = evaluate(masked, x, y, attacks=["pgd", "square"], eps=[0.3],
                           attack_kwargs={"pgd": {"steps": 5}, "square": {"n_queries": 300}})
    names = {w["name"] for w in res.warnings}
    assert names == {"ZeroGradientWarning", "BlackBoxStrongerWarning"}
    assert res.per_eps[0].per_attack["pgd"]["broken"] < res.per_eps[0].per_attack["square"]["broken"]


def test_no_warnings_on_a_healthy_model(recwarn, digits_model, digits_test) -> None:
    x, y = digits_test[0][:40], digits_test[1][:40]
    res = evaluate(digits_model, x, y, attacks=["pgd"], eps=[0.1])
    assert res.warnings == []


def test_evaluate_rejects_bad_arguments(digits_model, digits_test) -> None:
    x, y = digits_test
    with pytest.raises(ConfigError, match="no attacks"):
        evaluate(digits_model, x, y, attacks=[], eps=[0.1])
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(digits_model, x, y, attacks=["pgd"], eps=[0.1], batch_size=0)
    with pytest.raises(ConfigError, match="eps"):
        evaluate(digits_model, x, y, attacks=["pgd"], eps=["-1"])
    with pytest.raises(ConfigError, match="different eps"):
        evaluate(digits_model, x, y, attacks=[advbench.create_attack("pgd", eps=0.1),
                                             advbench.create_attack("fgsm", eps=0.2)])


def test_universal_evaluation_uses_the_attacks_default_k(digits_model, digits_test) -> None:
    from advbench.multidomain_eval import evaluate_multidomain

    x, y = digits_test[0][:23], digits_test[1][:23]
    res = evaluate_multidomain(digits_model, x, y, attack="minmax-universal", eps=[0.2], params={"steps": 2})
    assert res.n_used % 5 == 0 and len(res.per_eps[0]["weights"]) == 5
