"""Imported first by the client workers' fork server (:data:`fedsim.procpool.PRELOAD`),
in that process only: it points the server's standard output and error at
``/dev/null``.

The fork server inherits the driver's output; after the driver has exited it still
finalises its interpreter (torch and Flower loaded: ~1 s), and whoever reads the driver's
output through a pipe (``fedsim run | tee``, a benchmark, CI) waits that long for the
end of the stream. Its workers write to their own log files (:mod:`fedsim.procpool`).
"""

from __future__ import annotations

import os
import sys


def in_forkserver_preload() -> bool:
    """Whether this import runs inside ``multiprocessing.forkserver.main`` (the fork
    server's preload), not in any other process that imports the module."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(
            os.path.join("multiprocessing", "forkserver.py")
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _quiet() -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


if in_forkserver_preload():
    _quiet()
