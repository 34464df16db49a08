"""The seed statistics of the experiment tables agree with scipy's one-sample t test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedsim.report.stats import format_paired, t_interval


@pytest.mark.parametrize("n", [2, 3, 10])
def test_t_interval_matches_scipys_confidence_interval(n: int) -> None:
    values = list(np.random.default_rng(n).normal(0.1, 0.05, size=n))
    mean, sd, low, high = t_interval(values)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(float(np.mean(values)))
    assert sd == pytest.approx(float(np.std(values, ddof=1)))
    assert (low, high) == pytest.approx((ci.low, ci.high))


def test_one_value_has_no_interval() -> None:
    mean, sd, low, high = t_interval([0.3])
    assert mean == 0.3 and math.isnan(sd) and math.isnan(low) and math.isnan(high)
    assert format_paired([0.3]) == "–"


def test_format_paired_signs_the_bounds() -> None:
    assert format_paired([-0.02, -0.01, -0.03]) == "-0.020 [-0.045, +0.005]"


def test_format_mean_std_uses_the_sample_std() -> None:
    from fedsim.report.stats import format_mean_std

    assert format_mean_std([0.8, 0.9, 1.0]) == "0.900 ± 0.100"  # ddof = 1, not 0.082
    assert format_mean_std([0.81234], digits=2) == "0.81"
    assert format_mean_std([]) == "–"
