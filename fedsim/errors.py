"""User-facing errors.

Every error a user can cause (bad config, bad CLI arguments, missing or malformed data files)
is a :class:`FedsimError`. The CLI prints its message and exits with code 2, without a
traceback. Messages name the parameter, the rule and the value received, e.g.
``"dp.noise_multiplier must be > 0; got -1.0"``.
"""

from __future__ import annotations

from collections.abc import Sequence


class FedsimError(Exception):
    """An error caused by user input; its message is shown as is."""


class ConfigError(FedsimError):
    """One or more problems in a configuration, each naming its dotted path.

    Parameters
    ----------
    problems
        One message per problem, e.g. ``"rounds must be >= 1; got 0"``.
    what
        What was invalid, for the first line of the message, e.g. ``"site policy
        '/site/policy.yaml'"``.
    """

    def __init__(self, problems: Sequence[str], what: str = "configuration") -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"invalid {what} ({len(self.problems)} {noun}):\n{lines}")


class DataError(FedsimError):
    """A dataset is missing, unreadable or malformed."""


class RunError(FedsimError):
    """A run could not complete (e.g. no client could train)."""


class RunInterruptedError(RunError):
    """The run was asked to stop (SIGINT/SIGTERM); its completed rounds are checkpointed,
    so ``fedsim run --resume RUN_DIR`` continues it."""
