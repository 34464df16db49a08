"""The registry of ``fedsim`` subcommands: :data:`COMMANDS`, name → :class:`Command`.

Every command is imported and registered here, explicitly, in the order ``fedsim --help``
lists them; a command module that fails to import or a misspelt name fails here, at
import, not when the command is run. Command modules keep heavy imports inside their
handlers (see :mod:`fedsim.cli.base`).
"""

from __future__ import annotations

from fedsim.cli import (
    analyze,
    audit,
    compose,
    deploy,
    evaluate,
    federation,
    report,
    run,
    security,
    site,
    sweep,
)
from fedsim.cli.base import Command
from fedsim.registry import Registry

COMMANDS: Registry[Command] = Registry("command", "fedsim command")
"""Subcommands by name, in registration (= ``fedsim --help``) order."""
COMMANDS.register("run")(run.RUN)
COMMANDS.register("validate")(run.VALIDATE)
COMMANDS.register("sweep")(sweep.SWEEP)
COMMANDS.register("report")(report.REPORT)
COMMANDS.register("analyze")(analyze.ANALYZE)
COMMANDS.register("evaluate")(evaluate.EVALUATE)
COMMANDS.register("certs")(deploy.CERTS)
COMMANDS.register("node")(deploy.NODE)
COMMANDS.register("superlink")(deploy.SUPERLINK)
COMMANDS.register("supernode")(deploy.SUPERNODE)
COMMANDS.register("site")(site.SITE)
COMMANDS.register("app")(security.APP)
COMMANDS.register("control-tunnel")(security.CONTROL_TUNNEL)
COMMANDS.register("compose")(compose.COMPOSE)
COMMANDS.register("audit")(audit.AUDIT)
COMMANDS.register("federation-config")(federation.FEDERATION_CONFIG)
