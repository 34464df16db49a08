"""``fedsim federation-config CONFIG [-o key=value ...]``: print the settings of Flower's
simulation that ``flwr run .`` needs for CONFIG, as one ``--federation-config`` argument::

    flwr run . --stream \
        --federation-config "$(fedsim federation-config experiments/quickstart.yaml)"

(one simulated SuperNode per client, each ClientApp's CPUs and GPUs;
:mod:`fedsim.flwr_run`). The config is checked first (exit 2 with the problems).
"""

from __future__ import annotations

import argparse

from fedsim.cli.base import Command, add_config_args


def _configure(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "YAML experiment config (the run config's config-path)")
    p.set_defaults(handler=_cmd_federation_config)


def _cmd_federation_config(args: argparse.Namespace) -> int:
    from fedsim.config import load
    from fedsim.flwr_run import federation_config_text
    from fedsim.run import check_config

    cfg = load(args.config, args.override)
    check_config(cfg)
    print(federation_config_text(cfg))
    return 0


FEDERATION_CONFIG = Command(
    help="print flwr run's --federation-config (SuperNodes, client CPUs/GPUs) for a config",
    configure=_configure,
)
