"""fedsim: Flower-based federated simulation for private, robust and incentivised training."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedsim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
