"""``fedsim evaluate RUN_DIR``: robustness of a finished run (attacks, transfer, int8)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from fedsim.cli.base import Command
from fedsim.config import AttackName

# the config's names, not fedsim.robustness.ATTACKS: that registry imports torch (equal
# sets, checked by tests/test_contracts.py)
_ATTACKS = typing.get_args(AttackName)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--transfer-from",
        nargs="+",
        metavar="OTHER_RUN_DIR",
        help="runs whose float models generate transfer attacks (same model and data)",
    )
    p.add_argument("--attacks", nargs="+", choices=_ATTACKS, help="attacks to run")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds of the stochastic attacks")
    p.add_argument("--no-quantize", action="store_true", help="skip the int8 model")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fedsim.errors import ConfigError
    from fedsim.robustness.evaluate import evaluate_run, load_run
    from fedsim.robustness.report import results_table

    run = load_run(args.run_dir)
    ev = run.cfg.robustness.evaluate
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        raise ConfigError([f"--seeds must be >= 0; got {args.seeds}"])
    ev = dataclasses.replace(
        ev,
        attacks=tuple(args.attacks) if args.attacks else ev.attacks,
        seeds=tuple(args.seeds) if args.seeds else ev.seeds,
        quantize=ev.quantize and not args.no_quantize,
    )
    doc = evaluate_run(args.run_dir, args.transfer_from, ev)
    print(results_table(doc))
    return 0


EVALUATE = Command(
    help="robustness of a finished run: white-box/transfer attacks, float and int8",
    description=(
        "Measure clean and robust accuracy of RUN_DIR's final model on its whole test "
        "split; writes robustness.json/.csv and adds the figures to summary.json. "
        "Settings default to the run's robustness.evaluate section."
    ),
    configure=_configure,
)
