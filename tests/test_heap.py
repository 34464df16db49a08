"""fedsim.heap: a process that calls keep_freed_heap() stops page-faulting every step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim import heap

REPO = Path(__file__).resolve().parents[1]

#: Ten plain SGD steps of the default CNN after a warm-up, in a fresh process; prints the
#: minor page faults they took and what keep_freed_heap() returned (argv[1] == "1": call it).
STEPS = """
import json, resource, sys
import torch
from torch import nn
from fedsim.heap import keep_freed_heap
from fedsim.models import build_model
torch.set_num_threads(1)
kept = keep_freed_heap() if sys.argv[1] == "1" else None
model = build_model("cnn", (1, 28, 28), 2, seed=0)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 2, (64,))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
def step():
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(json.dumps([kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before]))
"""


def _faults(call: bool) -> tuple[bool | None, int]:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, "1" if call else "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    kept, faults = json.loads(done.stdout.strip().splitlines()[-1])
    return kept, int(faults)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="minor page faults are counted on Linux"
)
def test_training_steps_stop_page_faulting_once_the_heap_is_kept() -> None:
    """With glibc's default thresholds each step of the CNN returns its freed activations
    to the kernel and faults them back in (thousands of faults in 10 steps here); after
    keep_freed_heap() the same steps take almost none."""
    kept, faults = _faults(call=True)
    if not kept:
        pytest.skip("not glibc: keep_freed_heap() is a no-op here (tested below)")
    _, default_faults = _faults(call=False)
    assert faults < 2000, faults  # 0-500 here (Python's own arenas), 17-22 thousand without
    assert default_faults > 5 * max(faults, 1000), (default_faults, faults)


def test_elsewhere_than_glibc_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """On another C library the function returns False without calling mallopt."""
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    called = []
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda *a: called.append(a))
    assert heap.keep_freed_heap.__wrapped__() is False
    assert called == []
