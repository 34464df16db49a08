"""Step time of Opacus DP-SGD with fedsim's secure mode (OS CSPRNG) vs seeded torch RNG.

Prints the median milliseconds per DP-SGD step (forward, backward, clip, noise, update)
of fedsim's default ``cnn`` (28×28 grey inputs, 2 classes, flat clipping) with
``make_private(secure=False)`` and ``secure=True``, for per-sample-gradient hooks and
ghost clipping, plus the time of the noise draw alone. Each configuration's median over
``--steps`` steps is taken ``--repeats`` times, the four configurations alternating, and
the median of those is reported, so that a busy machine slows all alike.

    PYTHONPATH=. python benchmarks/secure_rng.py [--batch 64] [--steps 20] [--repeats 3]
        [--threads 1] [--json results.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from benchtools import write_json
from ghost_clipping import time_steps  # the same DP-SGD step timer (benchmarks/ on sys.path)

from clients.secure_rng import secure_normal
from fedsim.models import build_model

MODES = ("hooks", "ghost")


def time_noise(shapes: list[torch.Size], secure: bool, repeats: int) -> float:
    """Median seconds to draw one step's noise for tensors of ``shapes``."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for shape in shapes:
            if secure:
                secure_normal(shape, 2.0, dtype=torch.float32, device="cpu")
            else:
                torch.normal(0, 2.0, size=shape, generator=gen)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    shapes = [p.shape for p in build_model("cnn", (1, 28, 28), 2).parameters()]
    n_params = sum(s.numel() for s in shapes)
    print(
        f"cnn ({n_params} parameters), batch {args.batch}, {args.steps} steps x "
        f"{args.repeats} repeats, {args.threads} thread(s), torch {torch.__version__}"
    )
    runs: dict[str, dict[str, list[float]]] = {m: {"plain": [], "secure": []} for m in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            for secure in (False, True):
                seconds = time_steps("cnn", mode, args.batch, args.steps, secure=secure, classes=2)
                runs[mode]["secure" if secure else "plain"].append(seconds)
    results: dict[str, Any] = {}
    for mode in MODES:
        plain, secure = (statistics.median(runs[mode][k]) for k in ("plain", "secure"))
        results[mode] = {
            "plain_ms": plain * 1e3,
            "secure_ms": secure * 1e3,
            "secure_over_plain": secure / plain,
            "runs_ms": {k: [t * 1e3 for t in v] for k, v in runs[mode].items()},
        }
        print(
            f"{mode}: plain {plain * 1e3:.1f} ms/step, secure {secure * 1e3:.1f} ms/step, "
            f"secure/plain {secure / plain:.2f}"
        )
    noise = {k: time_noise(shapes, k == "secure", 3 * args.steps) for k in ("plain", "secure")}
    print(
        f"noise draw alone ({n_params} values): torch.normal {noise['plain'] * 1e3:.1f} ms, "
        f"secure_normal {noise['secure'] * 1e3:.1f} ms"
    )
    if args.json is not None:
        payload = {
            "model": "cnn",
            "parameters": n_params,
            "batch": args.batch,
            "steps": args.steps,
            "repeats": args.repeats,
            "threads": args.threads,
            "torch": torch.__version__,
            "step_time": results,
            "noise_ms": {k: v * 1e3 for k, v in noise.items()},
        }
        write_json(payload, args.json)


if __name__ == "__main__":
    main()
