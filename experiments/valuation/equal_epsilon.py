"""σ of the pruned arms of Table 1 v2, so that pruned and unpruned arms spend the same ε.

fedsim calibrates σ for the planned schedule (every round on all ``n`` examples); a client
that prunes then trains at the larger rate ``q' = 1/⌈n'/B⌉`` with that σ and spends *more*
than the target (the ranking itself releases nothing: "Pruning" in the README). Table 1 v2
therefore fixes the pruned arms' σ (``dp.noise_multiplier``) to the smallest σ whose whole
schedule — the warm-up rounds at ``q``, the rest at ``q'`` — spends the unpruned arm's
target ``dp.epsilon``, under the same accountant and relation. The runs' logged ε confirm
it (``max ε`` in the table).

Usage (prints σ and checks the one written in the pruned config; further ``KEY=VALUE``
arguments override both configs, as ``fedsim sweep -o`` does)::

    PYTHONPATH=. python experiments/valuation/equal_epsilon.py \
        experiments/valuation/table1_v2_baseline.yaml experiments/valuation/table1_v2.yaml
    PYTHONPATH=. python experiments/valuation/equal_epsilon.py \
        experiments/valuation/table1_v2_baseline.yaml experiments/valuation/table1_v2.yaml \
        dp.epsilon=8 dp.max_epsilon=8
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from fedsim.config import Config, from_dict
from fedsim.config.io import apply_overrides, read_yaml
from fedsim.privacy.accounting import Accounting, SubsampledGaussian, dp_sgd_schedule
from fedsim.privacy.planning import plan_dp_sgd, steps_per_round
from fedsim.valuation.local import prune_indices


def _config(path: str, overrides: list[str]) -> Config:
    raw = apply_overrides(read_yaml(Path(path)), overrides)
    raw.pop("sweep", None)
    return from_dict(raw)


def pruned_events(cfg: Config, sigma: float, n: int) -> list[SubsampledGaussian]:
    """The DP-SGD events of a client of ``n`` examples that prunes as ``cfg`` says."""
    prune = cfg.valuation.prune
    kept = n - len(prune_indices(np.arange(n, dtype=float), prune.fraction, prune.side))
    events = []
    for size, rounds in ((n, prune.warmup_rounds), (kept, cfg.rounds - prune.warmup_rounds)):
        schedule = dp_sgd_schedule(size, cfg.client.batch_size)
        steps = steps_per_round(cfg, schedule.steps_per_epoch) * rounds
        events.append(SubsampledGaussian(sigma, schedule.sample_rate, steps))
    return events


def main() -> None:
    overrides = sys.argv[3:]
    # the baseline calibrates σ to the common target, the pruned config fixes σ
    base = _config(sys.argv[1], [o for o in overrides if not o.startswith("dp.noise_multiplier=")])
    pruned = _config(sys.argv[2], [o for o in overrides if not o.startswith("dp.epsilon=")])
    if base.dp.epsilon is None or base.data.train_samples is None:
        raise SystemExit(
            f"{sys.argv[1]}: needs dp.epsilon (the common target) and data.train_samples"
        )
    n = base.data.train_samples // base.data.num_clients  # IID: equal shares
    accounting = Accounting.of(base.dp)
    sigma0 = plan_dp_sgd(base, n).noise_multiplier

    def spend(sigma: float) -> float:
        return accounting.epsilon(pruned_events(pruned, sigma, n))

    lo, hi = sigma0, 2 * sigma0
    while hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spend(mid) > base.dp.epsilon else (lo, mid)
    hi = math.ceil(hi * 1e4) / 1e4  # as written in a config: rounded up, never spends more
    print(f"n = {n} per client, batch {base.client.batch_size}, {base.rounds} rounds")
    print(f"unpruned: sigma {sigma0:.4f} spends {base.dp.epsilon} (dp.epsilon)")
    print(f"pruned at the unpruned sigma would spend {spend(sigma0):.3f}")
    print(f"pruned: sigma {hi:.4f} spends {spend(hi):.4f}")
    given = pruned.dp.noise_multiplier
    if given is not None:
        print(f"{sys.argv[2]}: dp.noise_multiplier {given} spends {spend(given):.4f}")


if __name__ == "__main__":
    main()
