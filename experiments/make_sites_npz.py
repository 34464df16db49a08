"""Write a site-labelled dataset: PneumoniaMNIST's training images split among 3 hospitals.

Usage::

    python experiments/make_sites_npz.py runs/sites.npz [--seed 0]
    fedsim run experiments/natural_sites.yaml   # data.partition: natural, 3 clients

Each hospital differs the way real sites do — in size, in case mix and in how its
scanner renders the images — so a natural partition (``data.partition: natural``, one
client per site) shows a realistic non-IID federation:

=============  =========  ==================  =======================================
site           share      pneumonia fraction  acquisition
=============  =========  ==================  =======================================
hospital-a     55 %       as drawn (~74 %)    unchanged
hospital-b     30 %       ~50 % (rebalanced)  lower contrast (values × 0.8 + 0.1)
hospital-c     15 %       ~90 %               darker (gamma 1.5)
=============  =========  ==================  =======================================

The archive keeps PneumoniaMNIST's own validation and test splits (unchanged) for the
server, and holds ``train_images``, ``train_labels``, ``train_sites`` (the site names)
and ``class_names``. Nothing is downloaded: the images come from the copy embedded in
fedsim (MedMNIST v2, CC BY 4.0, see ``fedsim/data/PNEUMONIAMNIST_LICENSE.md``).
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np

SITES = ("hospital-a", "hospital-b", "hospital-c")
SHARES = (0.55, 0.30, 0.15)
PNEUMONIA_FRACTION = (None, 0.5, 0.9)  # None: whatever the draw gives


def assign_sites(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Site index of each training image, by :data:`SHARES` and :data:`PNEUMONIA_FRACTION`.

    Sites b and c are filled first, drawing their pneumonia / normal counts from each
    class's pool; site a gets the rest.
    """
    n = len(labels)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in (0, 1)}
    site = np.zeros(n, dtype=np.int64)
    for s in (1, 2):
        size = round(SHARES[s] * n)
        fraction = PNEUMONIA_FRACTION[s]
        sick = round(size * fraction) if fraction is not None else 0
        for cls, count in ((1, sick), (0, size - sick)):
            taken, pools[cls] = pools[cls][:count], pools[cls][count:]
            site[taken] = s
    return site


def acquisition(images: np.ndarray, site: int) -> np.ndarray:
    """A site's rendering of ``uint8`` images (see the table in the module docstring)."""
    x = images.astype(np.float64) / 255.0
    if site == 1:
        x = x * 0.8 + 0.1
    elif site == 2:
        x = x**1.5
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the .npz file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ref = resources.files("fedsim.data").joinpath("pneumoniamnist.npz")
    with resources.as_file(ref) as file, np.load(file) as src:
        arrays = {k: src[k] for k in src.files}
    labels = arrays["train_labels"].reshape(-1).astype(np.int64)
    site = assign_sites(labels, np.random.default_rng(args.seed))
    images = arrays["train_images"].copy()
    for s in range(len(SITES)):
        images[site == s] = acquisition(images[site == s], s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=images,
        train_labels=labels,
        train_sites=np.array(SITES)[site],
        val_images=arrays["val_images"],
        val_labels=arrays["val_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        class_names=np.array(["normal", "pneumonia"]),
    )
    for s, name in enumerate(SITES):
        mine = labels[site == s]
        print(f"{name}: {len(mine)} images, {mine.mean():.0%} pneumonia")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
