"""The reference profile: exposure-weighted bins frozen at registration."""

from __future__ import annotations

import numpy as np
import pytest

from ratekeeper.packaging.profile import LevelShares, NumericBins, ReferenceProfile
from ratekeeper.packaging.signature import Signature
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio


def test_numeric_bins_by_hand() -> None:
    # weights 3:1 → every decile but the last falls on the value 0: one edge, two bins.
    bins = NumericBins.fit(np.array([0.0, 10.0]), np.array([3.0, 1.0]))
    assert bins.edges == (0.0,)
    assert bins.shares == (0.75, 0.25)
    assert bins.missing_share == 0.0


def test_numeric_bins_are_deciles_with_open_tails_and_a_missing_bin() -> None:
    values = np.arange(1.0, 101.0)
    values[:5] = np.nan
    bins = NumericBins.fit(values, np.ones(100))
    assert len(bins.edges) == 9 and list(bins.edges) == sorted(bins.edges)
    assert bins.missing_share == pytest.approx(0.05)
    assert sum(bins.shares) + bins.missing_share == pytest.approx(1.0)
    assert all(s == pytest.approx(0.095, abs=0.011) for s in bins.shares)
    # Values far outside the training range land in the open tails, never nowhere.
    shares, missing = bins.shares_of(np.array([-1e9, 1e9, np.nan]), np.ones(3))
    assert (shares[0], shares[-1], missing) == (
        pytest.approx(1 / 3),
        pytest.approx(1 / 3),
        pytest.approx(1 / 3),
    )


def test_bins_are_right_closed() -> None:
    bins = NumericBins((1.0, 2.0), (0.0, 0.0, 0.0), 0.0)
    shares, _ = bins.shares_of(np.array([1.0, 1.5, 2.0, 2.5]), np.ones(4))
    assert shares == [0.25, 0.5, 0.25]


def test_exposure_weights_the_shares() -> None:
    levels = np.array(["a", "b", "b", None], dtype=object)
    shares = LevelShares.fit(levels, np.array([2.0, 1.0, 1.0, 4.0]))
    assert shares.levels == ("a", "b")
    assert shares.shares == (0.25, 0.25)
    assert (shares.other_share, shares.missing_share) == (0.0, 0.5)


def test_profile_of_a_portfolio_covers_every_factor_and_the_prediction() -> None:
    book = motor_portfolio(5000, seed=1)
    signature = Signature.infer(book, RATING_FACTORS, exposure="exposure")
    columns = {name: book[name].to_numpy() for name in book.columns}
    columns["exposure"] = book["exposure"].to_numpy(dtype=float)
    for name in ("driver_age", "vehicle_age", "bonus_malus", "power_kw"):
        columns[name] = book[name].to_numpy(dtype=float)
    prediction = np.linspace(0.01, 0.5, len(book))
    profile = ReferenceProfile.build(signature, columns, len(book), prediction)
    assert set(profile.factors) == set(RATING_FACTORS)
    assert profile.weight == "exposure"
    assert profile.total_weight == pytest.approx(book["exposure"].sum())
    area = profile.factors["area"]
    assert isinstance(area, LevelShares)
    expected = book.groupby("area", observed=True)["exposure"].sum() / book["exposure"].sum()
    assert dict(zip(area.levels, area.shares, strict=True)) == pytest.approx(expected.to_dict())
    assert len(profile.prediction.edges) == 9
    assert ReferenceProfile.from_dict(profile.to_dict()) == profile
