"""Invariants over the whole attack registry: budget and box, determinism, success semantics,
targeted mode, early stop, immutability and input validation.

The table below is the one row to add with a new attack, whatever its task: cheap hyperparameters for tests.
Every attack gets the protocol's invariants (frozen, no seed of its own, deterministic given the generator,
the victim's state restored); classifier attacks also get the budget and success semantics below.
"""

from __future__ import annotations

import pytest
import torch

import advbench
from advbench.attack import ATTACKS
from advbench.errors import BudgetError, ConfigError, InputError, UnknownNameError
from advbench.models import create_model

FAST = {
    "fgsm": {},
    "pgd": {"steps": 5},
    "pgd-cw": {"steps": 5},
    "ta-pgd": {"steps": 5},
    "apgd": {"steps": 5},
    "apgd-ce": {"steps": 5},
    "apgd-dlr": {"steps": 5},
    "apgd-t": {"steps": 5},
    "fab": {"steps": 5},
    "fab-t": {"steps": 5},
    "square": {"n_queries": 40},
    "cw": {"steps": 10, "c": 10.0, "lr": 0.05},
    "deepfool": {"steps": 10},
    "autoattack": {"steps": 5, "n_queries": 40, "n_target_classes": 2},  # standard: 100, 5000, 9
    "minmax-ensemble": {"steps": 5},
    "avg-ensemble": {"steps": 5},
    "minmax-universal": {"steps": 5, "k": 4},
    "avg-universal": {"steps": 5, "k": 4},
    "minmax-transform": {"steps": 5},
    "eot": {"steps": 5},
    "adv-cloud": {"steps": 5, "eps_e": 0.1, "coverage": 0.2, "thickness": 0.4},
    # roof patches against detectors (task: detection)
    "patch-whitebox": {"steps": 2, "batch_size": 2, "patch_size": 8},
    "patch-transfer": {"steps": 2, "batch_size": 2, "patch_size": 8},
    "patch-random-search": {"queries": 6, "search_images": 2, "patch_size": 8},
    "patch-minmax": {"steps": 2, "batch_size": 2, "patch_size": 8},
    # multi-task dense prediction
    "stealthy-multitask": {"steps": 2, "target_task": "seg"},
    "fixed-weight-multitask": {"steps": 2, "target_task": "depth"},
    "all-tasks": {"steps": 2},
}
EVERY = advbench.list_attacks()
CLASSIFICATION = advbench.list_attacks(task="classification")
MULTI = [n for n in CLASSIFICATION if getattr(ATTACKS.get(n), "multi_domain", False)]
ALL = [n for n in CLASSIFICATION if n not in MULTI]  # single-model attacks; multi-domain ones take other victims


def test_every_registered_attack_has_a_test_row() -> None:
    assert sorted(FAST) == sorted(EVERY)
    assert {ATTACKS.get(n).task for n in EVERY} == {"classification", "detection", "multi-task dense prediction"}


@pytest.fixture(scope="module")
def task_victims(tmp_path_factory):
    """Per task: a victim, its input and ground truth, and the model a surrogate-taking attack gets."""
    from advbench.attacks.patch import PatchSet
    from advbench.datasets.detection import generate_aerial_dataset, load_detection_dataset
    from advbench.datasets.multitask import generate_multitask_scenes
    from advbench.models.detectors import create_detector
    from advbench.models.multitask import create_multitask_model
    from advbench.models.registry import MODELS

    root = generate_aerial_dataset(tmp_path_factory.mktemp("aerial") / "evd", n_images=4, size=(96, 64), seed=3)
    samples = load_detection_dataset(f"evd4uav:{root}")
    names = samples[0].class_names
    detector = create_detector("fcos-mnv3", class_names=names, image_size=(96, 64), seed=0)
    surrogate = create_detector("fcos-mnv3", class_names=names, image_size=(96, 64), seed=1)
    torch.manual_seed(0)
    net = create_multitask_model(MODELS.names(task="multi-task dense prediction")[0])
    x, targets, _ = generate_multitask_scenes(3, 32, seed=0)
    return {"detection": (detector, PatchSet.from_samples(samples), None, surrogate),
            "multi-task dense prediction": (net, x, targets, None)}


def _victim(name, task_victims, digits_model, digits_batch):
    task = ATTACKS.get(name).task
    if task == "classification":
        if name in MULTI:
            from advbench.attacks.ensemble import ModelEnsemble

            model = ModelEnsemble([digits_model, digits_model]) if "ensemble" in name else digits_model
        else:
            model = digits_model
        return model, digits_batch[0][:8], digits_batch[1][:8], None
    return task_victims[task]


def _result(out):
    return out.patch if hasattr(out, "patch") else out.x_adv


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_attack_follows_the_protocol(name, task_victims, digits_model, digits_batch) -> None:
    """Frozen once built, no seed of its own, deterministic given the call's generator, unknown hyperparameters
    refused by name, and the victim left as it was found (training mode and parameter gradients)."""
    model, x, y, surrogate = _victim(name, task_victims, digits_model, digits_batch)
    cls = ATTACKS.get(name)
    assert "seed" not in cls.parameter_names(), "randomness comes from the generator passed at call time"
    extra = {"surrogate": surrogate} if "surrogate" in cls.parameter_names() else {}
    attack = advbench.create_attack(name, **FAST[name], **extra)
    with pytest.raises(AttributeError, match="immutable"):
        attack.name = "other"
    with pytest.raises(ConfigError, match="no parameter 'no_such_knob'"):
        advbench.create_attack(name, no_such_knob=1)
    assert attack.hyperparameters()["name"] == name
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    try:
        first = _result(attack(model, x, y, generator=torch.Generator().manual_seed(4)))
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
        again = _result(attack(model, x, y, generator=torch.Generator().manual_seed(4)))
    finally:
        model.eval()
    assert torch.equal(first, again), "the same generator must give the same result"


@pytest.mark.parametrize("name", MULTI)
def test_multidomain_budget_determinism_and_success(name, digits_model, digits_batch) -> None:
    """Success means every domain is fooled: every ensemble member / every group member / every transform."""
    from advbench.attacks.ensemble import ModelEnsemble
    from advbench.attacks.transforms import TRANSFORMS

    x, y = digits_batch[0][:16], digits_batch[1][:16]
    victim = ModelEnsemble([digits_model, digits_model]) if "ensemble" in name else digits_model
    attack = advbench.create_attack(name, eps=0.3, **FAST[name])
    out1 = attack(victim, x, y, generator=torch.Generator().manual_seed(2))
    out2 = attack(victim, x, y, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out1.x_adv, out2.x_adv)
    assert bool(attack.threat.contains(out1.x_adv, x).all())
    with torch.no_grad():
        fooled = digits_model(out1.x_adv).argmax(1) != y
    if "universal" in name:
        fooled = fooled.reshape(-1, 4).all(1).repeat_interleave(4)
    if name in ("minmax-transform", "eot"):
        identity = attack.transforms.index("identity")
        assert torch.equal(out1.extras["domain_success"][:, identity], fooled)
        assert bool((fooled | ~out1.success).all())
        assert TRANSFORMS.get("hflip").apply(x, None).shape == x.shape
    else:
        assert torch.equal(out1.success, fooled)
    assert out1.weights is not None and torch.allclose(out1.weights.sum(1), torch.ones(out1.weights.shape[0]))


def _cases():
    for name in ALL:
        for norm in ATTACKS.get(name).norms:
            yield name, norm


def _eps(norm: str) -> float:
    return {"linf": 0.15, "l2": 1.0, "l1": 3.0, "l0": 6}[norm]


@pytest.mark.parametrize("name,norm", list(_cases()))
def test_budget_box_determinism_and_success(name, norm, digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:24], digits_batch[1][:24]
    attack = advbench.create_attack(name, norm=norm, eps=_eps(norm), **FAST[name])
    out1 = attack(digits_model, x, y, generator=torch.Generator().manual_seed(5))
    out2 = attack(digits_model, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out1.x_adv, out2.x_adv), "same seed must give the same result"
    assert bool(attack.within_budget(out1.x_adv, x, out1.extras).all())
    assert float(out1.x_adv.min()) >= 0 and float(out1.x_adv.max()) <= 1
    with torch.no_grad():
        pred = digits_model(out1.x_adv).argmax(1)
    assert torch.equal(out1.success, pred != y), "success must mean misclassified"
    assert bool((out1.success_step[out1.success] >= 0).all()) and bool((out1.success_step[~out1.success] == -1).all())
    assert out1.total_queries > 0
    assert bool((out1.n_queries >= 1).all())


@pytest.mark.parametrize("name", [n for n in ALL if ATTACKS.get(n).supports_targeted])
def test_targeted_success_means_target_class(name, digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    norm = ATTACKS.get(name).norms[0]
    attack = advbench.create_attack(name, norm=norm, eps=_eps(norm) * 2, targeted=True, **FAST[name])
    out = attack(digits_model, x, y, generator=torch.Generator().manual_seed(1))
    assert out.target is not None and bool((out.target != y).all())
    with torch.no_grad():
        pred = digits_model(out.x_adv).argmax(1)
    assert torch.equal(out.success, pred == out.target)
    given = (y + 3) % 10
    out_given = attack(digits_model, x, y, target=given, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out_given.target, given)
    assert torch.equal(out_given.success, digits_model(out_given.x_adv).argmax(1) == given)


def test_every_classifier_attack_has_a_targeted_mode() -> None:
    assert [n for n in CLASSIFICATION if not ATTACKS.get(n).supports_targeted] == []


@pytest.mark.parametrize("name", ALL)
def test_already_misclassified_samples_cost_nothing_more(name, digits_model, digits_batch) -> None:
    """With early stop, a sample that already fails costs one query and no gradient."""
    x, y = digits_batch[0][:8], digits_batch[1][:8]
    wrong = (y + 1) % 10  # labels the model does not predict: every sample is 'already misclassified'
    norm = ATTACKS.get(name).norms[0]
    out = advbench.create_attack(name, norm=norm, eps=_eps(norm), **FAST[name])(digits_model, x, wrong)
    assert bool(out.success.all())
    assert torch.equal(out.x_adv, x)
    assert out.total_gradients == 0
    assert bool((out.n_queries == 1).all())
    assert bool((out.success_step == 0).all())


def test_model_state_is_restored(digits_model, digits_batch) -> None:
    x, y = digits_batch
    digits_model.train()
    flags = [p.requires_grad for p in digits_model.parameters()]
    advbench.create_attack("pgd", eps=0.1, steps=2)(digits_model, x[:4], y[:4])
    assert digits_model.training
    assert [p.requires_grad for p in digits_model.parameters()] == flags
    digits_model.eval()


def test_attacks_are_immutable() -> None:
    attack = advbench.create_attack("pgd", eps=0.1)
    with pytest.raises(AttributeError, match="immutable"):
        attack.steps = 3
    assert attack.with_eps(0.2).eps == 0.2 and attack.eps == 0.1


def test_pgd_early_stop_saves_gradients(digits_model, digits_batch) -> None:
    x, y = digits_batch
    eager = advbench.create_attack("pgd", eps=0.3, steps=20, random_start=False)
    full = advbench.create_attack("pgd", eps=0.3, steps=20, random_start=False, early_stop=False)
    out_e, out_f = eager(digits_model, x, y), full(digits_model, x, y)
    assert out_f.total_gradients == 20 * x.shape[0]
    assert out_e.total_gradients < out_f.total_gradients / 2
    assert bool(out_e.success.all())


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda x, y: (x + 1.0, y), r"\[0,1\]"),
        (lambda x, y: (x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill(0, torch.tensor([0]), True),
                                     float("nan")), y), "NaN"),
        (lambda x, y: (x[:, :, :4, :4], y), "does not fit the model"),
        (lambda x, y: (x.flatten(1), y), "NCHW"),
        (lambda x, y: (x.double().to(torch.int64), y), "floating"),
        (lambda x, y: (x, y[:-1]), "one entry per sample"),
        (lambda x, y: (x, y + 20), "labels must lie"),
    ],
)
def test_bad_input_gets_clear_error(mutate, match, digits_model, digits_batch) -> None:
    x, y = mutate(*digits_batch)
    with pytest.raises(InputError, match=match):
        advbench.create_attack("pgd", eps=0.1, steps=1)(digits_model, x, y)


def test_bad_hyperparameters_get_clear_errors() -> None:
    with pytest.raises(ConfigError, match="eps must be >= 0"):
        advbench.create_attack("pgd", eps=-0.1)
    with pytest.raises(ConfigError, match="does not support norm 'l1'"):
        advbench.create_attack("square", norm="l1", eps=1.0)
    with pytest.raises(ConfigError, match="steps"):
        advbench.create_attack("pgd", steps=0)
    with pytest.raises(UnknownNameError, match="known attacks: .*pgd"):
        advbench.create_attack("no-such-attack")
    with pytest.raises(TypeError):
        advbench.create_attack("pgd", 0.1)


def test_budget_violation_is_an_error(digits_model, digits_batch) -> None:
    from advbench.attack import Attack, RawResult

    class Broken(Attack):
        name = "broken"

        def _attack(self, ctx, x):
            return RawResult(x_adv=(x + 0.5).clamp(0, 1))

    with pytest.raises(BudgetError, match="left the linf ball"):
        Broken(eps=0.1)(digits_model, *digits_batch)


# --------------------------------------------------------------------------- invariants that once broke


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


def test_a_run_picks_its_experiment_from_the_attacks_task_and_refuses_mixed_tasks() -> None:
    from advbench.experiments import choose_experiment
    from advbench.experiments.classifier import attack_hyperparameters
    from advbench.pipeline.config import RunConfig

    def cfg(attack: str, **kw) -> RunConfig:
        return RunConfig.build(models=["small_cnn?random=true"], dataset="digits", attacks=[attack], eps=["0.1"], **kw)

    assert choose_experiment(cfg("pgd")) == "classifier"
    assert choose_experiment(cfg("patch-whitebox")) == "detection"
    assert choose_experiment(cfg("stealthy-multitask")) == "multitask"
    with pytest.raises(ConfigError, match="'patch-whitebox' is a detection attack"):
        attack_hyperparameters(cfg("patch-whitebox", experiment="classifier"))
