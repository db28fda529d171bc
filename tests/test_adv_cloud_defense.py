"""The adversarial cloud attack, DefenseNet, --defense in runs, and the SOD robustness rows (issue 7)."""

from __future__ import annotations

import json

import pytest
import torch

import advbench
from advbench.attack import ATTACKS
from advbench.attacks.adv_cloud import CloudBudget, Layout, cloud_colour, compose, run_adv_cloud
from advbench.defenses import DefendedModel, parse_defense
from advbench.defenses.defensenet import (
    DefenseNet,
    DefenseTrainConfig,
    load_defensenet,
    save_defensenet,
    train_defensenet,
)
from advbench.errors import BudgetError, CheckpointError, ConfigError, InputError
from advbench.objectives import CLASSIFICATION, SOD
from advbench.runner import RunSpec
from advbench.runner import run as run_spec

advbench.list_attacks()


def _cloud_attack(**kw):
    return ATTACKS.get("adv-cloud")(**kw)


# -- the attack -------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [4, None])
def test_adv_cloud_respects_both_budgets(digits_model, digits_batch, grid):
    x, y = digits_batch
    attack = _cloud_attack(eps=0.05, eps_e=0.15, mask_bound=0.1, exposure_grid=grid, steps=5)
    out = attack(digits_model, x, y, generator=torch.Generator().manual_seed(0))
    delta, masks = out.extras["delta"], out.extras["masks"]
    layout = Layout.of(x, attack.budget)
    e, n, d = layout.unpack(delta)
    assert float(e.abs().max()) <= 0.15 + 1e-6 and float(n.abs().max()) <= 0.05 + 1e-6
    assert float(d.abs().max()) <= 0.1 + 1e-6
    assert float(e.abs().max()) > 0.1 and float(n.abs().max()) > 0.04, "the attack did not use its budgets"
    colour = cloud_colour((1.0, 1.0, 1.0), 1, x)
    assert torch.allclose(compose(x, masks[:, :1], colour, delta, layout)[:, 0], out.x_adv, atol=1e-6)
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    assert out.success.float().mean() > 0.3


def test_adv_cloud_budget_check_catches_a_broken_result(digits_model, digits_batch):
    x, y = digits_batch
    attack = _cloud_attack(eps=0.02, eps_e=0.1, steps=1)

    class Cheat(type(attack)):
        def _attack(self, ctx, x):
            raw = super()._attack(ctx, x)
            raw.x_adv = (raw.x_adv + 0.3).clamp(0, 1)  # leaves the cloud model
            return raw

    with pytest.raises(BudgetError, match="adv-cloud"):
        Cheat(eps=0.02, eps_e=0.1, steps=1)(digits_model, x[:4], y[:4])


def test_adv_cloud_budgets_must_be_non_negative():
    with pytest.raises(ConfigError, match="eps_e"):
        CloudBudget(eps_e=-0.1)
    with pytest.raises(ConfigError, match="mask_bound"):
        _cloud_attack(mask_bound=-1)
    with pytest.raises(ConfigError, match="eps"):
        _cloud_attack(eps=-0.1)
    with pytest.raises(ConfigError, match="exposure_grid"):
        CloudBudget(exposure_grid=0)
    fractions = _cloud_attack(eps="8/255", eps_e="1/8")
    assert fractions.budget.eps_n == pytest.approx(8 / 255) and fractions.eps_e == pytest.approx(0.125)


def test_minmax_over_cloud_samples_learns_simplex_weights(digits_model, digits_batch):
    x, y = digits_batch
    gen = torch.Generator().manual_seed(1)
    out = _cloud_attack(eps=0.03, eps_e=0.1, clouds=3, steps=5, gamma=0.1, beta=2.0)(digits_model, x, y,
                                                                                     generator=gen)
    w = out.weights
    assert w.shape == (x.shape[0], 3) and torch.all(w >= 0) and torch.allclose(w.sum(1), torch.ones(len(w)))
    assert not torch.allclose(w, torch.full_like(w, 1 / 3)), "weights never moved"
    avg = _cloud_attack(eps=0.03, eps_e=0.1, clouds=3, steps=5, mode="avg")(digits_model, x, y,
                                                                            generator=torch.Generator().manual_seed(1))
    assert torch.allclose(avg.weights, torch.full_like(avg.weights, 1 / 3))


def test_same_seed_same_attack(digits_model, digits_batch):
    x, y = digits_batch
    a = _cloud_attack(eps=0.03, steps=3)(digits_model, x, y, generator=torch.Generator().manual_seed(4))
    b = _cloud_attack(eps=0.03, steps=3)(digits_model, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.x_adv, b.x_adv)


def test_adv_cloud_on_a_saliency_model_raises_its_loss():
    from advbench.models.sod import create_sod_model

    torch.manual_seed(0)
    model = create_sod_model("unet-sod", mean=(0.5,) * 3, std=(0.25,) * 3, base=4, depth=2).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    gt = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    masks = torch.zeros(2, 1, 1, 16, 16)
    before = SOD.loss(model(x), gt)
    result = run_adv_cloud(x, masks, lambda z: SOD.loss(model(z), gt), lambda z: SOD.success(model(z), gt),
                           budget=CloudBudget(eps_e=0.1, eps_n=0.03), steps=5)
    with torch.no_grad():
        after = SOD.loss(model(result.x_adv), gt)
    assert bool((after > before).all())
    with pytest.raises(InputError, match="cloud masks"):
        run_adv_cloud(x, torch.zeros(2, 1, 1, 8, 8), lambda z: z.sum((1, 2, 3)), lambda z: z[:, 0, 0, 0] > 9,
                      budget=CloudBudget())


# -- DefenseNet -------------------------------------------------------------------------------------
def test_defensenet_training_leaves_the_victim_bit_identical(digits_model, digits_test, tmp_path):
    x, y = digits_test
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    flags = [p.requires_grad for p in digits_model.parameters()]
    cfg = DefenseTrainConfig(epochs=1, batch_size=32, base=4, depth=1, attack_steps=2, eps_n=0.05)
    net, summary = train_defensenet(digits_model, x[:64], y[:64], CLASSIFICATION, cfg, progress=False)
    after = digits_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the victim's weights changed"
    assert [p.requires_grad for p in digits_model.parameters()] == flags
    assert not torch.equal(net(x[:4]), x[:4]), "DefenseNet never left the identity"
    path = save_defensenet(net, tmp_path / "dn.safetensors", victim_checkpoint=digits_model.checkpoint_file)
    again = load_defensenet(path)
    assert torch.equal(again(x[:4]), net(x[:4]))
    assert again.params["sha256"] and again.input_shape == (1, 8, 8) and summary["steps"] == 2
    with pytest.raises(CheckpointError, match="not a DefenseNet"):
        load_defensenet(digits_model.checkpoint_file)


def test_defense_for_another_input_shape_is_refused(digits_model):
    net = DefenseNet(channels=3, base=4, depth=1, input_shape=(3, 8, 8))
    with pytest.raises(InputError, match="victim takes"):
        DefendedModel(net, digits_model)
    with pytest.raises(ConfigError, match="lam"):
        DefenseTrainConfig(lam=-1)


def test_defense_flags_reach_the_records(digits_model, tmp_path):
    spec = RunSpec(model=digits_model.checkpoint_file, dataset="digits", attacks=["pgd"], eps=[0.1], n_samples=32,
                   attack_params={"pgd": {"steps": 3}}, defense="jpeg:quality=50")
    record = run_spec(spec, store=tmp_path / "r.db", progress=False).record
    assert record["config"]["defense"] == {"name": "jpeg", "params": {"quality": 50}, "differentiable": False,
                                           "bpda": True}
    assert record["metrics"]["defense"]["clean_accuracy_undefended"] is not None
    # black-box transfer: PGD made on the undefended model, judged by the defended one (recomputed here)
    from advbench import create_attack
    from advbench.datasets.evaluation_set import load_evaluation_set

    evaluated = load_evaluation_set("digits", n_samples=32, seed=0)  # the run's own class-balanced selection
    x, y = evaluated.x, evaluated.y
    from advbench.pipeline.experiment import batch_generator

    x_adv = create_attack("pgd", eps=0.1, steps=3)(digits_model, x, y, generator=batch_generator(0, 0)).x_adv
    with torch.no_grad():
        expected = float((DefendedModel(parse_defense("jpeg:quality=50"), digits_model)(x_adv).argmax(1) == y)
                         .float().mean())
    transfer = record["metrics"]["defense"]["transfer"]
    assert transfer["attacks"] == ["pgd"] and transfer["robust_accuracy"]["0.1"] == pytest.approx(expected)
    plain = RunSpec(model=digits_model.checkpoint_file, dataset="digits", attacks=["pgd"], eps=[0.1], n_samples=32,
                    attack_params={"pgd": {"steps": 3}})
    assert run_spec(plain, store=tmp_path / "r.db", progress=False).record["config_hash"] != record["config_hash"]


def test_defend_train_and_defended_sod_run(run_cli, tmp_path):
    from advbench.datasets.sod import load_sod_dataset
    from advbench.training.sod import save_sod_model, train_sod

    data = load_sod_dataset("synthetic-sod:n=24,size=16")
    model, _ = train_sod(data, epochs=1, batch_size=8, model_options={"base": 4, "depth": 2}, progress=False)
    victim = save_sod_model(model, tmp_path / "sod.safetensors")
    dn = tmp_path / "dn.safetensors"
    code, out, err = run_cli("defend", "train", "--victim", str(victim), "--dataset", "synthetic-sod:n=24,size=16",
                             "--out", str(dn), "--epochs", "1", "--batch-size", "8", "--attack-steps", "1",
                             "--base", "4", "--depth", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["checkpoint"] == str(dn) and parse_defense(f"defensenet:{dn}").params["sha256"]
    code, out, err = run_cli("run", "--model", str(victim), "--dataset", "synthetic-sod:n=24,size=16", "--attack",
                             "adv-cloud,pgd", "--param", "adv-cloud.steps=2", "--defense", f"defensenet:{dn}",
                             "--n-samples", "4", "--store", str(tmp_path / "r.db"), "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {"clean", "cloudy", "adv-cloud", "pgd", "defended clean", "defended adv-cloud",
            "defended adv-cloud (transfer)", "defended pgd (transfer)"} <= set(rows)
    assert rows["adv-cloud"]["mae"] >= rows["clean"]["mae"]
    code, _, err = run_cli("run", "--model", str(victim), "--dataset", "synthetic-sod:n=24,size=16", "--attack",
                           "square", "--store", str(tmp_path / "r.db"))
    assert code == 2 and "adv-cloud" in err
    # only the requested attack's rows, and a different record from the two-attack run
    code, out, err = run_cli("run", "--model", str(victim), "--dataset", "synthetic-sod:n=24,size=16", "--attack",
                             "pgd", "--steps", "2", "--n-samples", "4", "--store", str(tmp_path / "r.db"), "--json")
    assert code == 0, err
    only = json.loads(out)
    assert not only["skipped"] and "pgd" in only["rows"] and "adv-cloud" not in only["rows"]
    code, _, err = run_cli("run", "--model", str(victim), "--dataset", "synthetic-sod:n=24,size=16", "--attack",
                           "pgd", "--gamma", "2", "--store", str(tmp_path / "r.db"))
    assert code == 2 and "--gamma" in err
    code, _, err = run_cli("run", "--model", str(victim), "--dataset", "synthetic-sod:n=24,size=16", "--attack",
                           "pgd", "--device", "gpu", "--store", str(tmp_path / "r.db"))
    assert code == 2 and "--device 'gpu' is not a torch device" in err
