"""Selection consistency: do two settings pick the same top-k samples per class?

Pure functions over NumPy arrays (no torch, no files except :func:`save_grid`). Following
Usynin, Rueckert and Kaissis ("Incentivising the federation"), two score vectors over the
*same* samples (e.g. from an ε=1 and an ε=8 model, or DP vs non-DP) are compared by the
top-k samples each selects per class:

- overlap: how many selected samples the two sets share (per class and in total);
- SSIM (scikit-image) between the two sets' mean images, per class: close to 1 when the
  two selections look alike even if they share no sample;
- Bhattacharyya distance between the two sets' pixel-intensity histograms, per class
  (0 for identical distributions);
- Pearson (and Spearman) correlation of the two full score vectors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats


def top_k_per_class(
    scores: np.ndarray, labels: np.ndarray, k: int, *, largest: bool = True
) -> dict[int, np.ndarray]:
    """Indices of the ``k`` highest (or lowest) scores within each class, best first.

    Ties are broken by the lower index (stable sort). A class with fewer than ``k``
    samples contributes all of them.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(
            f"scores and labels must have one shape (N,); got {scores.shape} and {labels.shape}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    out: dict[int, np.ndarray] = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        key = -scores[idx] if largest else scores[idx]
        out[int(c)] = idx[np.argsort(key, kind="stable")[:k]]
    return out


def ssim_mean_images(images_a: np.ndarray, images_b: np.ndarray) -> float:
    """SSIM (data range 1) between the channel-averaged mean images of two image sets."""
    from skimage.metrics import structural_similarity

    mean_a = np.asarray(images_a, dtype=np.float64).mean(axis=(0, 1))
    mean_b = np.asarray(images_b, dtype=np.float64).mean(axis=(0, 1))
    side = min(mean_a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels; got {mean_a.shape}")
    return float(structural_similarity(mean_a, mean_b, data_range=1.0, win_size=win))


def bhattacharyya_distance(images_a: np.ndarray, images_b: np.ndarray, bins: int = 32) -> float:
    """Bhattacharyya distance ``-ln Σ √(p q)`` of two sets' pixel histograms on [0, 1].

    0 for identical histograms, ``inf`` for disjoint ones.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    p, _ = np.histogram(np.clip(np.asarray(images_a).ravel(), 0, 1), bins=edges)
    q, _ = np.histogram(np.clip(np.asarray(images_b).ravel(), 0, 1), bins=edges)
    if p.sum() == 0 or q.sum() == 0:
        raise ValueError("bhattacharyya_distance needs two non-empty image sets")
    coeff = float(np.sum(np.sqrt((p / p.sum()) * (q / q.sum()))))
    return math.inf if coeff <= 0 else max(0.0, -math.log(coeff))


def _corr(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    fn = stats.pearsonr if kind == "pearson" else stats.spearmanr
    return float(fn(a, b)[0])


@dataclass(frozen=True)
class ClassConsistency:
    """Agreement of two top-k selections within one class."""

    label: int
    k: int
    overlap: int
    ssim: float
    bhattacharyya: float


@dataclass(frozen=True)
class SelectionConsistency:
    """Agreement of two score vectors over the same samples, for one metric."""

    metric: str
    k: int
    pearson: float
    spearman: float
    classes: tuple[ClassConsistency, ...]
    selected_a: Mapping[int, np.ndarray]
    selected_b: Mapping[int, np.ndarray]

    @property
    def overlap(self) -> int:
        """Samples selected by both, over all classes."""
        return sum(c.overlap for c in self.classes)

    @property
    def selected(self) -> int:
        """Samples selected per setting, over all classes."""
        return sum(c.k for c in self.classes)

    @property
    def mean_ssim(self) -> float:
        """SSIM averaged over classes."""
        return float(np.mean([c.ssim for c in self.classes]))

    @property
    def mean_bhattacharyya(self) -> float:
        """Bhattacharyya distance averaged over classes."""
        return float(np.mean([c.bhattacharyya for c in self.classes]))

    def to_json(self) -> dict[str, object]:
        """Scalars and selected indices as plain JSON types."""
        return {
            "metric": self.metric,
            "k": self.k,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "overlap": self.overlap,
            "selected": self.selected,
            "mean_ssim": self.mean_ssim,
            "mean_bhattacharyya": self.mean_bhattacharyya,
            "classes": [
                {
                    "label": c.label,
                    "k": c.k,
                    "overlap": c.overlap,
                    "ssim": c.ssim,
                    "bhattacharyya": c.bhattacharyya,
                    "selected_a": [int(i) for i in self.selected_a[c.label]],
                    "selected_b": [int(i) for i in self.selected_b[c.label]],
                }
                for c in self.classes
            ],
        }


def compare_selections(
    metric: str,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    images: np.ndarray,
    k: int,
    *,
    largest: bool = True,
) -> SelectionConsistency:
    """Compare the per-class top-``k`` selections of two score vectors over ``images``.

    Parameters
    ----------
    metric
        Name recorded in the result.
    scores_a, scores_b
        ``(N,)`` scores of the same ``N`` samples under the two settings.
    labels
        ``(N,)`` class labels.
    images
        ``(N, C, H, W)`` images in [0, 1].
    k
        Samples selected per class.
    largest
        Select the highest scores (default) or the lowest.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or len(images) != len(a):
        raise ValueError(
            f"scores_a {a.shape}, scores_b {b.shape} and images ({len(images)}) must cover "
            "the same samples"
        )
    sel_a = top_k_per_class(a, labels, k, largest=largest)
    sel_b = top_k_per_class(b, labels, k, largest=largest)
    classes = tuple(
        ClassConsistency(
            label=c,
            k=len(sel_a[c]),
            overlap=len(np.intersect1d(sel_a[c], sel_b[c])),
            ssim=ssim_mean_images(images[sel_a[c]], images[sel_b[c]]),
            bhattacharyya=bhattacharyya_distance(images[sel_a[c]], images[sel_b[c]]),
        )
        for c in sorted(sel_a)
    )
    return SelectionConsistency(
        metric=metric,
        k=k,
        pearson=_corr("pearson", a, b),
        spearman=_corr("spearman", a, b),
        classes=classes,
        selected_a=sel_a,
        selected_b=sel_b,
    )


def save_grid(
    images: np.ndarray,
    selected: Mapping[int, np.ndarray],
    path: Path,
    title: str,
    class_names: Mapping[int, str] | None = None,
) -> None:
    """Save a PNG grid: one row per class, the selected images in rank order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(selected)
    cols = max((len(v) for v in selected.values()), default=1)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.1 * cols + 0.8, 1.1 * len(rows) + 0.5), squeeze=False
    )
    for r, label in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(selected[label]):
                img = np.asarray(images[selected[label][c]], dtype=np.float64)
                if img.shape[0] == 1:
                    ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(np.clip(img[:3].transpose(1, 2, 0), 0, 1))
            if c == 0:
                name = (class_names or {}).get(label, str(label))
                ax.set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
