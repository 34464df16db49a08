"""Where a deployed run may read its config and write its results.

A run config comes from whoever submits the run, so its paths are confined:

- ``config-path`` must name a file inside the app (the FAB the run ships), never a file
  elsewhere on the coordinator (:func:`app_file`);
- ``out-dir`` must lie inside the runs folder the coordinator declared
  (``fedsim superlink --runs-dir``, passed to its ServerApps as ``FEDSIM_RUNS_DIR``) and
  must not hold files yet, so no run writes over another run's results
  (:func:`run_dir`).

Paths are resolved (``..`` and symbolic links followed) before they are checked.
Messages name the setting, the rule and the value given — never a file's contents.
"""

from __future__ import annotations

from pathlib import Path

from fedsim.errors import ConfigError, RunError


def app_file(given: str, app_dir: Path) -> Path:
    """``config-path`` ``given`` as a file inside ``app_dir`` (relative paths count from it).

    Raises
    ------
    ConfigError
        If the path leads outside the app.
    """
    root = app_dir.resolve()
    path = (root / Path(given).expanduser()).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(
            [
                f"config-path must name a file inside the app ({root}), such as "
                f"'experiments/deploy.yaml'; got {given!r}"
            ]
        )
    return path


def run_dir(given: str, default_name: str, runs_root: Path | None) -> Path:
    """The run directory for ``out-dir`` ``given`` (``""``: ``default_name``).

    With ``runs_root`` (the coordinator's declared runs folder) the directory must lie
    strictly inside it; relative paths count from it. Without one (a local simulation)
    relative paths count from the working directory, under ``runs/`` by default.

    Raises
    ------
    RunError
        If the directory leads outside ``runs_root`` or already holds files.
    """
    text = given.strip()
    if runs_root is None:
        path = (Path(text).expanduser() if text else Path("runs") / default_name).resolve()
    else:
        root = runs_root.resolve()
        path = (root / (Path(text).expanduser() if text else Path(default_name))).resolve()
        if path == root or not path.is_relative_to(root):
            raise RunError(
                f"out-dir must be a folder inside the coordinator's runs folder {root} "
                f"(fedsim superlink --runs-dir); got {given!r}"
            )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunError(
            f"out-dir {str(path)!r} already exists and is not an empty folder: a run never "
            "writes over another run's files; choose a new out-dir"
        )
    return path
