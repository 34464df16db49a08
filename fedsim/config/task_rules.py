"""Rules of the regression task and of the functional mechanism (``client.mechanism``).

A regression dataset (``tabular``, ``diabetes``) has numeric targets: no classes to split
by or to flip into, and the label-based parts of fedsim (valuation scores, the privacy
audit's canaries, evasion attacks, per-layer clipping estimates) are defined for
classifiers only. The functional mechanism replaces DP-SGD on clients whose model has a
functional head; its ε is stated under replace-one only (its batches are a partition of
the client's n records, n public).
"""

from __future__ import annotations

from fedsim.config.schema import FUNCTIONAL_MODELS, TABULAR_MODELS, Config


def _dp_sgd_features(cfg: Config) -> list[str]:
    """The settings on in ``cfg`` that need DP-SGD's per-sample scores and gradients."""
    on = {
        "valuation.enabled": cfg.valuation.enabled,
        "valuation.prune.enabled": cfg.valuation.prune.enabled,
        "audit.enabled": cfg.audit.enabled,
    }
    return [setting for setting, enabled in on.items() if enabled]


def _adversarial_features(cfg: Config) -> list[str]:
    """The settings on in ``cfg`` that make adversarial examples during training."""
    on = {
        "robustness.adversarial_training.fraction > 0": (
            cfg.robustness.adversarial_training.fraction > 0
        ),
        "roles.adversarial.fraction > 0": cfg.roles.adversarial.fraction > 0,
    }
    return [setting for setting, enabled in on.items() if enabled]


def _label_features(cfg: Config) -> list[str]:
    """The settings on in ``cfg`` that need class labels."""
    evaluate = ["robustness.evaluate.enabled"] if cfg.robustness.evaluate.enabled else []
    return [*_dp_sgd_features(cfg), *evaluate, *_adversarial_features(cfg)]


def regression_checks(cfg: Config) -> list[str]:
    """What a regression dataset cannot be combined with."""
    if cfg.task != "regression":
        return []
    data = cfg.data.name
    problems = []
    if cfg.data.partition != "iid":
        problems.append(
            f"data.partition must be 'iid' for the regression dataset {data!r} (dirichlet and "
            f"shards split by class); got {cfg.data.partition!r}"
        )
    for name in ("image_size", "channels"):
        value = getattr(cfg.data, name)
        if value is not None:
            problems.append(
                f"data.{name} must be null for the tabular dataset {data!r} (it declares an "
                f"image shape); got {list(value) if isinstance(value, tuple) else value}"
            )
    if cfg.model.name not in TABULAR_MODELS:
        problems.append(
            f"model.name must be one of {', '.join(sorted(TABULAR_MODELS))} for the tabular "
            f"dataset {data!r}; got {cfg.model.name!r}"
        )
    if cfg.strategy.calibrate != "none":
        problems.append(
            f"strategy.calibrate must be 'none' for the regression dataset {data!r} (it sets a "
            f"binary classifier's threshold); got {cfg.strategy.calibrate!r}"
        )
    if cfg.dp.enabled and cfg.dp.clipping == "per_layer_adaptive":
        problems.append(
            "dp.clipping 'per_layer_adaptive' estimates its thresholds from classification "
            f"gradients; use 'flat' or 'per_layer_uniform' for the regression dataset {data!r}"
        )
    problems += [
        f"{setting} is not supported for the regression dataset {data!r} (it needs class "
        "labels); turn it off"
        for setting in _label_features(cfg)
    ]
    return problems


def functional_checks(cfg: Config) -> list[str]:
    """What ``client.mechanism: functional`` needs."""
    if cfg.client.mechanism != "functional":
        return []
    dp = cfg.dp
    if not dp.enabled:  # no DP: clients train plainly, whatever the mechanism would be
        return []
    if dp.mode != "sample":
        return [
            "client.mechanism 'functional' needs dp.mode 'sample' (it is the clients' DP "
            f"mechanism; central DP trains clients plainly); got {dp.mode!r}"
        ]
    problems = []
    if cfg.model.name not in FUNCTIONAL_MODELS:
        problems.append(
            "client.mechanism 'functional' needs a model with a functional head (one hidden "
            f"layer in [0, 1]): one of {', '.join(sorted(FUNCTIONAL_MODELS))}; got "
            f"{cfg.model.name!r}"
        )
    if dp.epsilon is None or dp.noise_multiplier is not None:
        problems.append(
            "client.mechanism 'functional' needs dp.epsilon (split over every planned epoch) "
            f"and no dp.noise_multiplier; got epsilon {dp.epsilon}, noise_multiplier "
            f"{dp.noise_multiplier}"
        )
    if dp.neighbouring != "replace_one":
        problems.append(
            "client.mechanism 'functional' is accounted under dp.neighbouring 'replace_one' "
            "only (its batches partition the client's n records, which are public); got "
            f"{dp.neighbouring!r}"
        )
    if cfg.client.local_steps is not None:
        problems.append(
            "client.local_steps must be null with client.mechanism 'functional' (its ε is "
            "per epoch: disjoint batches covering the data once); got "
            f"{cfg.client.local_steps}"
        )
    if dp.secure_rng:
        problems.append(
            "dp.secure_rng is not implemented for client.mechanism 'functional' (its Laplace "
            "noise comes from the seeded or per-round site generator); got true"
        )
    if cfg.task == "regression":  # regression_checks already refuses all of them
        return problems
    problems += [
        f"{setting} is not supported with client.mechanism 'functional' (it needs DP-SGD); "
        "turn it off"
        for setting in _dp_sgd_features(cfg)
    ]
    problems += [
        f"{setting} is not supported with client.mechanism 'functional' (adversarial examples "
        "need gradients through the hidden layer of a DP-SGD client); turn it off"
        for setting in _adversarial_features(cfg)
    ]
    return problems
