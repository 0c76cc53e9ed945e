"""Bjøntegaard figures of ``benchmarks/rd.py`` on curves whose answer is known exactly, and its
piecewise cubic interpolation against SciPy's."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import rd  # noqa: E402

ANCHOR = [(1.0e5, 28.0), (2.0e5, 30.5), (4.0e5, 32.2), (8.0e5, 33.1)]


def test_the_same_quality_at_four_fifths_of_the_bytes_is_minus_twenty_percent():
    test = [(0.8 * r, p) for r, p in ANCHOR]
    assert rd.bd_rate(ANCHOR, test) == pytest.approx(-20.0, abs=1e-9)
    assert rd.bd_rate(test, ANCHOR) == pytest.approx(25.0, abs=1e-9)


def test_half_a_decibel_more_everywhere_is_plus_half_a_decibel():
    test = [(r, p + 0.5) for r, p in ANCHOR]
    assert rd.bd_psnr(ANCHOR, test) == pytest.approx(0.5, abs=1e-12)
    assert rd.bd_rate(ANCHOR, ANCHOR) == pytest.approx(0.0, abs=1e-12)


def test_linear_curves_in_log_rate_give_the_analytic_gap():
    # PSNR = 10 + 4 log10(R) against 10 + 5 log10(R) over R in [10^4, 10^6]: the mean of
    # log10(R) over [4, 6] is 5, so BD-PSNR = 5 dB; at equal PSNR, log10 R differs by
    # (P - 10) / 5 - (P - 10) / 4 = -(P - 10) / 20, whose mean over the shared PSNR range
    # [30, 34] (P - 10 averaging 22) is -1.1.
    rates = [1e4, 1e5, 3e5, 1e6]
    a = [(r, 10 + 4 * math.log10(r)) for r in rates]
    t = [(r, 10 + 5 * math.log10(r)) for r in rates]
    assert rd.bd_psnr(a, t) == pytest.approx(5.0, abs=1e-9)
    assert rd.bd_rate(a, t) == pytest.approx((10 ** -1.1 - 1) * 100, abs=1e-9)


def test_pchip_integral_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    x = np.array([0.0, 0.7, 1.5, 2.0, 3.2])
    y = np.array([1.0, 2.5, 2.7, 4.0, 4.1])
    ours = rd.pchip_integral(x, y, 0.3, 2.9)
    theirs = interpolate.PchipInterpolator(x, y).integrate(0.3, 2.9)
    assert ours == pytest.approx(theirs, rel=1e-12)
    np.testing.assert_allclose(rd.pchip_slopes(x, y), interpolate.PchipInterpolator(
        x, y).derivative()(x), rtol=1e-12, atol=1e-12)


def test_curves_that_do_not_overlap_or_repeat_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        rd.bd_psnr(ANCHOR, [(1e7, 30.0), (2e7, 31.0)])
    with pytest.raises(ValueError, match="repeated"):
        rd.bd_rate(ANCHOR, [(1e5, 30.0), (2e5, 30.0)])
