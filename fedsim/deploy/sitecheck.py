"""Check a site before its SuperNode starts: its data, its state dir and its policy.

``fedsim site check`` and ``fedsim supernode`` (before it starts Flower) run
:func:`check_site`, so that a wrong path, a damaged file or a bad policy is reported in
seconds, at the site, instead of as a failed round hours later:

- data: read by :func:`fedsim.deploy.site.load_site_data`, the very function the
  site's ClientApp calls each round (same formats, same checks, same messages), and
  summarised: examples, image shape, classes and their counts;
- state dir: a directory (or one that can be created), writable (a file is created and
  removed), its lock can be taken (``flock``; held means a round is running now), and
  an existing state file parses, belongs to the site's client id and its ledger can be
  accounted: the ε it has spent is shown, at the policy's δ ceiling and first
  neighbouring relation;
- policy: :func:`fedsim.deploy.policy.load_policy`, and a lifetime ``max_epsilon``
  needs a state dir (the ClientApp would refuse every round without one).

Every problem found is reported in one :class:`~fedsim.errors.FedsimError` (exit code 2
in the CLI), each naming the file, the rule and the value; nothing is written but the
lock file the ClientApp creates anyway and a removed probe file.
"""

from __future__ import annotations

import errno
import fcntl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.deploy.policy import DEFAULT_POLICY, SitePolicy, load_policy
from fedsim.deploy.site import SiteData, SiteFormat, load_site_data
from fedsim.deploy.state import LOCK_FILE, SiteState, read_state, state_file
from fedsim.errors import DataError, FedsimError
from fedsim.privacy import RELATION_TEXT, Accounting


@dataclass(frozen=True)
class DataSummary:
    """What the site's ClientApp will train on."""

    path: Path
    num_examples: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]

    def line(self) -> str:
        """E.g. ``data /site/d.npz: 120 images of shape (1, 28, 28), 2 classes: ...``."""
        classes = ", ".join(
            f"{name} {count}"
            for name, count in zip(self.class_names, self.class_counts, strict=True)
        )
        line = (
            f"data {self.path}: {self.num_examples} images of shape {self.input_shape} (C, H, W), "
            f"{len(self.class_names)} classes: {classes}"
        )
        absent = [n for n, c in zip(self.class_names, self.class_counts, strict=True) if not c]
        if absent:
            line += f" (no images of {', '.join(absent)}: the site still trains the others)"
        return line


@dataclass(frozen=True)
class StateSummary:
    """The site's state dir and the privacy it has spent so far."""

    path: Path
    exists: bool
    state: SiteState | None
    epsilon: float | None
    accounting: Accounting
    lock_busy: bool = False

    def line(self) -> str:
        """E.g. ``state /site/state: client 0, 4 rounds in 2 runs, epsilon spent 1.2 ...``."""
        if not self.exists:
            return f"state {self.path}: does not exist yet; created at the first round"
        head = f"state {self.path}: writable"
        if self.lock_busy:
            head += ", its lock is held right now (a round of this site is running)"
        if self.state is None:
            return f"{head}; no {state_file(self.path).name} yet (nothing spent)"
        s = self.state
        return (
            f"{head}; client {s.client_id}, {s.rounds_trained} rounds trained in "
            f"{len(s.runs)} runs, epsilon spent {self.epsilon or 0.0:.4g} (all events, "
            f"delta={self.accounting.delta:g}, {RELATION_TEXT[self.accounting.relation]}, "
            f"{self.accounting.accountant.upper()} accountant)"
        )


@dataclass(frozen=True)
class SiteReport:
    """Everything :func:`check_site` found (all of it well formed)."""

    data: DataSummary | None
    state: StateSummary | None
    policy: SitePolicy
    policy_path: Path | None

    def lines(self) -> list[str]:
        """The human summary, one line per part."""
        out = []
        if self.data is None:
            out.append("data: none given; the site would train on the run config's dataset")
        else:
            out.append(self.data.line())
        if self.state is None:
            out.append(
                "state: none given; the privacy ledger lives in memory and is lost when the "
                "SuperNode restarts"
            )
        else:
            out.append(self.state.line())
            cap, spent = self.policy.max_epsilon, self.state.epsilon
            if cap is not None and spent is not None and spent >= cap:
                out.append(
                    f"budget: epsilon spent {spent:.4g} >= the policy's lifetime max_epsilon "
                    f"{cap:g}: this site will refuse every round"
                )
        if self.policy_path is None:
            out.append(f"site policy: none given, the default: {self.policy.describe()}")
        else:
            out.append(f"site policy {self.policy_path}: {self.policy.describe()}")
        return out


def summarize_data(path: Path, data_format: SiteFormat | None = None) -> DataSummary:
    """Load the site's data as its ClientApp does and summarise it.

    Raises
    ------
    DataError
        If the file or folder is missing, unreadable or malformed.
    """
    try:
        data: SiteData = load_site_data(path, data_format)
    except DataError as exc:  # the ClientApp's message, naming the option given here
        raise DataError(str(exc).replace("node config data-path", "--data", 1)) from None
    except OSError as exc:  # e.g. a folder the SuperNode's user may not read
        raise DataError(f"--data ({path}): cannot be read ({exc.strerror})") from None
    counts = np.bincount(data.train.y, minlength=data.num_classes)
    return DataSummary(
        path=path,
        num_examples=len(data.train),
        input_shape=data.input_shape,
        class_names=data.class_names,
        class_counts=tuple(int(c) for c in counts),
    )


def summarize_state(state_dir: Path, client_id: int | None, accounting: Accounting) -> StateSummary:
    """Check the state dir as the ClientApp will use it and read what it holds.

    Raises
    ------
    FedsimError
        If it is not a directory (nor can be created), is not writable, cannot be
        locked, or holds a state file that is unreadable, of another client
        (``client_id``: the site's; ``None`` accepts any) or whose ledger cannot be
        accounted.
    """
    where = f"state dir {state_dir}"
    if not state_dir.exists():
        parent = _existing_ancestor(state_dir)
        if not parent.is_dir():
            raise FedsimError(f"{where}: cannot be created: {parent} is not a directory")
        _probe_writable(parent, f"{where}: cannot be created in {parent}")
        return StateSummary(
            state_dir, exists=False, state=None, epsilon=None, accounting=accounting
        )
    if not state_dir.is_dir():
        raise FedsimError(f"{where}: must be a directory; got a file")
    _probe_writable(state_dir, f"{where}: must be writable")
    busy = _lock_busy(state_dir, where)
    state = read_state(state_dir)
    epsilon = None
    if state is not None:
        if client_id is not None and state.client_id != client_id:
            raise FedsimError(
                f"state file {state_file(state_dir)} belongs to client {state.client_id}, not to "
                f"client-id {client_id}; give each site its own state-dir"
            )
        try:
            epsilon = state.ledger.epsilon_total(accounting)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise FedsimError(
                f"state file {state_file(state_dir)}: its privacy ledger cannot be accounted "
                f"({str(exc)[:120]})"
            ) from None
    return StateSummary(state_dir, True, state, epsilon, accounting, busy)


def check_policy(path: Path | None, state_dir: Path | None) -> SitePolicy:
    """The site's policy (``None``: the default), checked as ``fedsim supernode`` needs it.

    Raises
    ------
    FedsimError
        If the file cannot be read or is invalid, or sets a lifetime ``max_epsilon``
        without a state dir.
    """
    if path is None:
        return DEFAULT_POLICY
    policy = load_policy(path)
    if policy.max_epsilon is not None and state_dir is None:
        raise FedsimError(
            f"--policy {str(path)!r} sets a lifetime max_epsilon ({policy.max_epsilon:g}), "
            "which needs the site's persistent ledger: give --state DIR"
        )
    return policy


def check_site(
    data: Path | None,
    state_dir: Path | None = None,
    policy_path: Path | None = None,
    client_id: int | None = None,
    data_format: SiteFormat | None = None,
) -> SiteReport:
    """Check every part of a site (see the module docstring).

    Raises
    ------
    FedsimError
        Listing every problem found, one per part, each naming its file.
    """
    problems: list[str] = []
    policy = DEFAULT_POLICY
    try:
        policy = check_policy(policy_path, state_dir)
    except FedsimError as exc:
        problems.append(str(exc))
    accounting = Accounting(policy.max_delta, "pld", policy.neighbouring[0])
    state = None
    if state_dir is not None:
        try:
            state = summarize_state(state_dir, client_id, accounting)
        except FedsimError as exc:
            problems.append(str(exc))
    summary = None
    if data is not None:
        try:
            summary = summarize_data(data, data_format)
        except FedsimError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise FedsimError(f"site check: {problems[0]}")
    if problems:
        listed = "\n".join("  - " + p.replace("\n", "\n    ") for p in problems)
        raise FedsimError(f"site check: {len(problems)} problems:\n{listed}")
    return SiteReport(summary, state, policy, policy_path)


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def _probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``, or raise ``what`` with the reason."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fedsim-write-check-"):
            pass
    except OSError as exc:
        raise FedsimError(f"{what}; creating a file there failed ({exc.strerror})") from None


def _lock_busy(state_dir: Path, where: str) -> bool:
    """Whether another process holds the site's lock now (raise if it cannot be taken)."""
    try:
        with (state_dir / LOCK_FILE).open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False  # closing the file releases the lock
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise FedsimError(
                f"{where}: must support file locks (flock), which serialise the site's rounds; "
                f"locking {LOCK_FILE} failed ({exc.strerror})"
            ) from None
        raise FedsimError(
            f"{where}: cannot open its lock file {LOCK_FILE} ({exc.strerror})"
        ) from None
