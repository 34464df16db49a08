"""Adversarial examples inside local training (PSREval, federated).

Two uses, both replacing a fraction ``p`` of every local batch (never adding samples):

- **adversarial training** (``robustness.adversarial_training``): the replaced samples are
  adversarial versions of themselves with their *true* labels;
- **train-time attacker** (clients with role ``adversarial``, ``roles.adversarial``): the
  replaced samples are adversarial versions labelled with the *model's own prediction* on
  them, i.e. the wrong label the attack induced — poisoning the federation.

Privacy under DP-SGD. The replaced sample ``x_i' = A(θ, x_i, y_i, g)`` is a function of
the one private sample it replaces, the current model ``θ`` (the global model plus this
round's private updates, already post-processed DP output) and randomness ``g`` that does
not depend on the data. The model is in eval mode and every fedsim model normalises
per sample (GroupNorm, no BatchNorm), so the loss gradient with respect to ``x_i`` depends
on sample ``i`` only. Hence (1) the Poisson-sampled batch keeps its membership and size —
each sampled record contributes exactly one (clean or adversarial) slot, (2) Opacus clips
each slot's per-sample gradient to ``C`` as before, and (3) adding or removing one record
changes exactly one slot. The sensitivity, the sample rate ``q``, σ and the number of
steps are unchanged, so the accountant records the same ``SubsampledGaussian(σ, q,
steps)`` events as without adversarial examples: the accounting does not change at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedsim.config import AttackConfig, Config
from fedsim.robustness.base import Attack, AttackParams, build_attack, eval_mode
from fedsim.roles import client_role
from fedsim.seeding import torch_generator


def attack_from_config(attack: AttackConfig) -> Attack:
    """The :class:`~fedsim.robustness.base.Attack` an :class:`AttackConfig` describes."""
    return build_attack(attack.name, AttackParams(attack.epsilon, attack.step_size, attack.steps))


def replaced_count(fraction: float, batch_size: int) -> int:
    """How many of ``batch_size`` samples are replaced: ``round(fraction · B)``, half up."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    return min(batch_size, math.floor(fraction * batch_size + 0.5))


def replace_with_adversarial(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    fraction: float,
    attack: Attack,
    generator: torch.Generator,
    relabel: bool,
) -> tuple[Tensor, Tensor]:
    """A copy of the batch ``(x, y)`` with ``round(fraction · B)`` random samples attacked.

    The replaced samples keep their true labels (``relabel=False``, adversarial training)
    or get ``model``'s prediction on the adversarial example (``relabel=True``, the
    train-time attacker). ``x`` and ``y`` are not modified; ``model`` must be a plain
    module (no per-sample-gradient hooks) and its train/eval mode is restored.
    """
    k = replaced_count(fraction, len(x))
    if k == 0:
        return x, y
    idx = torch.randperm(len(x), generator=generator, device=generator.device)[:k].to(x.device)
    x_adv = attack(model, x[idx], y[idx], generator)
    x_out, y_out = x.clone(), y.clone()
    x_out[idx] = x_adv
    if relabel:
        with eval_mode(model), torch.no_grad():
            y_out[idx] = model(x_adv).argmax(dim=1).to(y.dtype)
    return x_out, y_out


@dataclass(frozen=True)
class AdversarialBatches:
    """What one client does to its batches this round (``None`` from :func:`plan_for`
    when it does nothing)."""

    fraction: float
    attack: Attack
    relabel: bool
    generator: torch.Generator

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Apply to one batch; ``model`` is the plain view of the model being trained."""
        return replace_with_adversarial(
            model, x, y, self.fraction, self.attack, self.generator, self.relabel
        )


def plan_for(cfg: Config, client_id: int, server_round: int) -> AdversarialBatches | None:
    """The batch replacement of client ``client_id`` in ``server_round``.

    Adversarial clients attack (their role wins over adversarial training); every other
    client does adversarial training when ``robustness.adversarial_training.fraction > 0``.
    """
    gen = torch_generator(cfg.seed, "adversarial-batches", client_id, server_round)
    if client_role(cfg, client_id) == "adversarial":
        adv = cfg.roles.adversarial
        if adv.data_fraction == 0:
            return None
        return AdversarialBatches(adv.data_fraction, attack_from_config(adv.attack), True, gen)
    at = cfg.robustness.adversarial_training
    if at.fraction == 0:
        return None
    return AdversarialBatches(at.fraction, attack_from_config(at.attack), False, gen)
