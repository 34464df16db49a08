"""Per-sample gradient norms of the clipping study's tanh CNN, and what each clipping keeps.

Usage::

    PYTHONPATH=. python experiments/clipping/grad_norms.py experiments/clipping_study.yaml \
        --bounds 2 4 8 --out experiments/results/clipping_study_v2/grad_norms.md

Loads the study's data exactly as a run does (same training subset and IID partition), builds
the global model of seed ``cfg.seed`` and measures, on 512 samples of client 0's data:

- the distribution of the total per-sample gradient norm (quantiles) and the median norm of
  each trainable tensor (what ``per_layer_adaptive`` bounds are proportional to; the run's
  server takes the medians on its validation split instead, which this also reports);
- for each bound ``S`` in ``--bounds`` and each clipping variant (flat, per-layer uniform
  ``S/√m``, per-layer adaptive ``S_j ∝`` validation medians): the share of samples clipped,
  the mean clip factor ``‖clip(g)‖ / ‖g‖`` and the *signal factor* ``‖mean clip(g)‖ /
  ‖mean g‖`` — the length of the clipped step relative to the unclipped one, i.e. the
  effective learning rate is ``lr ×`` that factor — and the cosine between the two means.

It does so at initialisation and after 32, 64 and 160 emulated DP-SGD steps of one client
(flat clipping at the config's ``dp.max_grad_norm`` and σ, the config's lr and momentum,
batches of ``client.batch_size``: one, two and five rounds of the study's client), so the
numbers follow the model the clients actually see during a run. Per-sample gradients come
from ``torch.func`` (vmap of grad), the same way the server measures its adaptive bounds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.clipping import (
    adaptive_thresholds,
    per_tensor_grad_magnitudes,
    trainable_tensor_names,
    uniform_thresholds,
)
from fedsim.config import Config, apply_overrides, from_dict, read_yaml
from fedsim.models import build_model
from fedsim.sweep import SWEEP_KEY
from fedsim.workload import dataset_for, partitions_for

SAMPLES = 512
CHUNK = 128
CHECKPOINTS = (0, 32, 64, 160)


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients, flattened and concatenated over the trainable tensors: ``(n, d)``."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    rows = []
    for start in range(0, len(x), CHUNK):
        g = vmap(grad(loss_of), in_dims=(None, 0, 0))(
            params, x[start : start + CHUNK], y[start : start + CHUNK]
        )
        rows.append(torch.cat([g[n].flatten(start_dim=1) for n in params], dim=1))
    return torch.cat(rows)


def tensor_slices(model: nn.Module) -> list[slice]:
    """Where each trainable tensor sits in the flattened per-sample gradient."""
    out, at = [], 0
    for _, p in model.named_parameters():
        if p.requires_grad:
            out.append(slice(at, at + p.numel()))
            at += p.numel()
    return out


def clip(g: torch.Tensor, slices: list[slice], bounds: list[float] | float) -> torch.Tensor:
    """Per-sample clipped gradients: one bound on the whole row, or one per tensor."""
    if isinstance(bounds, float):
        factor = (bounds / (g.norm(dim=1) + 1e-12)).clamp(max=1.0)
        return g * factor[:, None]
    parts = []
    for s, b in zip(slices, bounds, strict=True):
        part = g[:, s]
        factor = (b / (part.norm(dim=1) + 1e-12)).clamp(max=1.0)
        parts.append(part * factor[:, None])
    return torch.cat(parts, dim=1)


def effect(g: torch.Tensor, clipped: torch.Tensor) -> dict[str, float]:
    """Share clipped, mean clip factor, signal factor and cosine of the mean gradients."""
    norms, cnorms = g.norm(dim=1), clipped.norm(dim=1)
    mean, cmean = g.mean(0), clipped.mean(0)
    return {
        "clipped": float((cnorms < norms * (1 - 1e-6)).float().mean()),
        "factor": float((cnorms / norms).mean()),
        "signal": float(cmean.norm() / mean.norm()),
        "cosine": float(cmean @ mean / (cmean.norm() * mean.norm())),
    }


def dpsgd_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    *,
    bound: float,
    sigma: float,
    lr: float,
    momentum: float,
    batch: int,
    gen: torch.Generator,
) -> None:
    """``steps`` flat-clipped DP-SGD steps (noise std ``σ·S`` on the sum), in place."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    slices = tensor_slices(model)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        g = clip(per_sample_grads(model, x[idx], y[idx]), slices, bound)
        total = g.sum(0) + sigma * bound * torch.randn(g.shape[1], generator=gen)
        step = total / batch
        for p, s in zip(params, slices, strict=True):
            p.grad = step[s].view_as(p).clone()
        opt.step()


def load_base(path: Path, overrides: list[str]) -> Config:
    """The config of ``path`` without its ``sweep:`` section, with ``-o`` overrides."""
    raw = read_yaml(path)
    raw.pop(SWEEP_KEY, None)
    return from_dict(apply_overrides(raw, overrides))


def measure(cfg_path: Path, bounds: list[float], overrides: list[str]) -> str:
    cfg = load_base(cfg_path, overrides)
    bundle = dataset_for(cfg.data, cfg.seed)
    part = bundle.train.subset(partitions_for(cfg.data, cfg.seed)[0])
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(part.y), size=min(SAMPLES, len(part.y)), replace=False))
    x = torch.from_numpy(np.asarray(part.x))
    y = torch.from_numpy(np.asarray(part.y)).long()
    xs, ys = x[pick], y[pick]
    vpick = np.sort(rng.choice(len(bundle.val.y), size=cfg.dp.adaptive_samples, replace=False))
    vx = torch.from_numpy(np.asarray(bundle.val.x[vpick]))
    vy = torch.from_numpy(np.asarray(bundle.val.y[vpick])).long()

    model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=cfg.seed)
    names = trainable_tensor_names(model)
    slices = tensor_slices(model)
    gen = torch.Generator().manual_seed(0)
    sigma = cfg.dp.noise_multiplier or 1.0
    out = [
        f"Per-sample gradient norms of `{cfg.model.name}` on {len(pick)} samples of client 0 "
        f"(`{cfg_path}`, seed {cfg.seed}); training between checkpoints: flat DP-SGD, "
        f"S = {cfg.dp.max_grad_norm}, σ = {sigma}, lr {cfg.client.lr}, momentum "
        f"{cfg.client.momentum}, batch {cfg.client.batch_size}.",
        "",
        "| DP-SGD steps | total norm: 10% | 25% | median | 75% | 90% |",
        "|---|---|---|---|---|---|",
    ]
    per_tensor_rows: list[tuple[int, list[float], list[float]]] = []
    effect_rows: list[tuple[int, float, str, dict[str, float], float | list[float]]] = []
    done = 0
    for step in CHECKPOINTS:
        dpsgd_steps(
            model,
            x,
            y,
            step - done,
            bound=cfg.dp.max_grad_norm,
            sigma=sigma,
            lr=cfg.client.lr,
            momentum=cfg.client.momentum,
            batch=cfg.client.batch_size,
            gen=gen,
        )
        done = step
        g = per_sample_grads(model, xs, ys)
        q = torch.quantile(g.norm(dim=1), torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9]))
        out.append(f"| {step} | " + " | ".join(f"{v:.2f}" for v in q.tolist()) + " |")
        train_median = [float(g[:, s].norm(dim=1).median()) for s in slices]
        val_median = per_tensor_grad_magnitudes(model, vx, vy)
        per_tensor_rows.append((step, train_median, val_median))
        for bound in bounds:
            variants: dict[str, float | list[float]] = {
                "flat": float(bound),
                "per_layer_uniform": uniform_thresholds(bound, len(names)),
                "per_layer_adaptive": adaptive_thresholds(bound, val_median),
            }
            for variant, b in variants.items():
                effect_rows.append((step, bound, variant, effect(g, clip(g, slices, b)), b))

    out += [
        "",
        "Median per-sample gradient norm of each trainable tensor (client data / server "
        "validation split, the latter sets the adaptive bounds):",
        "",
        "| tensor | " + " | ".join(f"step {s}" for s, _, _ in per_tensor_rows) + " |",
        "|---|" + "---|" * len(per_tensor_rows),
    ]
    for i, name in enumerate(names):
        cells = [f"{t[i]:.3g} / {v[i]:.3g}" for _, t, v in per_tensor_rows]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "What each variant keeps at bound S: share of samples clipped, mean clip factor "
        "‖clip(g)‖/‖g‖, signal factor ‖mean clip(g)‖/‖mean g‖ (effective lr = lr × it) and "
        "cosine(mean clip(g), mean g); bounds: S (flat) or the three largest per-tensor "
        "bounds and the smallest.",
        "",
        "| DP-SGD steps | S | variant | clipped | clip factor | signal factor | cosine | bounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step, bound, variant, e, b in effect_rows:
        if isinstance(b, float):
            shown = f"{b:.3g}"
        else:
            top = sorted(zip(b, names, strict=True), reverse=True)[:3]
            shown = ", ".join(f"{n} {v:.2g}" for v, n in top)
            shown += f"; min {min(b):.2g}"
        out.append(
            f"| {step} | {bound:g} | {variant} | {e['clipped']:.2f} | {e['factor']:.3f} | "
            f"{e['signal']:.3f} | {e['cosine']:.3f} | {shown} |"
        )
    m = len(names)
    out += ["", f"m = {m} trainable tensors: uniform bound S/√m = S × {1 / math.sqrt(m):.3f}."]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--bounds", type=float, nargs="+", default=[2.0])
    parser.add_argument("-o", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    text = measure(args.config, args.bounds, args.overrides)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
