"""Quote weighting schemes of ``select_quotes`` (and the job's ``weights`` setting)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.svi.synthetic import svi_quotes
from volcal.black import black_greeks
from volcal.config import WEIGHT_SCHEMES as CONFIG_SCHEMES
from volcal.errors import ParameterError
from volcal.svi import SviRaw
from volcal.svi.quotes import WEIGHT_SCHEMES, select_quotes

SMILES = [
    (0.1, SviRaw(a=0.004, b=0.05, rho=-0.3, m=0.02, sigma=0.15)),
    (0.5, SviRaw(a=0.02, b=0.10, rho=-0.4, m=0.05, sigma=0.25)),
]


@pytest.fixture(scope="module")
def quotes():
    q = svi_quotes(SMILES, n=15, half_spread=0.004)
    # widen some spreads so that vega_spread differs from uniform
    wide = q.index[::4]
    q.loc[wide, "iv_ask"] = q.loc[wide, "iv_ask"] + 0.02
    return q


def test_config_and_fit_agree_on_the_schemes():
    assert CONFIG_SCHEMES == WEIGHT_SCHEMES


def test_vega_spread_is_one_over_the_vol_spread(quotes):
    sel = select_quotes(quotes, weights="vega_spread", spread_floor=0.005)
    used = sel[sel["used"]]
    spread = used["iv_ask"] - used["iv_bid"]
    np.testing.assert_allclose(used["weight"], 1.0 / np.maximum(spread, 0.005), rtol=1e-15)
    assert used["weight"].nunique() > 1


def test_vega_weights_are_proportional_to_black_vega_per_expiry(quotes):
    sel = select_quotes(quotes, weights="vega", spread_floor=0.01)
    used = sel[sel["used"]]
    for _, grp in used.groupby("expiry"):
        vega = np.asarray(
            black_greeks(
                grp["forward"].to_numpy(),
                grp["strike"].to_numpy(),
                grp["t"].to_numpy(),
                grp["iv_mid"].to_numpy(),
                grp["call"].to_numpy(),
            ).vega
        )
        np.testing.assert_allclose(grp["weight"], vega / vega.max() / 0.01, rtol=1e-12)
        assert grp["weight"].max() == pytest.approx(100.0, rel=1e-15)


def test_uniform_weights_are_constant(quotes):
    sel = select_quotes(quotes, weights="uniform", spread_floor=0.004)
    used = sel[sel["used"]]
    assert (used["weight"] == 250.0).all()
    assert sel.loc[~sel["used"], "weight"].isna().all()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"weights": "spread"}, "weights"), ({"spread_floor": 0.0}, "spread_floor")],
)
def test_bad_settings_raise_parameter_error(quotes, kwargs, word):
    with pytest.raises(ParameterError, match=word):
        select_quotes(quotes, **kwargs)


@pytest.mark.parametrize("fitter", ["fit_svi", "fit_ssvi", "fit_essvi"])
def test_fits_use_the_requested_scheme(quotes, fitter):
    import volcal.svi as svi

    fit = getattr(svi, fitter)(quotes, weights="uniform", spread_floor=0.01)
    used = fit.quotes[fit.quotes["used"]]
    assert (used["weight"] == 100.0).all()
    assert fit.settings["weights"] == "uniform"
    with pytest.raises(ParameterError, match="weights"):
        getattr(svi, fitter)(quotes, weights="spreads")


def test_job_passes_its_weights_setting_to_the_surface_fits():
    from tests.jobs_fakes import ETH_TAPE
    from volcal.config import FitSettings
    from volcal.data.exchanges import fetch_chain
    from volcal.data.tape import replay
    from volcal.jobs import _fit_svi_family

    chain = fetch_chain(replay(ETH_TAPE), "ETH")
    fit = _fit_svi_family("essvi", chain, FitSettings(weights="vega"))
    assert fit.settings["weights"] == "vega"
    used = fit.quotes[fit.quotes["used"]]
    assert used.groupby("expiry")["weight"].max().eq(200.0).all()  # vega / max vega / floor
