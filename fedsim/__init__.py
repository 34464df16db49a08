"""fedsim: Flower-based federated simulation for private, robust and incentivised training."""

import os
from importlib.metadata import PackageNotFoundError, version

# Flower sends usage events to telemetry.flower.ai from every simulation and SuperLink
# unless told not to (read when flwr is imported). A hospital federation's tool does not
# phone home on its own: off unless the user set FLWR_TELEMETRY_ENABLED.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

try:
    __version__ = version("fedsim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
