"""Robustness: attack contract, adversarial batches under DP-SGD, int8, evaluation."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedsim.cli import main
from fedsim.config import (
    AdversarialRoleConfig,
    MaliciousConfig,
    RolesConfig,
    UnreliableConfig,
    from_dict,
    to_yaml,
)
from fedsim.errors import ConfigError
from fedsim.models import build_model
from fedsim.robustness import ATTACKS, AttackParams, build_attack, perturbation_norm
from fedsim.robustness.quantize import quantize_static
from fedsim.robustness.report import report_section
from fedsim.robustness.training import replace_with_adversarial, replacement_mask
from fedsim.roles import assign_roles
from fedsim.workload import dataset_for

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)
EPS = 8 / 255
SHAPE = (1, 28, 28)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """600 training then 200 test images of the embedded PneumoniaMNIST (2 classes)."""
    cfg = from_dict({"dp": {"enabled": False}, "data": {"train_samples": 600, "test_samples": 200}})
    b = dataset_for(cfg.data, 0)
    x = torch.tensor(np.concatenate([b.train.x, b.test.x]))
    return x, torch.tensor(np.concatenate([b.train.y, b.test.y]))


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("mlp", SHAPE, 2)
    x, y = _digits()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:600]), y[:600]).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _trained() -> nn.Module:
    model = build_model("mlp", SHAPE, 2)
    model.load_state_dict(_trained_state())
    return model


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ the attack contract


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("training", [True, False])
def test_attack_contract(name: str, training: bool) -> None:
    params = AttackParams(epsilon=EPS, step_size=EPS / 4, steps=5)
    attack = build_attack(name, params)
    model = _trained().train(training)
    x, y = _digits()
    x, y = x[600:664].clone(), y[600:664].clone()
    x_before, y_before = x.clone(), y.clone()
    x_adv = attack(model, x, y, _gen(3))
    assert torch.equal(x, x_before) and torch.equal(y, y_before)  # inputs untouched
    assert all(m.training == training for m in model.modules())  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no parameter grads written
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(perturbation_norm(x_adv, x, attack.norm).max()) <= EPS + 1e-5
    assert torch.equal(x_adv, attack(model, x, y, _gen(3)))  # same generator, same result
    assert _accuracy(model, x_adv, y) < _accuracy(model, x, y)  # it does attack
    empty = attack(model, x[:0], y[:0], _gen(3))
    assert empty.shape == (0, *SHAPE)


def test_unknown_attack_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="fab, fgsm, pgd, pgd_l2"):
        build_attack("cw")


def test_pgd_hurts_more_than_random_noise_of_the_same_budget() -> None:
    model = _trained()
    x, y = _digits()
    x, y = x[600:], y[600:]
    clean = _accuracy(model, x, y)
    sign = torch.randint(0, 2, x.shape, generator=_gen(1)).float() * 2 - 1
    noisy = _accuracy(model, (x + EPS * sign).clamp(0, 1), y)
    pgd = build_attack("pgd", AttackParams(EPS, EPS / 4, 10))
    robust = _accuracy(model, pgd(model, x, y, _gen(2)), y)
    assert clean > 0.7
    assert noisy > clean - 0.05, (clean, noisy)  # random corners of the ε-cube barely matter
    assert robust < noisy - 0.1, (clean, noisy, robust)  # measured here: 0.78 → 0.775 vs 0.575


def test_fab_finds_small_perturbations() -> None:
    model = _trained()
    x, y = _digits()
    x, y = x[600:], y[600:]
    fab = build_attack("fab", AttackParams(EPS, EPS / 4, 10))
    x_adv = fab(model, x, y, _gen(0))
    fooled = (model(x_adv).argmax(1) != y) & (model(x).argmax(1) == y)
    assert int(fooled.sum()) > 10
    changed = perturbation_norm(x_adv, x, "linf") > 0
    assert bool((changed <= (model(x_adv).argmax(1) != y)).all())  # only successes are moved


# --------------------------------------------------------------- adversarial batches


def test_replacement_coin_does_not_couple_records() -> None:
    """The decoupling the DP argument needs: a record's chance of being attacked is p
    whatever the batch size, and the coins of different slots are independent — so adding
    a record to the batch changes the treatment of no other record (in distribution).
    A count rule round(p·|B|) fails both: with p = 0.5 a lone record is always attacked,
    in a batch of two exactly one of them is."""
    p, draws = 0.5, 20000
    gen = torch.Generator().manual_seed(0)
    for size in (1, 2, 3, 7):
        masks = torch.stack([replacement_mask(size, p, gen) for _ in range(draws)]).double()
        rate = masks.mean(0)
        assert torch.allclose(rate, torch.full((size,), p, dtype=torch.float64), atol=0.015)
        if size >= 2:  # independence: P(both) = p² and the count is Binomial(size, p)
            both = (masks[:, 0] * masks[:, 1]).mean()
            assert abs(float(both) - p * p) < 0.015
            counts = torch.bincount(masks.sum(1).long(), minlength=size + 1).double() / draws
            binom = torch.tensor([math.comb(size, k) * p**size for k in range(size + 1)])
            assert torch.allclose(counts, binom.double(), atol=0.015)
    assert not replacement_mask(5, 0.0, gen).any() and replacement_mask(5, 1.0, gen).all()
    with pytest.raises(ValueError):
        replacement_mask(4, 1.5, gen)


@pytest.mark.parametrize("relabel", [False, True])
def test_replace_with_adversarial(relabel: bool) -> None:
    model = _trained()
    x, y = _digits()
    x, y = x[600:640].clone(), y[600:640].clone()
    x0 = x.clone()
    attack = build_attack("pgd", AttackParams(EPS, EPS / 4, 5))
    xo, yo = replace_with_adversarial(model, x, y, 0.25, attack, _gen(0), relabel)
    assert torch.equal(x, x0)
    changed = (xo != x).flatten(1).any(1)
    assert 2 <= int(changed.sum()) <= 20  # Binomial(40, 0.25): mean 10
    if relabel:
        with torch.no_grad():
            pred = model.eval()(xo).argmax(1)
        assert torch.equal(yo[changed], pred[changed])
        assert bool((yo[changed] != y[changed]).any())
    else:
        assert torch.equal(yo, y)
    assert torch.equal(xo[~changed], x[~changed])


def test_adversarial_batches_under_opacus_leave_grad_samples_clean() -> None:
    from opacus import GradSampleModule

    from clients.opacus_adapter import plain_view

    model = GradSampleModule(build_model("cnn", SHAPE, 2))
    x, y = _digits()
    x, y = x[:16], y[:16]
    attack = build_attack("pgd", AttackParams(EPS, EPS / 4, 3))
    model.train()
    with plain_view(model) as plain:
        assert not isinstance(plain, GradSampleModule)
        xb, yb = replace_with_adversarial(plain, x, y, 0.4, attack, _gen(0), False)
    assert model.hooks_enabled and model.training
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    nn.functional.cross_entropy(model(xb), yb).backward()
    for p in model.parameters():
        assert p.grad_sample is not None and p.grad_sample.shape[0] == 16


def test_assign_roles_adversarial_keeps_other_roles() -> None:
    base = RolesConfig(UnreliableConfig(fraction=0.2), MaliciousConfig(fraction=0.1))
    with_adv = RolesConfig(
        UnreliableConfig(fraction=0.2),
        MaliciousConfig(fraction=0.1),
        AdversarialRoleConfig(fraction=0.3),
    )
    a, b = assign_roles(10, base, 3), assign_roles(10, with_adv, 3)
    assert b.count("adversarial") == 3
    assert all(ra == rb for ra, rb in zip(a, b, strict=True) if ra != "honest")
    two = assign_roles(2, RolesConfig(adversarial=AdversarialRoleConfig(fraction=0.5)), 0)
    assert sorted(two) == ["adversarial", "honest"]


def test_config_checks_role_fractions_and_attack_bounds() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(
            {
                "dp": {"enabled": False},
                "roles": {"adversarial": {"fraction": 0.6}, "malicious": {"fraction": 0.5}},
                "robustness": {
                    "adversarial_training": {"fraction": 1.2, "attack": {"name": "cw"}},
                    "evaluate": {"attacks": ["pgd", "nope"]},
                },
            }
        )
    text = "\n".join(info.value.problems)
    assert "robustness.adversarial_training.fraction must be <= 1" in text
    assert "robustness.adversarial_training.attack.name must be one of" in text
    assert "robustness.evaluate.attacks[1] must be one of" in text


# ------------------------------------------------------- DP accounting is unchanged


def _round_cfg(**robust: object) -> object:
    return from_dict(
        {
            "seed": 1,
            "rounds": 1,
            "data": {"num_clients": 2, "train_samples": 200, "test_samples": 50},
            "model": {"name": "mlp"},
            "client": {"batch_size": 32},
            "dp": {"enabled": True, "noise_multiplier": 1.0},
            **robust,
        }
    )


def test_adversarial_examples_do_not_change_the_accounting() -> None:
    from client_harness import simulated_round

    from fedsim.models import build_model as build

    plain = _round_cfg()
    adv = _round_cfg(
        robustness={"adversarial_training": {"fraction": 0.4}},
        roles={"adversarial": {"fraction": 0.5, "data_fraction": 0.3}},
    )
    bundle = dataset_for(plain.data, plain.seed)  # type: ignore[attr-defined]
    state = build("mlp", bundle.input_shape, bundle.num_classes).state_dict()
    for cid in (0, 1):
        a = simulated_round(plain, cid, state, 1)  # type: ignore[arg-type]
        b = simulated_round(adv, cid, state, 1)  # type: ignore[arg-type]
        assert a.ledger.to_json() == b.ledger.to_json()
        assert (a.noise_multiplier, a.sample_rate, a.epsilon) == (
            b.noise_multiplier,
            b.sample_rate,
            b.epsilon,
        )
        assert b.state_dict is not None and a.state_dict is not None
        assert any(not torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


# ------------------------------------------------------------- int8 and evaluation


def test_quantize_static_shrinks_cnn_and_keeps_the_float_model() -> None:
    model = build_model("cnn", (1, 28, 28), 2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calib = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    q = quantize_static(model, calib)
    assert 0.6 < q.size_reduction < 0.8
    assert q.quantized_ops.get("Conv2d") == 2 and q.quantized_ops.get("Linear") == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.tensor(calib[:8])
    assert torch.allclose(q.model(x), model(x), atol=0.2)
    with pytest.raises(ValueError):
        quantize_static(model, calib[:0])


def _fake_run(path: Path, dp: bool, seed: int) -> Path:
    cfg = from_dict(
        {
            "name": f"fake-{int(dp)}",
            "seed": 0,
            "data": {"train_samples": 300, "test_samples": 60},
            "model": {"name": "mlp"},
            "dp": {"enabled": dp, "noise_multiplier": 1.0} if dp else {"enabled": False},
            "robustness": {"evaluate": {"attacks": ["fgsm", "pgd"], "seeds": [0, 1]}},
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    torch.manual_seed(seed)
    model = build_model("mlp", bundle.input_shape, bundle.num_classes)
    x, y = torch.tensor(bundle.train.x), torch.tensor(bundle.train.y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(to_yaml(cfg, {"fedsim_version": "test"}))
    torch.save(model.state_dict(), path / "model.pt")
    (path / "summary.json").write_text(json.dumps({"name": cfg.name}))
    return path


def test_evaluate_cli_writes_table_summary_and_report(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "a", dp=True, seed=0)
    b = _fake_run(tmp_path / "b", dp=False, seed=1)
    assert report_section(a) is None
    assert main(["evaluate", str(a), "--transfer-from", str(b), "--seeds", "0", "1"]) == 0
    doc = json.loads((a / "robustness.json").read_text())
    assert doc["test_examples"] == 60  # the whole (sized) test split
    rows = doc["rows"]
    # 2 attacks × {own, transfer} generators × {float, int8}
    assert len(rows) == 8
    modes = {(r["precision"], r["attack"], r["mode"], r["generator"]) for r in rows}
    assert ("float", "pgd", "white-box", "own float model") in modes
    assert ("int8", "pgd", "transfer", "own float model") in modes
    assert ("int8", "fgsm", "transfer", "non-DP (fake-0)") in modes
    pgd = [r for r in rows if r["attack"] == "pgd"]
    assert all(len(r["robust_accuracy_per_seed"]) == 2 for r in pgd)
    assert all(len(r["robust_accuracy_per_seed"]) == 1 for r in rows if r["attack"] == "fgsm")
    assert all(r["robust_accuracy_mean"] <= r["clean_accuracy"] + 1e-9 for r in pgd)
    summary = json.loads((a / "summary.json").read_text())
    assert "robust_float_pgd_white_box" in summary["robustness"]
    assert 0.6 < summary["robustness"]["int8_size_reduction"] < 0.8
    assert (a / "robustness.csv").read_text().count("\n") == 9
    section = report_section(a)
    assert section is not None and "| DP σ=1 (fake-1) | int8 | pgd | transfer |" in section
    assert "no input gradients" in section


def test_evaluate_cli_rejects_bad_run_dirs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err


@pytest.mark.e2e
def test_run_with_attacker_adversarial_training_and_end_of_run_evaluation(
    tmp_path: Path,
) -> None:
    from fedsim.run import run_experiment

    cfg = from_dict(
        {
            "name": "robust-e2e",
            "rounds": 1,
            "data": {"num_clients": 2, "train_samples": 120, "test_samples": 40},
            "model": {"name": "mlp"},
            "client": {"batch_size": 32, "lr": 0.3},
            "dp": {"enabled": True, "epsilon": 3.0, "delta": 1e-4},
            "roles": {"adversarial": {"fraction": 0.5, "data_fraction": 0.4}},
            "robustness": {
                "adversarial_training": {"fraction": 0.2},
                "evaluate": {"enabled": True, "attacks": ["fgsm"], "seeds": [0]},
            },
        }
    )
    summary = run_experiment(cfg, tmp_path)
    roles = sorted(c["role"] for c in summary["clients"].values())
    assert roles == ["adversarial", "honest"]
    assert all(c["rounds_trained"] == 1 for c in summary["clients"].values())
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["robustness"] == summary["robustness"]
    assert "robust_float_fgsm_white_box" in on_disk["robustness"]
    assert (tmp_path / "robustness.csv").is_file()


def test_evaluate_with_several_transfer_sources_computes_white_box_once(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "a", dp=True, seed=0)
    b = _fake_run(tmp_path / "b", dp=False, seed=1)
    c = _fake_run(tmp_path / "c", dp=False, seed=2)  # same label as b: told apart by path
    args = ["evaluate", str(a), "--transfer-from", str(b), str(c), "--attacks", "fgsm"]
    assert main([*args, "--no-quantize"]) == 0
    doc = json.loads((a / "robustness.json").read_text())
    assert doc["transfer_from"] == [str(b), str(c)]
    generators = [r["generator"] for r in doc["rows"]]
    assert generators == [
        "own float model",
        f"non-DP (fake-0) at {b}",
        f"non-DP (fake-0) at {c}",
    ]
    assert [r["mode"] for r in doc["rows"]] == ["white-box", "transfer", "transfer"]
