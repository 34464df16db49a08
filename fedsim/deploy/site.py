"""What one real site (a SuperNode) brings to a deployed federation: its node config.

A hospital starts its SuperNode with a node config such as::

    flower-supernode ... --node-config 'client-id=0 data-path="/site/data.npz"
                                        state-dir="/site/state"'

- ``client-id``: the site's stable client id 0..N-1 (``partition-id`` is accepted too,
  as simulation sets it);
- ``data-path``: the site's own training data, read locally and never sent anywhere —
  an ``.npz`` archive (``train_images``/``train_labels``, optional ``class_names``) or an
  image folder (``<class>/...`` or ``train/<class>/...``; PNG/JPEG/TIFF, DICOM, NIfTI),
  whose images are fitted to the run's declared input (``data.image_size``,
  ``data.channels``, ``data.resize``); ``data-format`` (``npz`` | ``imagefolder``)
  overrides the guess from the path;
- ``state-dir``: where the site keeps its privacy ledger between rounds, runs and
  restarts (:mod:`fedsim.deploy.state`);
- ``policy-path``: the site's own privacy policy (:mod:`fedsim.deploy.policy`), which
  its ClientApp enforces whatever the run's config asks; without it the strict
  :data:`~fedsim.deploy.policy.DEFAULT_POLICY` applies.

Without ``data-path`` the client takes its partition of the config's dataset, as in
simulation; without ``state-dir`` the ledger lives in Flower's ``context.state``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fedsim import keys
from fedsim.data.file_sources import load_npz
from fedsim.data.fit import ImageSpec
from fedsim.data.imagefolder import load_imagefolder
from fedsim.data.sources import fit_source
from fedsim.data.types import SourceArgs, Split
from fedsim.errors import DataError, FedsimError

SiteFormat = Literal["npz", "imagefolder"]


@dataclass(frozen=True)
class SiteConfig:
    """A SuperNode's site settings, parsed from its node config."""

    client_id: int
    data_path: Path | None = None
    data_format: SiteFormat | None = None
    state_dir: Path | None = None
    policy_path: Path | None = None
    #: A real site (node config ``client-id``, or any site path), not a node of Flower's
    #: simulation engine (``partition-id`` only): its privacy policy applies.
    deployed: bool = True


@dataclass(frozen=True)
class SiteData:
    """A site's local training data and the shape of the task it implies."""

    train: Split
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


def _text(node_config: Mapping[str, Any], key: str) -> str | None:
    value = node_config.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def site_from_node_config(node_config: Mapping[str, Any]) -> SiteConfig:
    """Parse the fedsim entries of a SuperNode's node config.

    Raises
    ------
    FedsimError
        When no client id is given or an entry is malformed (the message names it).
    """
    raw_id = node_config.get(keys.NODE_CLIENT_ID, node_config.get(keys.NODE_PARTITION_ID))
    if raw_id is None:
        raise FedsimError(
            f"node config has no {keys.NODE_CLIENT_ID!r}; start the SuperNode with "
            f'--node-config \'client-id=<0..N-1> data-path="..." state-dir="..."\''
        )
    try:
        client_id = int(raw_id)
    except (TypeError, ValueError):
        raise FedsimError(
            f"node config {keys.NODE_CLIENT_ID} must be an integer; got {raw_id!r}"
        ) from None
    if client_id < 0:
        raise FedsimError(f"node config {keys.NODE_CLIENT_ID} must be >= 0; got {client_id}")
    fmt = _text(node_config, keys.NODE_DATA_FORMAT)
    if fmt is not None and fmt not in ("npz", "imagefolder"):
        raise FedsimError(
            f"node config {keys.NODE_DATA_FORMAT} must be 'npz' or 'imagefolder'; got {fmt!r}"
        )
    data = _text(node_config, keys.NODE_DATA_PATH)
    state = _text(node_config, keys.NODE_STATE_DIR)
    policy = _text(node_config, keys.NODE_POLICY_PATH)
    return SiteConfig(
        client_id=client_id,
        data_path=None if data is None else Path(data).expanduser(),
        data_format=fmt,  # type: ignore[arg-type]
        state_dir=None if state is None else Path(state).expanduser(),
        policy_path=None if policy is None else Path(policy).expanduser(),
        deployed=keys.NODE_CLIENT_ID in node_config
        or any(p is not None for p in (data, state, policy)),
    )


@functools.lru_cache(maxsize=2)
def load_site_data(
    path: Path,
    data_format: SiteFormat | None = None,
    image: ImageSpec = ImageSpec(),  # noqa: B008
) -> SiteData:
    """Read a site's training data (cached per process); only its train split is used.

    ``image`` is the federation's declared input shape (the run's ``data.image_size``,
    ``data.channels``, ``data.resize``): the site's images are fitted to it, so a site's
    own export (other sizes, modes, DICOM) matches the coordinator's model.

    Raises
    ------
    DataError
        If the file or folder is missing or malformed (see the npz / imagefolder loaders).
    """
    fmt = data_format or ("imagefolder" if path.is_dir() else "npz")
    where = f"node config data-path ({path})"
    if not path.exists():
        raise DataError(f"{where}: not found")
    loader = load_imagefolder if fmt == "imagefolder" else load_npz
    try:
        source = fit_source(loader(SourceArgs(path=str(path), image=image)), image, where)
    except DataError as exc:
        raise DataError(str(exc).replace("data.path", "node config data-path")) from None
    train = source.train
    if len(train) == 0:
        raise DataError(f"{where}: the training split is empty")
    names = source.class_names
    return SiteData(train=train, num_classes=len(names), class_names=names)
