"""Units: ACT/365F year fractions from exact UTC timestamps, log-moneyness, coin <-> USD."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from volcal.conventions import coin_to_usd, log_moneyness, to_utc, usd_to_coin, year_fraction


def test_year_fraction_exact_hours_act365f() -> None:
    as_of = "2026-01-14T06:00:00Z"
    # 08:00 UTC expiry 17 days later: (17 * 24 + 2) hours / 8760
    assert year_fraction(as_of, "2026-01-31T08:00:00Z") == pytest.approx(410 / 8760, rel=1e-15)
    # leap years do not change the 365-day year (ACT/365F)
    assert year_fraction("2028-01-01", "2029-01-01") == pytest.approx(366 / 365, rel=1e-15)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_year_fraction_independent_of_pandas_resolution(unit: str) -> None:
    as_of = pd.Timestamp("2026-01-14 06:00:00.5", tz="UTC").as_unit(unit if unit != "s" else "ms")
    expiries = pd.DatetimeIndex(["2026-01-15 08:00", "2026-12-25 08:00"], tz="UTC").as_unit(unit)
    got = year_fraction(as_of, expiries)
    hours = np.array([26.0, 345 * 24 + 2.0]) - 0.5 / 3600
    np.testing.assert_allclose(got, hours / 8760, rtol=1e-14)
    series = pd.Series(expiries)
    np.testing.assert_allclose(year_fraction(as_of, series), hours / 8760, rtol=1e-14)


def test_to_utc_naive_is_utc_and_aware_is_converted() -> None:
    naive = to_utc(datetime(2026, 1, 1, 8))
    aware = to_utc(datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=1))))
    assert naive == aware
    assert str(naive.tz) == "UTC"
    with pytest.raises(ValueError):
        to_utc("not a time")


def test_moneyness_and_coin_usd() -> None:
    assert log_moneyness(110.0, 100.0) == pytest.approx(np.log(1.1))
    assert coin_to_usd(0.0123, 95_000.0) == pytest.approx(1168.5)
    assert usd_to_coin(1168.5, 95_000.0) == pytest.approx(0.0123)
