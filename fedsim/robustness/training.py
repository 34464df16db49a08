"""Adversarial examples inside local training (PSREval, federated).

Two uses, both replacing each sample of a local batch independently with probability
``p`` (never adding samples):

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
on sample ``i`` only. Whether a slot is replaced is an independent coin of probability
``p`` per slot (:func:`replacement_mask`), drawn from the client's secret noise stream:
since the coins are i.i.d. and independent of the data, they can be attached to records
instead of positions without changing any output distribution, so the treatment of a
record never depends on which other records were sampled. Hence (1) the Poisson-sampled
batch keeps its membership and size — each sampled record contributes exactly one (clean
or adversarial) slot, (2) Opacus clips each slot's per-sample gradient to ``C`` as
before, and (3) adding, removing or replacing one record changes exactly one slot. The
sensitivity, the sample rate ``q``, σ and the number of steps are unchanged, so the
accountant records the same ``SubsampledGaussian(σ, q, steps)`` events as without
adversarial examples.

(A rule such as "replace ``round(p·|B|)`` samples chosen by a permutation of the batch"
would not do: the count depends on the batch size, so one added record changes which
*other* records are attacked and the clipped sum can move by 3C instead of C.)
"""

from __future__ import annotations

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


def replacement_mask(batch_size: int, fraction: float, generator: torch.Generator) -> Tensor:
    """Which of ``batch_size`` slots are replaced: an independent coin of probability
    ``fraction`` per slot (boolean tensor on the generator's device)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    draws = torch.rand(batch_size, generator=generator, device=generator.device)
    return draws < fraction


def replace_with_adversarial(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    fraction: float,
    attack: Attack,
    generator: torch.Generator,
    relabel: bool,
) -> tuple[Tensor, Tensor]:
    """A copy of the batch ``(x, y)`` in which each sample is attacked with prob. ``fraction``.

    The replaced samples keep their true labels (``relabel=False``, adversarial training)
    or get ``model``'s prediction on the adversarial example (``relabel=True``, the
    train-time attacker). ``x`` and ``y`` are not modified; ``model`` must be a plain
    module (no per-sample-gradient hooks) and its train/eval mode is restored.
    """
    idx = torch.nonzero(replacement_mask(len(x), fraction, generator)).flatten().to(x.device)
    if len(idx) == 0:
        return x, y
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


def plan_for(
    cfg: Config, client_id: int, server_round: int, noise_root: int | None = None
) -> AdversarialBatches | None:
    """The batch replacement of client ``client_id`` in ``server_round``.

    Adversarial clients attack (their role wins over adversarial training); every other
    client does adversarial training when ``robustness.adversarial_training.fraction > 0``.
    ``noise_root`` seeds the coins and the attacks' randomness (the client's secret root
    on a deployed site; ``cfg.seed`` when ``None``).
    """
    root = cfg.seed if noise_root is None else noise_root
    gen = torch_generator(root, "adversarial-batches", client_id, server_round)
    if client_role(cfg, client_id) == "adversarial":
        adv = cfg.roles.adversarial
        if adv.data_fraction == 0:
            return None
        return AdversarialBatches(adv.data_fraction, attack_from_config(adv.attack), True, gen)
    at = cfg.robustness.adversarial_training
    if at.fraction == 0:
        return None
    return AdversarialBatches(at.fraction, attack_from_config(at.attack), False, gen)
