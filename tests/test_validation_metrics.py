"""The validation metrics against reference implementations, by hand and on a real portfolio.

References: scikit-learn's deviances, scipy's chi-square, hand-computed small examples, and
straightforward loops written independently of the vectorised code, run on the Belgian MTPL
portfolio (../shared/data/beMTPL97.parquet).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import (
    mean_gamma_deviance,
    mean_poisson_deviance,
    mean_squared_error,
    mean_tweedie_deviance,
)

from ratekeeper.errors import InvalidInputError
from ratekeeper.packaging.profile import LevelShares, NumericBins
from ratekeeper.validation import (
    SHARE_FLOOR,
    chi2_sf,
    dislocation,
    double_lift,
    fairness,
    gamma_deviance,
    gini,
    lift_table,
    mean_deviance,
    poisson_deviance,
    psi,
    tweedie_deviance,
)
from ratekeeper.validation.stability import regularized_upper_gamma
from shared_data import read_portfolio


@pytest.fixture(scope="module")
def be():
    """The Belgian book with two simple real tariffs: frequency by bonus-malus band (coarse)
    and by bonus-malus band × coverage × fuel (finer), and a severity by coverage."""
    frame = read_portfolio("beMTPL97.parquet").copy()
    frame["band"] = np.minimum(frame["bm"] // 3, 5)

    def frequency(keys):
        totals = frame.groupby(keys)[["nclaims", "expo"]].transform("sum")
        return (totals["nclaims"] + 1) / (totals["expo"] + 10)  # shrunk: never 0

    frame["coarse"] = frequency(["band"])
    frame["fine"] = frequency(["band", "coverage", "fuel"])
    claims = frame["nclaims"] > 0
    frame["severity"] = frame.loc[claims].groupby("coverage")["average"].transform("mean")
    pure = frame.groupby("coverage")[["amount", "expo"]].transform("sum")
    frame["pure"] = pure["amount"] / pure["expo"]
    return frame


# -- deviance ----------------------------------------------------------------------------------
def test_poisson_deviance_matches_scikit_learn_on_the_belgian_book(be) -> None:
    y = be["nclaims"] / be["expo"]
    for column in ("coarse", "fine"):
        ours = poisson_deviance(y, be[column], be["expo"])
        assert ours == pytest.approx(
            mean_poisson_deviance(y, be[column], sample_weight=be["expo"]), rel=1e-12
        )
    assert poisson_deviance(y, be["fine"], be["expo"]) < poisson_deviance(
        y, be["coarse"], be["expo"]
    )
    assert mean_deviance("poisson", y, be["fine"], be["expo"]) == poisson_deviance(
        y, be["fine"], be["expo"]
    )


def test_gamma_deviance_matches_scikit_learn_on_the_claims(be) -> None:
    claims = be[be["nclaims"] > 0]
    ours = gamma_deviance(claims["average"], claims["severity"], claims["nclaims"])
    reference = mean_gamma_deviance(
        claims["average"], claims["severity"], sample_weight=claims["nclaims"]
    )
    assert ours == pytest.approx(reference, rel=1e-12)
    assert mean_deviance("gamma", claims["average"], claims["severity"], claims["nclaims"]) == ours


@pytest.mark.parametrize("power", [-0.5, 0.0, 1.0, 1.2, 1.5, 1.8, 2.0, 3.0])
def test_tweedie_deviance_matches_scikit_learn(be, power) -> None:
    if power >= 2:
        claims = be[be["nclaims"] > 0]
        y, mu, w = claims["average"], claims["severity"], claims["nclaims"]
    else:
        y, mu, w = be["amount"] / be["expo"], be["pure"], be["expo"]
    ours = tweedie_deviance(y, mu, w, power=power)
    assert ours == pytest.approx(
        mean_tweedie_deviance(y, mu, sample_weight=w, power=power), rel=1e-10
    )
    assert mean_deviance("tweedie", y, mu, w, power=power) == ours


def test_normal_deviance_is_the_weighted_squared_error(be) -> None:
    y = be["nclaims"] / be["expo"]
    ours = mean_deviance("normal", y, be["fine"], be["expo"])
    assert ours == pytest.approx(
        mean_squared_error(y, be["fine"], sample_weight=be["expo"]), rel=1e-12
    )


def test_deviance_refuses_values_outside_the_family() -> None:
    with pytest.raises(InvalidInputError, match=r"observed values must be positive for Tweedie"):
        gamma_deviance([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(InvalidInputError, match=r"predicted values must be positive"):
        poisson_deviance([1.0, 1.0], [1.0, 0.0])
    with pytest.raises(InvalidInputError, match=r"Tweedie power must be ≤ 0 or ≥ 1, got 0.5"):
        tweedie_deviance([1.0], [1.0], power=0.5)
    with pytest.raises(InvalidInputError, match=r"^mu has 1 values, expected 2$"):
        poisson_deviance([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInputError, match=r"^y must be finite numbers \(row 1 is nan\)$"):
        poisson_deviance([1.0, math.nan], [1.0, 1.0])
    with pytest.raises(InvalidInputError, match=r"^unknown family 'binomial'"):
        mean_deviance("binomial", [1.0], [1.0])
    with pytest.raises(InvalidInputError, match=r"^the tweedie family needs a power$"):
        mean_deviance("tweedie", [1.0], [1.0])


# -- Gini --------------------------------------------------------------------------------------
def test_gini_by_hand_equal_exposure() -> None:
    # Sorted by predicted rate, cumulative claims 0, 0, 1/4, 1/4, 1 against exposure quarters:
    # area = 1/8 × (0 + 1/4 + 1/2 + 5/4) = 1/4, Gini = 1 − 2 × 1/4 = 1/2.
    assert gini([0, 1, 0, 3], [0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1]) == pytest.approx(0.5)


def test_gini_by_hand_uneven_exposure_and_unsorted_rows() -> None:
    # rates: A 0.3, B 0.1, C 0.2, D 0.4 → order B, C, A, D; x = 0, .25, .75, .875, 1;
    # y = 0, 0, .25, .5, 1; area = 0 + .0625 + .046875 + .09375 = .203125.
    actual = [1, 0, 1, 2]
    predicted = [0.15, 0.1, 0.4, 0.2]
    exposure = [0.5, 1.0, 2.0, 0.5]
    assert gini(actual, predicted, exposure) == pytest.approx(1 - 2 * 0.203125)
    reverse = slice(None, None, -1)
    assert gini(actual[reverse], predicted[reverse], exposure[reverse]) == pytest.approx(
        1 - 2 * 0.203125
    )


def test_gini_treats_tied_predictions_as_one_segment() -> None:
    assert gini([1, 0], [0.1, 0.1], [1, 1]) == pytest.approx(0.0)
    assert gini([0, 1], [0.1, 0.1], [1, 1]) == pytest.approx(0.0)
    with pytest.raises(InvalidInputError, match=r"positive total of actual values \(no claims\?\)"):
        gini([0, 0], [0.1, 0.2], [1, 1])


def loop_gini(actual, predicted, exposure) -> float:
    """The Lorenz curve walked policy by policy; tied rates are merged into one step."""
    rows = sorted(zip(predicted / exposure, exposure, actual, strict=True))
    total_exposure, total_actual = sum(exposure), sum(actual)
    steps: list[list[float]] = []
    for rate, e, a in rows:
        if steps and steps[-1][0] == rate:
            steps[-1][1] += e
            steps[-1][2] += a
        else:
            steps.append([rate, e, a])
    area = x = y = 0.0
    for _, e, a in steps:
        x_next, y_next = x + e / total_exposure, y + a / total_actual
        area += (x_next - x) * (y + y_next) / 2
        x, y = x_next, y_next
    return 1 - 2 * area


def test_gini_matches_a_loop_on_the_belgian_book(be) -> None:
    actual, exposure = be["nclaims"].to_numpy(), be["expo"].to_numpy()
    for column in ("coarse", "fine"):
        predicted = be[column].to_numpy() * exposure
        ours = gini(actual, predicted, exposure)
        assert ours == pytest.approx(loop_gini(actual, predicted, exposure), abs=1e-10)
    fine = gini(actual, be["fine"] * exposure, exposure)
    coarse = gini(actual, be["coarse"] * exposure, exposure)
    assert 0.05 < coarse < fine < 0.5  # the finer tariff ranks risks better


# -- lift --------------------------------------------------------------------------------------
def loop_bins(sort_key, exposure, n_bins):
    """Bin per policy: walk in sort order, a policy's exposure midpoint decides its bin."""
    order = sorted(range(len(sort_key)), key=lambda i: sort_key[i])  # stable, like the code
    total = sum(exposure)
    bins = [0] * len(sort_key)
    running = 0.0
    for i in order:
        middle = running + exposure[i] / 2
        bins[i] = min(int(middle / total * n_bins), n_bins - 1)
        running += exposure[i]
    return bins


def test_lift_table_by_hand() -> None:
    table = lift_table(
        actual=[0, 1, 2, 1], predicted=[0.2, 0.1, 0.9, 0.6], exposure=[1, 1, 1, 1], n_bins=2
    )
    # rates 0.2, 0.1, 0.9, 0.6 → bottom half: policies 1 and 0, top half: 3 and 2.
    assert table.exposure == (2.0, 2.0)
    assert table.actual == (0.5, 1.5)
    assert table.predicted == pytest.approx((0.15, 0.75))
    assert table.lift == pytest.approx(3.0)
    assert lift_table([0, 0, 2, 1], [0.2, 0.1, 0.9, 0.6], [1, 1, 1, 1], n_bins=2).lift is None
    with pytest.raises(InvalidInputError, match=r"^3 policies cannot fill 10 bins$"):
        lift_table([0, 1, 0], [0.1, 0.2, 0.3], [1, 1, 1])


def test_lift_table_matches_a_loop_on_the_belgian_book(be) -> None:
    actual, exposure = be["nclaims"].tolist(), be["expo"].tolist()
    predicted = (be["fine"] * be["expo"]).tolist()
    table = lift_table(actual, predicted, exposure)
    bins = loop_bins([p / e for p, e in zip(predicted, exposure, strict=True)], exposure, 10)
    sums = [[0.0, 0.0, 0.0] for _ in range(10)]
    for b, a, p, e in zip(bins, actual, predicted, exposure, strict=True):
        sums[b][0] += e
        sums[b][1] += a
        sums[b][2] += p
    assert table.exposure == pytest.approx([s[0] for s in sums], rel=1e-9)
    assert table.actual == pytest.approx([s[1] / s[0] for s in sums], rel=1e-9)
    assert table.predicted == pytest.approx([s[2] / s[0] for s in sums], rel=1e-9)
    assert max(table.exposure) / min(table.exposure) < 1.01  # deciles of exposure
    assert table.lift == pytest.approx(table.actual[-1] / table.actual[0])
    assert table.lift > 2


def test_double_lift_matches_a_loop_on_the_belgian_book(be) -> None:
    actual, exposure = be["nclaims"].tolist(), be["expo"].tolist()
    champion = (be["coarse"] * be["expo"]).tolist()
    challenger = (be["fine"] * be["expo"]).tolist()
    double = double_lift(actual, champion, challenger, exposure)
    ratios = [h / c for h, c in zip(challenger, champion, strict=True)]
    bins = loop_bins(ratios, exposure, 10)
    sums = [[0.0] * 4 for _ in range(10)]
    for b, a, c, h, e in zip(bins, actual, champion, challenger, exposure, strict=True):
        for k, v in enumerate((e, a, c, h)):
            sums[b][k] += v
    rebase_champion, rebase_challenger = sum(actual) / sum(champion), sum(actual) / sum(challenger)
    assert double.exposure == pytest.approx([s[0] for s in sums], rel=1e-9)
    assert double.actual == pytest.approx([s[1] / s[0] for s in sums], rel=1e-9)
    assert double.champion == pytest.approx([s[2] * rebase_champion / s[0] for s in sums])
    assert double.challenger == pytest.approx([s[3] * rebase_challenger / s[0] for s in sums])
    assert double.ratio == pytest.approx([s[3] / s[2] for s in sums])
    assert list(double.ratio) == sorted(double.ratio)
    overall = sum(actual) / sum(exposure)
    champion_error = sum(s[0] * abs(s[2] * rebase_champion / s[0] - s[1] / s[0]) for s in sums) / (
        sum(exposure) * overall
    )
    assert double.champion_error == pytest.approx(champion_error, rel=1e-9)
    # The finer tariff tracks the actual where the two disagree.
    assert double.challenger_error < double.champion_error


# -- dislocation -------------------------------------------------------------------------------
def test_dislocation_by_hand() -> None:
    moves = dislocation(
        champion_premium=[100, 100, 100, 100, 100],
        challenger_premium=[110, 111, 70, 100, 130],
        segments={"area": ["A", "A", "B", "B", "C"]},
        exposure=[1, 1, 1, 1, 1],
        min_share=0.0,
    )
    # changes +10 % (not beyond), +11 %, −30 %, 0, +30 %
    assert moves.up == pytest.approx((0.4, 0.2))
    assert moves.down == pytest.approx((0.2, 0.2))
    assert moves.beyond(0.10) == pytest.approx(0.6)
    assert moves.beyond(0.25) == pytest.approx(0.4)
    assert moves.total_change == pytest.approx(21 / 500)
    assert sum(moves.counts) == 5
    assert moves.counts[moves.labels.index("[+10 %, +15 %)")] == 2
    assert moves.counts[moves.labels.index("[0 %, +5 %)")] == 1
    assert [(s.factor, s.level, s.policies) for s in moves.worst] == [
        ("area", "C", 1),
        ("area", "B", 2),
        ("area", "A", 2),
    ]
    assert moves.worst[1].mean_change == pytest.approx(-0.15)
    with pytest.raises(InvalidInputError, match=r"no share for cap 0.5"):
        moves.beyond(0.5)
    with pytest.raises(InvalidInputError, match=r"^champion_premium must be positive \(row 1"):
        dislocation([1.0, 0.0], [1.0, 1.0])


def test_dislocation_matches_a_loop_on_the_belgian_book(be) -> None:
    champion = (be["coarse"] * be["expo"] * 1800).to_numpy()
    challenger = (be["fine"] * be["expo"] * 1800).to_numpy()
    exposure = be["expo"].to_numpy()
    segments = {"coverage": be["coverage"].to_numpy(), "fuel": be["fuel"].to_numpy()}
    moves = dislocation(champion, challenger, segments, exposure=exposure)
    changes = [h / c - 1 for h, c in zip(challenger.tolist(), champion.tolist(), strict=True)]
    n = len(changes)
    for k, cap in enumerate((0.10, 0.25)):
        assert moves.up[k] == sum(1 for c in changes if c > cap + 1e-12) / n
        assert moves.down[k] == sum(1 for c in changes if c < -cap - 1e-12) / n
    for i, count in enumerate(moves.counts):
        low = moves.edges[i - 1] if i > 0 else -math.inf
        high = moves.edges[i] if i < len(moves.edges) else math.inf
        assert count == sum(1 for c in changes if low <= c < high)
    cells: dict[tuple[str, str], list[float]] = {}
    for factor, levels in segments.items():
        for level, change, e in zip(levels.tolist(), changes, exposure.tolist(), strict=True):
            cell = cells.setdefault((factor, level), [0.0, 0.0])
            cell[0] += e
            cell[1] += e * change
    expected = sorted(
        ((f, lv, s[1] / s[0]) for (f, lv), s in cells.items() if s[0] / exposure.sum() >= 0.01),
        key=lambda t: -abs(t[2]),
    )
    assert [(s.factor, s.level) for s in moves.worst] == [(f, lv) for f, lv, _ in expected]
    assert [s.mean_change for s in moves.worst] == pytest.approx([m for _, _, m in expected])


# -- stability ---------------------------------------------------------------------------------
def test_psi_against_numeric_bins_by_hand() -> None:
    reference = NumericBins(edges=(1.0, 2.0), shares=(0.2, 0.5, 0.3), missing_share=0.0)
    # right-closed bins: 0.5 → (−inf, 1], 1.0 → (−inf, 1], 1.5 → (1, 2], 9 → (2, inf), nan missing
    result = psi(reference, [0.5, 1.0, 1.5, 9.0, math.nan], [1, 1, 2, 3, 1])
    actual = [2 / 8, 2 / 8, 3 / 8, 1 / 8]
    expected = [0.2, 0.5, 0.3, 0.0]
    assert result.labels == ("≤ 1", "(1, 2]", "> 2", "missing")
    assert result.actual == pytest.approx(actual)
    assert result.expected == tuple(expected)
    hand = sum(
        (max(a, SHARE_FLOOR) - max(e, SHARE_FLOOR))
        * math.log(max(a, SHARE_FLOOR) / max(e, SHARE_FLOOR))
        for a, e in zip(actual, expected, strict=True)
    )
    assert result.psi == pytest.approx(hand, rel=1e-12)
    n = 8**2 / (1 + 1 + 4 + 9 + 1)
    statistic = n * sum(
        (a - max(e, SHARE_FLOOR)) ** 2 / max(e, SHARE_FLOOR)
        for a, e in zip(actual, expected, strict=True)
    )
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.degrees_of_freedom == 3
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 3), rel=1e-9)


def test_psi_against_level_shares_by_hand() -> None:
    reference = LevelShares(levels=("a", "b"), shares=(0.6, 0.4), other_share=0.0, missing_share=0)
    result = psi(reference, ["a", "b", "b", "c"])
    assert result.labels == ("a", "b", "other", "missing")
    assert result.actual == (0.25, 0.5, 0.25, 0.0)
    hand = (
        (0.25 - 0.6) * math.log(0.25 / 0.6)
        + (0.5 - 0.4) * math.log(0.5 / 0.4)
        + (0.25 - 1e-4) * math.log(0.25 / 1e-4)
    )  # the empty missing bin is floored on both sides and adds nothing
    assert result.psi == pytest.approx(hand, rel=1e-12)
    statistic = 4 * ((0.25 - 0.6) ** 2 / 0.6 + (0.5 - 0.4) ** 2 / 0.4 + (0.25 - 1e-4) ** 2 / 1e-4)
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.degrees_of_freedom == 2
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 2), rel=1e-9)
    same = psi(reference, ["a", "a", "a", "b", "b"])
    assert same.psi == pytest.approx(0.0)
    assert same.p_value == pytest.approx(1.0)


def test_psi_of_the_belgian_book_never_rebins(be) -> None:
    first, second = be.iloc[: len(be) // 2], be.iloc[len(be) // 2 :]
    reference = NumericBins.fit(first["ageph"].to_numpy(float), first["expo"].to_numpy())
    result = psi(reference, second["ageph"].to_numpy(float), second["expo"].to_numpy())
    edges = reference.edges
    sums = [0.0] * (len(edges) + 1)
    for age, e in zip(second["ageph"].tolist(), second["expo"].tolist(), strict=True):
        sums[sum(1 for edge in edges if age > edge)] += e
    actual = [s / second["expo"].sum() for s in sums] + [0.0]
    assert result.actual == pytest.approx(actual, rel=1e-9)
    expected = [*reference.shares, 0.0]
    hand = sum(
        (max(a, SHARE_FLOOR) - max(e, SHARE_FLOOR))
        * math.log(max(a, SHARE_FLOOR) / max(e, SHARE_FLOOR))
        for a, e in zip(actual, expected, strict=True)
    )
    assert result.psi == pytest.approx(hand, rel=1e-9)
    # The book is sorted by postcode: its two halves differ a little in age, not a lot.
    assert 0.0 < result.psi < 0.1
    shifted = psi(reference, second["ageph"].to_numpy(float) + 15, second["expo"].to_numpy())
    assert shifted.psi > 0.25
    assert shifted.labels == result.labels


@pytest.mark.parametrize("dof", [1, 2, 3, 9, 30, 199])
def test_chi2_survival_matches_scipy(dof) -> None:
    for x in (1e-6, 0.01, 0.5, 1.0, dof / 2, dof - 0.5, dof, dof + 1, 2 * dof, 5 * dof + 30, 800):
        reference = stats.chi2.sf(x, dof)
        assert chi2_sf(x, dof) == pytest.approx(reference, rel=1e-9, abs=1e-300), (x, dof)
    assert chi2_sf(0.0, dof) == 1.0
    assert chi2_sf(5.0, 0) == 1.0


def test_regularized_upper_gamma_matches_scipy() -> None:
    for a in (0.1, 0.5, 1.0, 2.5, 17.0, 250.0):
        for x in (1e-3, 0.3, a, a + 1, 3 * a + 5):
            assert regularized_upper_gamma(a, x) == pytest.approx(
                special.gammaincc(a, x), rel=1e-10, abs=1e-300
            )
    with pytest.raises(InvalidInputError, match=r"the gamma shape must be positive, got 0"):
        regularized_upper_gamma(0.0, 1.0)


# -- fairness ----------------------------------------------------------------------------------
def test_fairness_by_hand() -> None:
    table = fairness([100, 300, 50, 50], ["f", "m", "f", None], [1, 2, 0.5, 1], attribute="sex")
    assert table.groups == ("f", "m", "missing")
    assert table.policies == (2, 1, 1)
    assert table.exposure == (1.5, 2.0, 1.0)
    assert table.average_premium == pytest.approx((100, 150, 50))
    assert table.ratio == pytest.approx(3.0)
    assert fairness([1.0, 2.0], ["f", "f"]).ratio is None


def test_fairness_by_sex_on_the_belgian_book(be) -> None:
    premium = be["fine"] * be["expo"] * 1800
    table = fairness(premium, be["sex"], be["expo"], attribute="sex")
    grouped = be.assign(premium=premium).groupby("sex")[["premium", "expo"]].sum().sort_index()
    assert table.groups == tuple(grouped.index)
    assert table.average_premium == pytest.approx(
        tuple(grouped["premium"] / grouped["expo"]), rel=1e-12
    )
    averages = grouped["premium"] / grouped["expo"]
    assert table.ratio == pytest.approx(averages.max() / averages.min(), rel=1e-12)
    assert 1.0 < table.ratio < 1.2  # a tariff without sex still prices the groups differently
