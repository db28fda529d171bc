"""Multi-perturbation adversarial training: min-max, MAX and AVG (issue 7)."""

from __future__ import annotations

import pytest
import torch

from advbench.defenses.adversarial_training import MultiPerturbationLoss, parse_types
from advbench.errors import ConfigError
from advbench.training import TrainConfig, train_classifier


def test_parse_types():
    assert parse_types("linf:8/255, l2:0.5") == [("linf", pytest.approx(8 / 255)), ("l2", 0.5)]
    with pytest.raises(ConfigError, match="at least two"):
        parse_types("linf:0.1")
    with pytest.raises(ConfigError, match="NORM:EPS"):
        parse_types("linf:0.1,l3:1")


def test_strategies_combine_the_per_type_losses(digits_model, digits_batch):
    x, y = digits_batch
    x, y = x[:16], y[:16]
    types = [("linf", 0.1), ("l2", 0.5)]
    losses = {}
    for strategy in ("avg", "max", "minmax"):
        fn = MultiPerturbationLoss(types, strategy=strategy, steps=3, beta=1.0, gamma=0.1)
        losses[strategy] = fn(digits_model, x, y, torch.Generator().manual_seed(0)).item()
    digits_model.eval()
    # with the same seed the PGD examples are the same, so MAX >= AVG, and the min-max weights move towards
    # the type with the larger loss, giving a loss between AVG and MAX
    assert losses["max"] >= losses["avg"] - 1e-6
    assert losses["avg"] - 1e-6 <= losses["minmax"] <= losses["max"] + 1e-6
    fn = MultiPerturbationLoss(types, strategy="minmax", steps=2, beta=1.0, gamma=0.1)
    for _ in range(3):
        fn(digits_model, x, y, torch.Generator().manual_seed(1))
    digits_model.eval()
    trace = torch.tensor(fn.trace)
    assert trace.shape == (3, 2) and torch.all(trace >= 0) and torch.allclose(trace.sum(1), torch.ones(3))
    with pytest.raises(ConfigError, match="strategy"):
        MultiPerturbationLoss(types, strategy="median")


def test_train_classifier_with_gat_minmax_reports_weights():
    model, meta = train_classifier(TrainConfig(arch="mlp", dataset="digits", epochs=1, adv_steps=2,
                                               adversarial="gat-minmax", gat_types="linf:0.1,l2:0.5"), progress=False)
    weights = meta["gat_weights"]
    assert set(weights) == {"linf:0.1", "l2:0.5"} and sum(weights.values()) == pytest.approx(1.0)
    assert meta["test_accuracy"] > 0.5
    with pytest.raises(ConfigError, match="gat-minmax"):
        TrainConfig(arch="mlp", dataset="digits", adversarial="trades")


def test_fit_draws_adversarial_examples_from_the_given_attack_generator(digits_model, digits_batch):
    """ADMM's rounds pass one attack stream through every fit() call; the minibatches keep ``generator``."""
    import copy
    from types import SimpleNamespace

    from advbench.training import fit

    seen = []

    def recording_attack(model, x, y, generator=None):
        seen.append(generator)
        return SimpleNamespace(x_adv=x)

    x, y = digits_batch
    data = SimpleNamespace(x_train=x[:32], y_train=y[:32])
    batches, attack_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    fit(copy.deepcopy(digits_model), data, epochs=1, batch_size=16, generator=batches, attack=recording_attack,
        attack_generator=attack_gen, progress=False)
    assert len(seen) == 2 and all(g is attack_gen for g in seen)
    seen.clear()
    fit(copy.deepcopy(digits_model), data, epochs=1, batch_size=16, generator=batches, attack=recording_attack,
        progress=False)
    assert len(seen) == 2 and all(g is batches for g in seen), "without one, the attacks share the batch stream"


def test_training_objective_is_the_one_place_a_training_mode_is_built() -> None:
    from advbench.defenses.adversarial_training import MultiPerturbationLoss, training_objective

    attack, loss = training_objective("pgd", eps=0.2, steps=3)
    assert loss is None and attack.early_stop is False and attack.hyperparameters()["steps"] == 3
    attack, loss = training_objective("gat-max", gat_types="linf:0.1,l2:1.0", steps=2)
    assert attack is None and isinstance(loss, MultiPerturbationLoss) and loss.strategy == "max"
    assert training_objective(None) == (None, None)
    with pytest.raises(ConfigError, match="unknown adversarial training mode 'gat-sum'"):
        training_objective("gat-sum")
