"""The attack contract shared by every evasion attack, and the attack registry.

An attack is a callable ``attack(model, x, y, generator) -> x_adv`` (the contract of
torchattacks' ``Attack.forward``, made explicit here):

- ``model`` is put in eval mode for the attack and its previous mode is restored;
  parameter ``.grad`` fields are never written (input gradients come from
  :func:`torch.autograd.grad`);
- ``x`` (float, NCHW, data range [0, 1]) and ``y`` are never modified;
- ``x_adv`` has the shape and dtype of ``x``, lies in the data range [0, 1] and within the
  attack's ε-ball around ``x`` (L∞ or L2, see :attr:`Attack.norm`);
- all randomness (random starts) comes from the passed :class:`torch.Generator`, so the
  same generator state gives the same ``x_adv``.

An attack is a subclass of the frozen dataclass :class:`Attack` (which holds the budget,
:class:`AttackParams`) that sets the class attributes ``name``, ``norm`` and
``stochastic`` and implements :meth:`Attack._perturb`; :meth:`Attack.__call__` enforces
the data range and the ε-ball.
:data:`ATTACKS` is the registry of attack classes: add one with the :func:`register` class
decorator (in a module that :mod:`fedsim.robustness` imports); :func:`build_attack`
builds one by name and its unknown-name error lists the valid names.
``tests/test_contracts.py`` checks every registered attack against the contract above.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from fedsim.registry import Registry

Norm = Literal["linf", "l2"]

#: Data range of every fedsim input (images scaled to [0, 1], no normalisation layer).
DATA_MIN, DATA_MAX = 0.0, 1.0


@dataclass(frozen=True)
class AttackParams:
    """Budget shared by all attacks: ball radius, step size and iterations.

    For the L2 attack the same numbers are L2 radii/steps (raise them, e.g. ε = 0.5).
    """

    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"attack epsilon must be > 0; got {self.epsilon}")
        if not self.step_size > 0:
            raise ValueError(f"attack step_size must be > 0; got {self.step_size}")
        if self.steps < 1:
            raise ValueError(f"attack steps must be >= 1; got {self.steps}")


@dataclass(frozen=True)
class Attack:
    """Base class: subclasses implement :meth:`_perturb`; :meth:`__call__` enforces the contract."""

    params: AttackParams = AttackParams()
    norm: ClassVar[Norm] = "linf"
    name: ClassVar[str] = "attack"
    #: Whether the result depends on the generator (random start); deterministic attacks
    #: are evaluated once instead of once per seed.
    stochastic: ClassVar[bool] = False

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Adversarial version of ``x`` against ``model`` (see the module docstring)."""
        if len(x) == 0:
            return x.detach().clone()
        x0 = x.detach().clone()
        with eval_mode(model):
            x_adv = self._perturb(model, x0, y.detach(), generator)
        return project(x_adv.detach(), x0, self.params.epsilon, self.norm).to(x.dtype)

    def _perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Tensor:
        raise NotImplementedError


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore every submodule's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """∇ₓ of the summed cross-entropy; writes no parameter ``.grad``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x])
    return grad.detach()


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: Tensor, x: Tensor, epsilon: float, norm: Norm) -> Tensor:
    """Project ``x_adv`` into the ε-ball around ``x`` and the data range [0, 1].

    For L∞ the box intersection is exact; for L2 the ball projection comes first, then
    clamping to the data range (which can only shrink the perturbation's L2 norm).
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        n = _flat_norm(delta)
        delta = delta * torch.clamp(epsilon / (n + 1e-12), max=1.0)
    return (x + delta).clamp(DATA_MIN, DATA_MAX)


def perturbation_norm(x_adv: Tensor, x: Tensor, norm: Norm) -> Tensor:
    """Per-sample L∞ or L2 norm of ``x_adv - x``."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


ATTACKS: Registry[type[Attack]] = Registry("attack", "attack name")
"""Attack classes by ``name`` (``fgsm``, ``pgd``, ``pgd_l2``, ``fab``)."""


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: add an attack to :data:`ATTACKS` under ``cls.name`` (once)."""
    return ATTACKS.register(cls.name)(cls)


def build_attack(name: str, params: AttackParams | None = None) -> Attack:
    """The attack registered as ``name`` with ``params`` (defaults: 8/255, 2/255, 10 steps).

    Raises
    ------
    ValueError
        If no attack has that name (the message lists the valid names).
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS.names())}")
    return ATTACKS.get(name)(params or AttackParams())


AttackFn = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]
