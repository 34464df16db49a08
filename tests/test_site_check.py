"""``fedsim site check`` and the same check in ``fedsim supernode`` before Flower starts:
a summary for a good site, exit code 2 and one message naming the file, the rule and the
value for every way a site can be wrong — real files, the real CLI, no process left."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsim.cli import main
from fedsim.deploy.policy import DEFAULT_POLICY
from fedsim.deploy.site import load_site_data
from fedsim.deploy.sitecheck import check_site
from fedsim.deploy.state import LOCK_FILE, SiteState, record_round, save_state, state_file
from fedsim.errors import FedsimError
from fedsim.privacy import Accounting, LaplaceRelease, PrivacyLedger, SubsampledGaussian

ROOT = Path(__file__).resolve().parents[1]


def _npz(path: Path, labels: np.ndarray | None = None, n: int = 30, **extra: object) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3 if labels is None else labels
    np.savez(
        path,
        train_images=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
        train_labels=y,
        **extra,  # type: ignore[arg-type]
    )
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return _npz(tmp_path / "site.npz", class_names=np.array(["normal", "viral", "covid"]))


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    load_site_data.cache_clear()  # each test's files are new
    code = main(["site", "check", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = _check(capsys, *args)
    assert code == 2, out + err
    assert "site check passed" not in out
    assert err.startswith("fedsim: error: site check: "), err
    return err


def _ledger() -> PrivacyLedger:
    return (
        PrivacyLedger(1.5)
        .with_event(SubsampledGaussian(1.5, 0.1, 40))
        .with_event(LaplaceRelease(0.5, 1))
    )


# ---------------------------------------------------------------- a good site
def test_summary_of_a_good_site(site: Path, tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    saved = record_round(SiteState(client_id=2), _ledger(), run_id=9, trained=True)
    save_state(state, saved)
    policy = tmp_path / "policy.yaml"
    policy.write_text("max_epsilon: 8\nmax_delta: 1e-6\n")
    code, out, _ = _check(
        capsys,
        "--data", str(site), "--state", str(state), "--policy", str(policy), "--client-id", "2",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"data {site}: 30 images of shape (1, 28, 28) (C, H, W), 3 classes: "
        "normal 10, viral 10, covid 10"
    )
    spent = _ledger().epsilon_total(Accounting(1e-6))  # at the policy's delta ceiling
    assert f"client 2, 1 rounds trained in 1 runs, epsilon spent {spent:.4g}" in lines[1]
    assert "delta=1e-06, replace-one, PLD accountant" in lines[1]
    assert lines[2].startswith(f"site policy {policy}: ") and "(lifetime)=8" in lines[2]
    assert not any(line.startswith("budget:") for line in lines)
    policy.write_text(f"max_epsilon: {spent / 2}\nmax_delta: 1e-6\n")  # already spent
    code, out, _ = _check(
        capsys, "--data", str(site), "--state", str(state), "--policy", str(policy)
    )
    assert code == 0  # the site is well formed, but the operator learns it is exhausted
    assert f"budget: epsilon spent {spent:.4g} >= the policy's lifetime max_epsilon" in out
    assert lines[-1] == "site check passed"
    assert sorted(p.name for p in state.iterdir()) == [LOCK_FILE, state_file(state).name]


def test_a_new_site_and_the_defaults(site: Path, tmp_path: Path, capsys) -> None:
    state = tmp_path / "new" / "state"
    code, out, _ = _check(capsys, "--data", str(site), "--state", str(state))
    assert code == 0
    assert f"state {state}: does not exist yet; created at the first round" in out
    assert "site policy: none given, the default: " + DEFAULT_POLICY.describe() in out
    assert not (tmp_path / "new").exists()  # a check creates nothing
    code, out, _ = _check(capsys, "--data", str(site), "--state", str(tmp_path))
    assert code == 0 and "no fedsim-state.json yet (nothing spent)" in out


def test_a_class_without_images_is_shown(tmp_path: Path, capsys) -> None:
    path = _npz(tmp_path / "s.npz", np.arange(30) % 2, class_names=np.array(["a", "b", "c"]))
    code, out, _ = _check(capsys, "--data", str(path))
    assert code == 0 and "a 15, b 15, c 0 (no images of c" in out


def test_an_image_folder_site(tmp_path: Path, capsys) -> None:
    for label in ("benign", "malignant"):
        folder = tmp_path / "folder" / "train" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    code, out, _ = _check(capsys, "--data", str(tmp_path / "folder"))
    assert code == 0
    assert "6 images of shape (1, 8, 8) (C, H, W), 2 classes: benign 3, malignant 3" in out


# ---------------------------------------------------------------- data failures
def test_missing_data(tmp_path: Path, capsys) -> None:
    err = _fails(capsys, "--data", str(tmp_path / "absent.npz"))
    assert f"--data ({tmp_path / 'absent.npz'}): not found" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file is empty (0 bytes)"),
        (b"train_images,train_labels\n1,2\n", "not an .npz archive (not a zip file"),
    ],
)
def test_data_of_the_wrong_format(tmp_path: Path, capsys, content: bytes, expected: str) -> None:
    path = tmp_path / "site.npz"
    path.write_bytes(content)
    err = _fails(capsys, "--data", str(path))
    assert f"--data ({path})" in err and expected in err
    assert "train_images,train_labels" not in err  # never the file's contents


def test_a_damaged_npz(site: Path, capsys) -> None:
    raw = bytearray(site.read_bytes())
    raw[60:200] = bytes(140)  # inside the first member: its header and data
    site.write_bytes(bytes(raw))
    err = _fails(capsys, "--data", str(site))
    assert f"--data ({site}): " in err
    assert "damaged" in err or "not a readable .npz archive" in err or "corrupt" in err


def test_a_folder_given_as_npz(tmp_path: Path, capsys) -> None:
    err = _fails(capsys, "--data", str(tmp_path), "--data-format", "npz")
    assert f"--data ({tmp_path}): is a directory or special file, not an .npz file" in err


def test_a_folder_without_images(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    err = _fails(capsys, "--data", str(tmp_path))
    assert f"--data ({tmp_path}): " in err and "no images here" not in err


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.linspace(0, 1, 30), "labels must be whole numbers; got 28 non-integral values"),
        (np.arange(30) - 1, "key 'train_labels': labels must be >= 0; got -1 at index 0"),
        (np.arange(30) % 5, "labels must be < the number of class names (3); got label 4"),
    ],
)
def test_bad_labels(tmp_path: Path, capsys, labels: np.ndarray, expected: str) -> None:
    path = _npz(tmp_path / "s.npz", labels, class_names=np.array(["a", "b", "c"]))
    err = _fails(capsys, "--data", str(path))
    assert f"--data ({path})" in err and expected in err


def test_missing_keys_and_mismatched_lengths(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros(3))
    err = _fails(capsys, "--data", str(path))
    assert "needs keys 'train_images' and 'train_labels'" in err and "found ['images'" in err
    np.savez(path, train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros(2, int))
    err = _fails(capsys, "--data", str(path))
    assert "key 'train_labels' has 2 entries but key 'train_images' has 3" in err


# ---------------------------------------------------------------- state failures
def test_state_dir_that_is_a_file(site: Path, tmp_path: Path, capsys) -> None:
    file = tmp_path / "state"
    file.write_text("x")
    err = _fails(capsys, "--data", str(site), "--state", str(file))
    assert f"state dir {file}: must be a directory; got a file" in err
    err = _fails(capsys, "--data", str(site), "--state", str(file / "sub"))
    assert f"state dir {file / 'sub'}: cannot be created: {file} is not a directory" in err


def test_state_dir_that_is_not_writable(site: Path, tmp_path: Path, capsys) -> None:
    # /proc/self is a real directory in which nobody, root included, can create a file.
    err = _fails(capsys, "--data", str(site), "--state", "/proc/self")
    assert "state dir /proc/self: must be writable; creating a file there failed" in err
    if os.geteuid() != 0:  # root writes into a mode-0500 directory anyway
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        err = _fails(capsys, "--data", str(site), "--state", str(locked))
        assert "must be writable" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "cannot be read (not JSON: Expecting property name"),
        ("[1, 2]", "cannot be read (a field of the wrong type or shape"),
        ('{"format": 7, "client_id": 0}', "cannot be read (its format is not 1"),
        ('{"format": 1, "client_id": 0}', "cannot be read (no field 'ledger')"),
        (
            '{"format": 1, "client_id": 0, "ledger": {"events": [["sgm", 1.0]]}}',
            "cannot be read (a field of the wrong type or shape",
        ),
        (
            '{"format": 1, "client_id": 0, "ledger": {"events": [["sgm", -1, 0.1, 5]]}}',
            "its privacy ledger cannot be accounted",
        ),
    ],
)
def test_corrupt_state_file(site: Path, tmp_path: Path, capsys, text: str, expected: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state_file(state).write_text(text)
    err = _fails(capsys, "--data", str(site), "--state", str(state))
    assert f"state file {state_file(state)}: {expected}" in err


def test_state_of_another_client(site: Path, tmp_path: Path, capsys) -> None:
    save_state(tmp_path, SiteState(client_id=3))
    err = _fails(capsys, "--data", str(site), "--state", str(tmp_path), "--client-id", "1")
    assert "belongs to client 3, not to client-id 1" in err
    code, out, _ = _check(capsys, "--data", str(site), "--state", str(tmp_path))
    assert code == 0 and "client 3, 0 rounds trained in 0 runs" in out


def test_a_held_lock_is_reported_not_waited_for(site: Path, tmp_path: Path, capsys) -> None:
    with (tmp_path / LOCK_FILE).open("a") as handle:  # a round running in another process
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        holder = subprocess.Popen(  # flock is per open file: hold it from another process
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            pass_fds=(handle.fileno(),),
        )
    try:
        code, out, _ = _check(capsys, "--data", str(site), "--state", str(tmp_path))
    finally:
        holder.communicate(b"", timeout=30)
    assert code == 0 and "its lock is held right now" in out


# ---------------------------------------------------------------- policy failures
def test_bad_policy(site: Path, tmp_path: Path, capsys) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("max_epsilon: -1\nflavour: strict\n")
    err = _fails(capsys, "--data", str(site), "--policy", str(policy))
    assert f"invalid site policy '{policy}' (2 problems)" in err
    assert "max_epsilon must be > 0; got -1.0" in err and "flavour is not a known key" in err
    err = _fails(capsys, "--data", str(site), "--policy", str(tmp_path / "absent.yaml"))
    assert "absent.yaml' cannot be read" in err
    policy.write_text("max_epsilon: 4\n")  # a lifetime cap needs the persistent ledger
    err = _fails(capsys, "--data", str(site), "--policy", str(policy))
    assert "sets a lifetime max_epsilon (4)" in err and "give --state DIR" in err


def test_every_problem_is_listed_at_once(tmp_path: Path, capsys) -> None:
    (tmp_path / "p.yaml").write_text("max_delta: 2\n")
    (tmp_path / "file").write_text("")
    err = _fails(
        capsys,
        "--data", str(tmp_path / "absent.npz"),
        "--state", str(tmp_path / "file"),
        "--policy", str(tmp_path / "p.yaml"),
    )  # fmt: skip
    assert "site check: 3 problems:" in err
    assert "max_delta must be < 1; got 2.0" in err
    assert "must be a directory" in err and "absent.npz): not found" in err


def test_check_site_without_data_describes_the_fallback() -> None:
    report = check_site(None)
    assert report.lines()[0].startswith("data: none given")
    assert report.lines()[1].startswith("state: none given")
    with pytest.raises(FedsimError, match="site check: state dir"):
        check_site(None, state_dir=Path("/proc/self"))


# ---------------------------------------------------------------- fedsim supernode
def _supernode(*extra: str) -> list[str]:
    return ["supernode", "--superlink", "127.0.0.1:1", "--client-id", "0", "--insecure", *extra]


def test_supernode_checks_its_site_before_it_starts(site: Path, tmp_path: Path, capsys) -> None:
    load_site_data.cache_clear()
    assert main(_supernode("--data", str(tmp_path / "absent.npz"), "--dry-run")) == 2
    err = capsys.readouterr().err
    assert "absent.npz): not found" in err and "Traceback" not in err
    assert "flower-supernode" not in err  # nothing was started, not even printed
    state = tmp_path / "state"
    save_state(state, SiteState(client_id=1))  # another site's state dir
    assert main(_supernode("--data", str(site), "--state", str(state), "--dry-run")) == 2
    assert "belongs to client 1, not to client-id 0" in capsys.readouterr().err
    state_file(state).unlink()
    assert main(_supernode("--data", str(site), "--state", str(state), "--dry-run")) == 0
    err = capsys.readouterr().err
    assert "30 images of shape (1, 28, 28)" in err and "normal 10, viral 10, covid 10" in err
    assert err.splitlines()[-1].startswith("+ flower-supernode ")


def test_supernode_without_dry_run_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    """The real command line, in its own process group: it must exit 2 at once (a
    regression would exec flower-supernode, which the timeout then kills)."""
    cmd = [sys.executable, "-m", "fedsim.cli", *_supernode("--data", str(tmp_path / "x.npz"))]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err.decode()
    assert proc.returncode == 2, text
    assert "fedsim: error: site check: --data" in text and "not found" in text
    assert "Traceback" not in text and "+ flower-supernode" not in text
