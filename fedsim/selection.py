"""Private selection of K of M updates with the exponential mechanism (pure functions).

SecProbe (Zhao et al., "Privacy-preserving collaborative deep learning with unreliable
participants", IEEE TIFS 2020) scores each upload by its utility ``u`` on the server's
auxiliary validation set and samples K of M without replacement, each draw with

    P(m) ∝ exp(ε · u_m / (2 · K · Δu))

among the not-yet-chosen updates. Each draw is (ε/K)-DP, so the K draws together are ε-DP
(basic composition). Adding Gumbel noise of scale ``2KΔu/ε`` to every utility and taking
the top K gives exactly the same distribution over ordered selections
(the Gumbel-max trick applied K times).

Everything here is side-effect free; randomness comes from a passed-in generator.
"""

from __future__ import annotations

import itertools

import numpy as np

from fedsim.config import SensitivityName


def _check(utilities: np.ndarray, epsilon: float, k: int, sensitivity: float) -> np.ndarray:
    u = np.asarray(utilities, dtype=np.float64)
    if u.ndim != 1 or u.size == 0:
        raise ValueError(f"utilities must be a non-empty 1-d array; got shape {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("utilities must be finite")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0; got {epsilon}")
    if not 1 <= k <= u.size:
        raise ValueError(f"k must be in [1, {u.size}]; got {k}")
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be > 0; got {sensitivity}")
    return u


def _scale(epsilon: float, k: int, sensitivity: float) -> float:
    """The exponent's factor ε / (2KΔu)."""
    return epsilon / (2.0 * k * sensitivity)


def exponential_mechanism_probabilities(
    utilities: np.ndarray, epsilon: float, k: int, sensitivity: float
) -> np.ndarray:
    """First-draw probabilities ``∝ exp(ε·u/(2·k·Δu))`` (a softmax, computed stably).

    >>> exponential_mechanism_probabilities(np.array([0.0, 0.0]), 1.0, 1, 0.5).tolist()
    [0.5, 0.5]
    """
    u = _check(utilities, epsilon, k, sensitivity)
    z = _scale(epsilon, k, sensitivity) * u
    z -= z.max()
    w = np.exp(z)
    return w / w.sum()


def sample_k_sequential(
    utilities: np.ndarray,
    epsilon: float,
    k: int,
    sensitivity: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of ``k`` draws without replacement, renormalising over the rest each draw.

    Returned in draw order.
    """
    u = _check(utilities, epsilon, k, sensitivity)
    remaining = list(range(u.size))
    chosen: list[int] = []
    for _ in range(k):
        p = exponential_mechanism_probabilities(u[remaining], epsilon, k, sensitivity)
        pick = int(rng.choice(len(remaining), p=p))
        chosen.append(remaining.pop(pick))
    return np.asarray(chosen, dtype=np.int64)


def sample_k_gumbel(
    utilities: np.ndarray,
    epsilon: float,
    k: int,
    sensitivity: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Top ``k`` of the utilities plus Gumbel noise of scale ``2kΔu/ε`` (in noisy order).

    Same distribution as :func:`sample_k_sequential`.
    """
    u = _check(utilities, epsilon, k, sensitivity)
    noisy = u + rng.gumbel(scale=1.0 / _scale(epsilon, k, sensitivity), size=u.size)
    return np.argsort(-noisy, kind="stable")[:k].astype(np.int64)


def inclusion_probabilities(
    utilities: np.ndarray, epsilon: float, k: int, sensitivity: float
) -> np.ndarray:
    """Exact probability that each index is among the ``k`` chosen.

    Sums the probability of every ordered selection of ``k`` indices (``M!/(M-k)!``
    terms), so keep ``M`` small (≤ 8 is instant); :func:`inclusion_probabilities_mc`
    estimates larger cases.
    """
    u = _check(utilities, epsilon, k, sensitivity)
    w = np.exp(_scale(epsilon, k, sensitivity) * (u - u.max()))
    out = np.zeros(u.size)
    for order in itertools.permutations(range(u.size), k):
        p, rest = 1.0, w.sum()
        for i in order:
            p *= w[i] / rest
            rest -= w[i]
        out[list(order)] += p
    return out


def inclusion_probabilities_mc(
    utilities: np.ndarray,
    epsilon: float,
    k: int,
    sensitivity: float,
    rng: np.random.Generator,
    draws: int = 20000,
) -> np.ndarray:
    """Seeded Monte Carlo estimate of the inclusion probabilities (Gumbel-top-k draws)."""
    u = _check(utilities, epsilon, k, sensitivity)
    noise = rng.gumbel(scale=1.0 / _scale(epsilon, k, sensitivity), size=(draws, u.size))
    top = np.argpartition(-(u + noise), k - 1, axis=1)[:, :k]
    return np.bincount(top.ravel(), minlength=u.size) / draws


def selection_inclusion_probabilities(
    utilities: np.ndarray,
    epsilon: float,
    k: int,
    sensitivity: float,
    rng: np.random.Generator,
    exact_up_to: int = 8,
) -> np.ndarray:
    """Exact inclusion probabilities for ``M <= exact_up_to`` (or ``k`` in {M, 1}),
    otherwise a seeded Monte Carlo estimate."""
    u = _check(utilities, epsilon, k, sensitivity)
    if k == u.size:
        return np.ones(u.size)
    if k == 1:
        return exponential_mechanism_probabilities(u, epsilon, k, sensitivity)
    if u.size <= exact_up_to:
        return inclusion_probabilities(u, epsilon, k, sensitivity)
    return inclusion_probabilities_mc(u, epsilon, k, sensitivity, rng)


def accuracy_sensitivity(n: int, mode: SensitivityName) -> float:
    """Δu of the validation accuracy of ``n`` records.

    ``paper``: SecProbe's 1/2 (its add/remove worst case over set sizes, at n = 1), which
    bounds replace-one changes too for ``n >= 2`` (1 for a single record).
    ``tight``: 1/n — replacing one of the ``n`` records changes the accuracy by at most
    1/n (and adding or removing one by at most 1/n as well), so it holds under either
    relation.

    >>> accuracy_sensitivity(10, "tight"), accuracy_sensitivity(10, "paper")
    (0.1, 0.5)
    """
    if mode == "paper":  # 1/n <= 1/2 for n >= 2; a single record can move it by 1
        return 0.5 if n >= 2 else 1.0
    if mode == "tight":
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        return 1.0 / n
    raise ValueError(f"mode must be 'paper' or 'tight'; got {mode!r}")


def selection_epsilon_composed(per_round_eps: float, rounds: int) -> float:
    """Total ε of ``rounds`` selections by *basic* (sequential) composition: ``rounds · ε``.

    An upper bound; advanced composition or RDP would be tighter for many rounds.
    """
    if per_round_eps < 0 or rounds < 0:
        raise ValueError(f"per_round_eps and rounds must be >= 0; got {per_round_eps}, {rounds}")
    return float(per_round_eps) * int(rounds)


def participant_epsilon(epsilon: float, sensitivity: float, utility_range: float = 1.0) -> float:
    """ε of one selection round with respect to one *participant* (its whole upload).

    A participant's data moves only its own utility, by at most ``utility_range`` (the
    utilities lie in [0, 1]). Raising one utility by ``c`` multiplies its own weight by
    ``exp(a·c)`` and every normaliser by at most that, ``a = ε/(2KΔu)``, so each of the K
    draws changes any probability by a factor within ``exp(±a·c)``, and the K draws by
    ``exp(ε·c/(2Δu))``. With the paper's Δu = 1/2 this is ``ε`` itself; with the tight
    Δu = 1/n it is ``ε·n/2``.

    >>> participant_epsilon(1.0, 0.5), participant_epsilon(1.0, 1 / 11)
    (1.0, 5.5)
    """
    if epsilon < 0 or not sensitivity > 0 or utility_range < 0:
        raise ValueError(
            "need epsilon >= 0, sensitivity > 0 and utility_range >= 0; "
            f"got {epsilon}, {sensitivity}, {utility_range}"
        )
    return float(epsilon) * float(utility_range) / (2.0 * float(sensitivity))


#: Δu of :func:`regression_utility`: every record's score lies in [0, 1], so adding,
#: removing or replacing one record moves the mean by at most 1 (SecProbe's bound).
REGRESSION_SENSITIVITY = 1.0


def regression_utility(predictions: np.ndarray, targets: np.ndarray) -> float:
    """SecProbe's clipped relative-error score of a regression model, in [0, 1].

    The mean over validation records of ``1 - min(1, |ŷ - y| / |y|)``: 1 for exact
    predictions, 0 for records predicted off by 100% or more (and for ``y = 0`` unless
    ``ŷ = 0``; a non-finite ŷ scores 0). Clipping bounds each record's contribution,
    which gives the sensitivity :data:`REGRESSION_SENSITIVITY`.

    >>> regression_utility(np.array([1.0, 3.0, 0.0]), np.array([2.0, 2.0, 0.0]))
    0.6666666666666666
    """
    pred = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    if pred.shape != y.shape or y.size == 0:
        raise ValueError(
            "predictions and targets must be non-empty and of equal size; "
            f"got {pred.size}, {y.size}"
        )
    if not np.all(np.isfinite(y)):
        raise ValueError("targets must be finite")
    err = np.where(np.isfinite(pred), np.abs(pred - y), np.inf)  # non-finite ŷ scores 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.where(np.abs(y) > 0, err / np.abs(y), np.where(err > 0, np.inf, 0.0))
    return float(np.mean(1.0 - np.minimum(1.0, rel)))


def utility_sensitivity(n: int, mode: SensitivityName, task: str) -> float:
    """Δu of the validation utility of ``n`` records for a ``classification`` task
    (:func:`accuracy_sensitivity`) or a ``regression`` task (:func:`regression_utility`:
    the paper's :data:`REGRESSION_SENSITIVITY`, or the tight 1/n — each record's score
    lies in [0, 1], so replacing one moves the mean by at most 1/n).

    >>> utility_sensitivity(10, "paper", "regression")
    1.0
    >>> utility_sensitivity(10, "tight", "regression")
    0.1
    """
    if task == "classification":
        return accuracy_sensitivity(n, mode)
    if mode == "paper":
        return REGRESSION_SENSITIVITY
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    return 1.0 / n
