"""The min-max engine (APGDA) and its recipes: exact invariants, reductions to known attacks,
a seeded statistical check against averaging, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import advbench
from advbench.attacks.ensemble import ModelEnsemble
from advbench.errors import ConfigError, InputError, UnknownNameError
from advbench.losses import cw_margin
from advbench.minmax import APGDA, project_simplex
from advbench.threat import ThreatModel, perturbation_norm


# -- simplex projection ------------------------------------------------------------------------------
def test_simplex_projection_matches_brute_force_and_is_idempotent_and_shift_invariant() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        for _ in range(20):
            v = rng.normal(scale=2.0, size=k)
            ours = project_simplex(torch.tensor(v)[None]).numpy()[0]
            ref = minimize(lambda w, v=v: np.sum((w - v) ** 2), np.full(k, 1 / k), method="SLSQP",
                           bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                           options={"ftol": 1e-14, "maxiter": 500}).x
            np.testing.assert_allclose(ours, ref, atol=1e-5)
            assert ours.min() >= 0 and abs(ours.sum() - 1) < 1e-12
            again = project_simplex(torch.tensor(ours)[None]).numpy()[0]
            np.testing.assert_allclose(again, ours, atol=1e-12)
            shifted = project_simplex(torch.tensor(v + 3.7)[None]).numpy()[0]
            np.testing.assert_allclose(shifted, ours, atol=1e-12)


def test_weights_converge_to_closed_form_with_delta_frozen() -> None:
    """The w-step's fixed point for constant losses F is proj_P(1/K + F/gamma)."""
    engine = APGDA(gamma=4.0, beta=10.0)
    losses = torch.tensor([[3.0, 1.0, 0.5, 2.0], [0.1, 0.2, 0.3, 0.4]])
    w = torch.full_like(losses, 0.25)
    for _ in range(500):
        w = engine.update_weights(w, losses, 1 / engine.beta)
    expected = project_simplex(0.25 + losses / 4.0)
    assert torch.allclose(w, expected, atol=1e-6)


# -- a recording domain set to see every delta the engine produces -------------------------------------
class _Recorder:
    def __init__(self, inner) -> None:
        self.inner, self.names, self.seen = inner, inner.names, []

    def evaluate(self, delta):
        self.seen.append(delta.detach().clone())
        return self.inner.evaluate(delta)


@pytest.fixture(scope="module")
def ensemble(digits_model):
    from advbench.training import TrainConfig, train_classifier

    others = [train_classifier(TrainConfig(arch=a, dataset="digits", epochs=4, seed=i + 1), progress=False)[0]
              for i, a in enumerate(["mlp", "lenet5"])]
    robust = train_classifier(TrainConfig(arch="mlp", dataset="digits", epochs=4, seed=7, adversarial="pgd",
                                          adv_eps=0.15, adv_steps=5), progress=False)[0]
    return ModelEnsemble([digits_model, *others, robust], ["cnn", "mlp", "lenet5", "mlp-adv"])


@pytest.fixture(scope="module")
def ens_batch(ensemble, digits_test):
    x, y = digits_test
    with torch.no_grad():
        ok = torch.stack([m(x).argmax(1) == y for m in ensemble.members]).all(0)
    return x[ok][:60], y[ok][:60]


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.5), ("l1", 4.0), ("l0", 5)])
def test_every_delta_is_in_ball_and_box_and_w_on_simplex(norm, eps, ensemble, ens_batch, monkeypatch) -> None:
    from advbench.attacks import ensemble as ens_mod

    x, y = ens_batch[0][:16], ens_batch[1][:16]
    recorders = []
    original = ens_mod._EnsembleDomains

    def recording(*args, **kwargs):
        recorders.append(_Recorder(original(*args, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr(ens_mod, "_EnsembleDomains", recording)
    attack = advbench.create_attack("minmax-ensemble", norm=norm, eps=eps, steps=8, early_stop=False)
    out = attack(ensemble, x, y)
    tm = ThreatModel(norm, eps)
    seen = recorders[0].seen
    assert len(seen) >= 9
    for delta in seen:
        assert bool(tm.contains(x + delta, x, atol=1e-5).all())
        if norm == "l0":
            assert int(perturbation_norm(delta, "l0").max()) <= eps
    trace = out.weight_trace
    assert trace.shape == (9, 16, 4)
    assert bool((trace >= 0).all()) and torch.allclose(trace.sum(-1), torch.ones(9, 16), atol=1e-6)


def test_universal_delta_is_valid_for_all_k_inputs(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:20], digits_batch[1][:20]
    out = advbench.create_attack("minmax-universal", eps=0.3, steps=10, k=5, early_stop=False)(digits_model, x, y)
    groups = out.x_adv.reshape(4, 5, *x.shape[1:]) - x.reshape(4, 5, *x.shape[1:])
    assert torch.allclose(groups, groups[:, :1].expand_as(groups), atol=1e-6), "one delta per group"
    assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
    assert float(groups.abs().max()) <= 0.3 + 1e-6
    assert out.weights.shape == (4, 5)


def test_infinite_gamma_is_the_averaging_attack_bit_for_bit(ensemble, ens_batch) -> None:
    x, y = ens_batch
    avg = advbench.create_attack("avg-ensemble", eps=0.15, steps=10)(ensemble, x, y)
    inf = advbench.create_attack("minmax-ensemble", eps=0.15, steps=10, gamma=math.inf)(ensemble, x, y)
    assert torch.equal(avg.x_adv, inf.x_adv)
    assert torch.equal(avg.weights, torch.full_like(avg.weights, 0.25))


def test_single_domain_equals_pgd_with_the_same_loss(digits_model, digits_batch) -> None:
    x, y = digits_batch
    mm = advbench.create_attack("minmax-transform", transforms="identity", eps=0.1, steps=10, alpha=40.0,
                                kappa=50.0, early_stop=False)(digits_model, x, y)
    pgd = advbench.create_attack("pgd", loss="cw", kappa=50.0, eps=0.1, steps=10, step_size=1 / 40,
                                 random_start=False, early_stop=False)(digits_model, x, y)
    assert torch.allclose(mm.x_adv, pgd.x_adv, atol=1e-5)
    assert torch.equal(mm.success, pgd.success)


def test_minmax_beats_averaging_on_a_heterogeneous_ensemble(ensemble, ens_batch) -> None:
    """Seeded and deterministic: lower worst-domain margin and higher ASR_all than averaging."""
    x, y = ens_batch
    results = {}
    for name in ("minmax-ensemble", "avg-ensemble"):
        out = advbench.create_attack(name, eps=0.15, steps=50, early_stop=False)(ensemble, x, y)
        with torch.no_grad():
            margins = torch.stack([cw_margin(m(out.x_adv), y, 0.0) for m in ensemble.members], 1)
        results[name] = (out.extras["domain_success"].all(1).float().mean().item(), margins.amax(1).mean().item(),
                         out.weights.mean(0))
    (asr_mm, worst_mm, w_mm), (asr_avg, worst_avg, _) = results["minmax-ensemble"], results["avg-ensemble"]
    assert asr_mm > asr_avg
    assert worst_mm < worst_avg
    assert int(w_mm.argmax()) == 3, f"the adversarially trained member should get the largest weight: {w_mm}"


def test_minmax_transform_beats_eot(digits_model, digits_batch) -> None:
    x, y = digits_batch
    asr = {}
    for name in ("minmax-transform", "eot"):
        out = advbench.create_attack(name, eps=0.15, steps=30)(digits_model, x, y,
                                                                generator=torch.Generator().manual_seed(0))
        asr[name] = out.extras["domain_success"].all(1).float().mean().item()
    assert asr["minmax-transform"] > asr["eot"]


def test_bad_inputs_get_clear_errors(digits_model, digits_batch) -> None:
    from advbench.models import create_model

    x, y = digits_batch
    with pytest.raises(ConfigError, match="at least 2 victim models"):
        ModelEnsemble([digits_model])
    with pytest.raises(ConfigError, match="input shape"):
        ModelEnsemble([digits_model, create_model("mlp", input_shape=(1, 28, 28), num_classes=10)])
    with pytest.raises(ConfigError, match="number of classes"):
        ModelEnsemble([digits_model, create_model("mlp", input_shape=(1, 8, 8), num_classes=5)])
    with pytest.raises(ConfigError, match="ModelEnsemble"):
        advbench.create_attack("minmax-ensemble", eps=0.1)(digits_model, x, y)
    with pytest.raises(InputError, match="larger than the data"):
        advbench.create_attack("minmax-universal", eps=0.1, k=100)(digits_model, x[:10], y[:10])
    with pytest.raises(InputError, match="multiple of k"):
        advbench.create_attack("minmax-universal", eps=0.1, k=3)(digits_model, x[:10], y[:10])
    with pytest.raises(ConfigError, match="gamma must be >= 0"):
        advbench.create_attack("minmax-ensemble", eps=0.1, gamma=-1.0)
    with pytest.raises(UnknownNameError, match="unknown transform 'sepia'.*hflip"):
        advbench.create_attack("minmax-transform", eps=0.1, transforms="identity,sepia")


def test_streamed_universal_perturbation_over_a_data_set(digits_model, digits_test) -> None:
    from advbench.attacks.universal import stream_universal

    x, y = digits_test[0][:200], digits_test[1][:200]
    res = stream_universal(digits_model, x, y, eps=0.3, epochs=3, batch_size=64,
                           generator=torch.Generator().manual_seed(0))
    assert res.delta.shape == (1, *x.shape[1:])
    x_adv = x + res.delta
    assert float(x_adv.min()) >= -1e-6 and float(x_adv.max()) <= 1 + 1e-6, "valid for every input"
    assert float(res.delta.abs().max()) <= 0.3 + 1e-6
    assert torch.allclose(res.weights.sum(), torch.tensor(1.0)) and bool((res.weights >= 0).all())
    with torch.no_grad():
        assert torch.equal(res.success, digits_model(x_adv).argmax(1) != y)
    flat = stream_universal(digits_model, x, y, eps=0.3, epochs=1, batch_size=64, averaging=True)
    assert torch.allclose(flat.weights, torch.full((200,), 1 / 200))
