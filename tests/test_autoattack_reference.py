"""``autoattack`` against the reference implementation (``pyautoattack``, the original AutoAttack of Croce & Hein).

* the components run with the reference's settings for every norm and version (read off
  ``pyautoattack.AutoAttack`` objects, plus the published numbers spelled out);
* robust accuracy through ``advbench.evaluate`` equals ``run_standard_evaluation``'s on the same samples
  and seed (digits here; the l2/l1 and 32x32 ResNet cases are marked slow: Square's 5,000 queries run in
  full on every sample that survives);
* APGD-T and FAB-T aim at the top-k other classes by logit, never at all classes;
* the l1 steepest-ascent step of :class:`~advbench.threat.ThreatModel` puts no mass on coordinates that sit
  at the box bound in the step's direction, and linf/l2/l0 steps are unchanged.
"""

from __future__ import annotations

import json

import pytest
import torch

import advbench
from advbench.attacks.autoattack import seed_from_generator
from advbench.errors import ConfigError
from advbench.threat import ThreatModel, perturbation_norm

pyautoattack = pytest.importorskip("pyautoattack")

pytestmark = pytest.mark.usefixtures("one_thread")

REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 12.0}


def _reference(norm: str, version: str, model=None, eps: float | None = None, seed: int = 0):
    return pyautoattack.AutoAttack(model, norm=REF_NORM[norm], eps=EPS[norm] if eps is None else eps,
                                   version=version, seed=seed)


def _reference_run(model, x, y, norm, eps, seed=0):
    """Robust accuracy of ``run_standard_evaluation`` with the seed ``evaluate(seed=seed)`` hands the attack."""
    ref = _reference(norm, "standard", model, eps, seed_from_generator(torch.Generator().manual_seed(seed)))
    _, y_adv = ref.run_standard_evaluation(x, y, batch_size=256)
    return (y_adv == y).double().mean().item(), y_adv == y


def _advbench_run(model, x, y, norm, eps, seed=0):
    res = advbench.evaluate(model, x, y, attacks=["autoattack"], eps=eps, norm=norm, seed=seed)
    robust = torch.tensor([s["robust"] for s in res.samples])
    return robust.double().mean().item(), robust, res


# --- settings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_components_have_the_reference_settings(norm: str, version: str) -> None:
    attack = advbench.create_attack("autoattack", norm=norm, eps=EPS[norm], version=version)
    comp = attack.hyperparameters()["components"]
    ref = _reference(norm, version)
    assert comp["attacks"] == ref.attacks_to_run
    assert comp["reference_settings"] is True
    for name in ref.attacks_to_run:
        got = comp[name]
        if name.startswith("apgd"):
            obj = ref.apgd_targeted if name == "apgd-t" else ref.apgd
            assert (got["n_iter"], got["n_restarts"], got["rho"], got["eot_iter"], got["use_largereps"]) == (
                obj.n_iter, obj.n_restarts, obj.thr_decr, obj.eot_iter, obj.use_largereps)
            if name == "apgd-t":
                assert got["n_target_classes"] == obj.n_target_classes
        elif name.startswith("fab"):
            assert (got["n_iter"], got["alpha_max"], got["eta"], got["beta"]) == (
                ref.fab.n_iter, ref.fab.alpha_max, ref.fab.eta, ref.fab.beta)
            # the reference runs FAB-T with one restart (run_standard_evaluation sets it) and FAB with its own
            assert got["n_restarts"] == (1 if name == "fab-t" else ref.fab.n_restarts)
            if name == "fab-t":
                assert got["n_target_classes"] == ref.fab.n_target_classes
        else:
            assert (got["n_queries"], got["n_restarts"], got["p_init"], got["loss"], got["rescale_schedule"]) == (
                ref.square.n_queries, ref.square.n_restarts, ref.square.p_init, ref.square.loss,
                ref.square.rescale_schedule)
    json.dumps(attack.hyperparameters())  # goes into run records as it is


def test_standard_settings_are_the_published_ones() -> None:
    """The numbers of the paper / the reference's README, spelled out."""
    linf = advbench.create_attack("autoattack", norm="linf", eps=8 / 255).hyperparameters()
    assert linf["version"] == "standard"
    comp = linf["components"]
    assert comp["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert comp["apgd-ce"] == {"loss": "ce", "n_iter": 100, "n_restarts": 1, "rho": 0.75, "eot_iter": 1,
                                    "use_largereps": False}
    assert (comp["apgd-t"]["n_iter"], comp["apgd-t"]["n_restarts"], comp["apgd-t"]["n_target_classes"]) == (100, 1, 9)
    assert (comp["fab-t"]["n_iter"], comp["fab-t"]["n_restarts"], comp["fab-t"]["n_target_classes"]) == (100, 1, 9)
    assert (comp["square"]["n_queries"], comp["square"]["n_restarts"], comp["square"]["p_init"]) == (5000, 1, 0.8)
    l1 = advbench.create_attack("autoattack", norm="l1", eps=12.0).hyperparameters()["components"]
    assert l1["apgd-ce"]["n_restarts"] == 5 and l1["apgd-ce"]["use_largereps"]
    assert l1["apgd-ce"]["largereps_schedule"] == {"eps_factors": [3.0, 2.0, 1.0], "iterations": [30, 30, 40]}
    assert l1["apgd-t"]["n_target_classes"] == 5 and l1["apgd-t"]["use_largereps"]
    rand = advbench.create_attack("autoattack", version="rand").hyperparameters()["components"]
    assert rand["attacks"] == ["apgd-ce", "apgd-dlr"] and rand["apgd-ce"]["eot_iter"] == 20
    plus = advbench.create_attack("autoattack", version="plus").hyperparameters()["components"]
    assert plus["attacks"] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert (plus["apgd-ce"]["n_restarts"], plus["fab"]["n_restarts"], plus["fab-t"]["n_restarts"]) == (5, 5, 1)


def test_cheap_overrides_are_recorded_and_survive_with_eps() -> None:
    attack = advbench.create_attack("autoattack", eps=0.1, steps=5, n_queries=40, n_target_classes=3)
    comp = attack.hyperparameters()["components"]
    assert comp["reference_settings"] is False
    assert comp["apgd-ce"]["n_iter"] == comp["apgd-t"]["n_iter"] == comp["fab-t"]["n_iter"] == 5
    assert comp["square"]["n_queries"] == 40
    assert comp["apgd-t"]["n_target_classes"] == comp["fab-t"]["n_target_classes"] == 3
    moved = attack.with_eps(0.2)
    assert moved.eps == 0.2 and moved.hyperparameters()["components"] == comp


def test_bad_settings_get_clear_errors() -> None:
    with pytest.raises(ConfigError, match="version"):
        advbench.create_attack("autoattack", version="fast")
    with pytest.raises(ConfigError, match="steps"):
        advbench.create_attack("autoattack", steps=0)
    with pytest.raises(ConfigError, match="targeted autoattack"):
        advbench.create_attack("autoattack", norm="l1", eps=1.0, targeted=True)
    with pytest.raises(ConfigError, match="does not support norm 'l0'"):
        advbench.create_attack("autoattack", norm="l0", eps=3)


# --- agreement with run_standard_evaluation -------------------------------------------------------------------


@pytest.mark.slow
def test_matches_the_reference_on_digits_linf(digits_model, digits_test) -> None:
    x, y = digits_test[0][:40], digits_test[1][:40]
    ours, ours_flags, res = _advbench_run(digits_model, x, y, "linf", 0.1)
    theirs, their_flags = _reference_run(digits_model, x, y, "linf", 0.1)
    assert 0 < ours < res.clean_accuracy, "pick an eps where robust accuracy is informative"
    assert abs(ours - theirs) <= 0.005
    assert torch.equal(ours_flags, their_flags)  # same seed, one batch: the very same samples survive
    assert res.per_eps[0].per_attack["autoattack"]["gradients"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("l1", 2.0)])
def test_matches_the_reference_on_digits_l2_l1(norm, eps, digits_model, digits_test) -> None:
    x, y = digits_test[0][:40], digits_test[1][:40]
    ours, ours_flags, res = _advbench_run(digits_model, x, y, norm, eps)
    theirs, their_flags = _reference_run(digits_model, x, y, norm, eps)
    assert 0 < ours < res.clean_accuracy
    assert abs(ours - theirs) <= 0.005
    assert torch.equal(ours_flags, their_flags)


@pytest.fixture(scope="module")
def resnet_case():
    """resnet20 on 3x32x32 inputs, trained for a few epochs on the synthetic set (about 15 s on one core)."""
    from advbench.datasets import load_dataset
    from advbench.training import TrainConfig, train_classifier

    spec = "synthetic:n=1000,classes=10,size=32,channels=3"
    model, _ = train_classifier(TrainConfig(arch="resnet20", dataset=spec, epochs=4, lr=0.01, seed=0), progress=False)
    data = load_dataset(spec, seed=0)
    return model.eval(), data.x_test[:12], data.y_test[:12]


@pytest.mark.slow
def test_matches_the_reference_on_resnet20(resnet_case) -> None:
    model, x, y = resnet_case
    ours, ours_flags, res = _advbench_run(model, x, y, "linf", 0.06)
    theirs, their_flags = _reference_run(model, x, y, "linf", 0.06)
    assert 0 < ours < res.clean_accuracy
    assert abs(ours - theirs) <= 0.005
    assert torch.equal(ours_flags, their_flags)


# --- targets ---------------------------------------------------------------------------------------------------


def _random_model(num_classes: int):
    from advbench.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model("small_cnn", input_shape=(1, 8, 8), num_classes=num_classes).eval()


def _record_targets(monkeypatch) -> tuple[list, list]:
    """Record the target class of every APGD-T run (per sample) and the logit rank of every FAB-T run."""
    from pyautoattack.autopgd_base import APGDAttack_targeted
    from pyautoattack.fab_base import FABAttack

    apgd_targets: list[torch.Tensor] = []
    fab_ranks: list[int] = []
    apgd_run, fab_run = APGDAttack_targeted.attack_single_run, FABAttack.attack_single_run

    def apgd_spy(self, x, y, x_init=None):
        apgd_targets.append(self.y_target.clone())
        return apgd_run(self, x, y, x_init)

    def fab_spy(self, x, y=None, use_rand_start=False, is_targeted=False):
        if is_targeted:
            fab_ranks.append(self.target_class)
        return fab_run(self, x, y, use_rand_start, is_targeted)

    monkeypatch.setattr(APGDAttack_targeted, "attack_single_run", apgd_spy)
    monkeypatch.setattr(FABAttack, "attack_single_run", fab_spy)
    return apgd_targets, fab_ranks


def test_targets_are_the_top9_other_classes_of_100(monkeypatch) -> None:
    model = _random_model(100)
    x = torch.rand((6, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    apgd_targets, fab_ranks = _record_targets(monkeypatch)
    attack = advbench.create_attack("autoattack", eps=1e-4, steps=2, n_queries=5)  # too small to break anything
    out = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert not bool(out.success.any())
    top = logits.argsort(dim=1, descending=True)
    assert len(apgd_targets) == 9, "one APGD-T run per target rank, never one per class"
    assert torch.equal(torch.stack(apgd_targets, 1), top[:, 1:10])  # ranks 2..10, in order
    assert fab_ranks == list(range(2, 11))
    assert out.extras["autoattack"]["n_target_classes"] == {"apgd-t": 9, "fab-t": 9}


@pytest.mark.parametrize("classes,expected", [(5, {"apgd-t": 4, "fab-t": 4}), (3, {"apgd-t": 2, "fab-t": 2})])
def test_fewer_classes_use_all_other_classes(classes, expected, monkeypatch) -> None:
    """The reference warns and then fails with an IndexError here; advbench caps the targets at n - 1 and skips
    APGD-T where its targeted DLR loss needs more classes (4)."""
    model = _random_model(classes)
    x = torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    apgd_targets, fab_ranks = _record_targets(monkeypatch)
    out = advbench.create_attack("autoattack", eps=1e-4, steps=2, n_queries=5)(model, x, y)
    info = out.extras["autoattack"]
    assert info["n_target_classes"] == expected
    assert fab_ranks == list(range(2, classes + 1))
    assert len(apgd_targets) == (classes - 1 if classes >= 4 else 0)
    if classes < 4:
        assert {"attack": "apgd-t", "skipped": "needs 4 classes"} in info["stages"]


# --- seeding and cost ------------------------------------------------------------------------------------------


def test_seeded_from_the_generator_without_touching_global_state(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:12], digits_batch[1][:12]
    attack = advbench.create_attack("autoattack", eps=0.1, steps=4, n_queries=30)
    before = torch.get_rng_state()
    a = attack(digits_model, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), before)
    b = attack(digits_model, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.n_queries, b.n_queries)
    assert a.extras["autoattack"]["seed"] == seed_from_generator(torch.Generator().manual_seed(4))
    stages = a.extras["autoattack"]["stages"]
    assert stages[0]["attack"] == "apgd-ce" and stages[0]["attacked"] == 12
    assert a.total_gradients >= 12 * 4 and bool((a.n_queries >= 1).all())


# --- the l1 step -----------------------------------------------------------------------------------------------


def _box_point(shape, seed):
    """A point in [0,1] with about a third of its coordinates at 0 and a third at 1."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g)
    return torch.where(u < 1 / 3, torch.zeros_like(u), torch.where(u > 2 / 3, torch.ones_like(u), u))


def test_l1_step_puts_no_mass_where_the_box_blocks_it() -> None:
    tm = ThreatModel("l1", 2.0)
    x = _box_point((8, 3, 6, 6), 0)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    d = tm.ascent_direction(g, 0.9, x_adv=x)
    assert not bool(((d > 0) & (x >= 1)).any()), "mass on a coordinate already at 1 that moves up"
    assert not bool(((d < 0) & (x <= 0)).any()), "mass on a coordinate already at 0 that moves down"
    assert torch.allclose(perturbation_norm(d, "l1"), torch.ones(8), atol=1e-5)
    assert bool((d * g >= 0).all())  # every chosen coordinate follows the gradient's sign
    k = round(x[0].numel() * 0.1)
    assert bool(((d != 0).flatten(1).sum(1) == k).all())  # still k coordinates: chosen among the movable ones
    movable = ((g > 0) & (x < 1)) | ((g < 0) & (x > 0))
    for i in range(8):  # they are the k movable coordinates with the largest |g|
        score = torch.where(movable[i], g[i].abs(), torch.zeros_like(g[i])).flatten()
        assert set((d[i].flatten() != 0).nonzero().flatten().tolist()) == set(score.topk(k).indices.tolist())


def test_l1_step_without_room_is_zero_and_with_few_movable_uses_only_those() -> None:
    tm = ThreatModel("l1", 1.0)
    x = torch.ones((2, 1, 4, 4))
    g = torch.rand((2, 1, 4, 4)) + 0.1  # every coordinate wants to go up, none can
    assert torch.equal(tm.ascent_direction(g, 0.5, x_adv=x), torch.zeros_like(g))
    x[0, 0, 0, :2] = 0.5  # two coordinates can move, sparsity asks for 8
    d = tm.ascent_direction(g, 0.5, x_adv=x)
    assert int((d[0] != 0).sum()) == 2 and float(d[0].sum()) == pytest.approx(1.0)


def test_l1_step_keeps_more_of_the_step_after_projection() -> None:
    """The point of the mask: a projected step moves further when no mass is spent on blocked coordinates."""
    tm = ThreatModel("l1", 4.0)
    x = _box_point((4, 1, 8, 8), 2)  # the clean point, a third of it at 0 and a third at 1
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    old = tm.project(x + 0.5 * tm.ascent_direction(g, 0.8), x)
    new = tm.project(x + 0.5 * tm.ascent_direction(g, 0.8, x_adv=x), x)
    gain_old = ((old - x) * g).flatten(1).sum(1)
    gain_new = ((new - x) * g).flatten(1).sum(1)
    assert bool((gain_new > gain_old).all())


@pytest.mark.parametrize("norm", ["linf", "l2", "l0"])
def test_other_norms_ignore_the_point(norm: str) -> None:
    tm = ThreatModel(norm, 3 if norm == "l0" else 0.1)
    x = _box_point((4, 3, 5, 5), 0)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    d = tm.ascent_direction(g)
    assert torch.equal(tm.ascent_direction(g, x_adv=x), d)
    flat = g.flatten(1)
    expected = flat.sign() if norm == "linf" else flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    assert torch.equal(d, expected.reshape(g.shape))


def test_l1_step_without_a_point_is_unchanged() -> None:
    g = torch.randn((3, 1, 6, 6), generator=torch.Generator().manual_seed(9))
    d = ThreatModel("l1", 1.0).ascent_direction(g, 0.75)
    k = round(36 * 0.25)
    top = g.flatten(1).abs().topk(k, dim=1).indices
    expected = torch.zeros(3, 36).scatter_(1, top, g.flatten(1).gather(1, top).sign()) / k
    assert torch.equal(d, expected.reshape(g.shape))
