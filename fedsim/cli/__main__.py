"""``python -m fedsim.cli ARGS`` is ``fedsim ARGS``."""

from fedsim.cli import entry

entry()
