"""The daily job end to end (``volcal run``): failure isolation, exit codes, store, outputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.jobs_fakes import (  # noqa: F401  (fixture)
    ETH_TAPE,
    fake_models,
    no_margin_config,
    tape_chain,
)
from volcal import OptionChain
from volcal.cli import EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS, main
from volcal.jobs import standard_portfolios
from volcal.store import Store


def _run(tmp_path: Path, *extra: str) -> int:
    cfg = no_margin_config(tmp_path)
    return main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--quiet", *extra])


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "summary.json").read_text())


@pytest.mark.usefixtures("fake_models")
def test_failing_model_is_recorded_and_the_others_stored(tmp_path: Path) -> None:
    code = _run(tmp_path, "--replay", str(ETH_TAPE), "--models", "svi", "heston")
    assert code == EXIT_FAILURE
    summary = _summary(tmp_path)
    models = summary["chains"][0]["models"]
    assert models["svi"]["status"] == "ok"
    assert models["heston"]["status"] == "failed"
    assert models["heston"]["error"] == "CalibrationError: fake failure on ETH"
    assert summary["run"]["status"] == "partial" and summary["run"]["exit_code"] == 1
    assert (tmp_path / "out" / "report.html").exists()
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        fits = store.fits().set_index("model")["status"].to_dict()
        assert fits == {"svi": "ok", "heston": "failed"}
        assert len(store.param_history("svi")) > 0
        run = store.runs().iloc[-1]
        assert run["status"] == "partial" and run["exit_code"] == 1
        assert "fake failure on ETH" in run["errors"]
        assert json.loads(run["sources"])[0]["sha256"]  # the tape's checksum is recorded


@pytest.mark.usefixtures("fake_models")
def test_warnings_exit_3_only_under_strict(tmp_path: Path) -> None:
    assert _run(tmp_path, "--replay", str(ETH_TAPE), "--models", "svi", "ssvi") == EXIT_OK
    assert _summary(tmp_path)["chains"][0]["models"]["ssvi"]["status"] == "warning"
    args = ("--replay", str(ETH_TAPE), "--models", "svi", "ssvi", "--strict")
    assert _run(tmp_path, *args) == EXIT_WARNINGS


@pytest.mark.usefixtures("fake_models")
def test_one_bad_tape_does_not_lose_the_other(tmp_path: Path) -> None:
    bad = tmp_path / "deribit-BTC-broken.jsonl.gz"
    bad.write_bytes(gzip.compress(b"this is not a tape\n"))
    code = _run(tmp_path, "--replay", str(bad), str(ETH_TAPE), "--models", "svi")
    assert code == EXIT_FAILURE
    chains = {c["source"]["path"]: c for c in _summary(tmp_path)["chains"]}
    assert chains[str(bad)]["status"] == "load_failed" and chains[str(bad)]["error"]
    assert chains[str(ETH_TAPE)]["status"] == "ok"
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        assert store.snapshots()["currency"].tolist() == ["ETH"]


@pytest.mark.usefixtures("fake_models")
def test_rerun_is_idempotent_and_failed_run_keeps_outputs(tmp_path: Path) -> None:
    args = ("--replay", str(ETH_TAPE), "--models", "svi")
    assert _run(tmp_path, *args) == EXIT_OK
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        first = store.counts()
    report = (tmp_path / "out" / "report.html").read_bytes()
    assert _run(tmp_path, *args) == EXIT_OK
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        second = store.counts()
    assert second["runs"] == first["runs"] + 1
    assert {k: v for k, v in second.items() if k != "runs"} == {
        k: v for k, v in first.items() if k != "runs"
    }
    # a run whose every input fails writes nothing: the earlier report and summary stay
    bad = tmp_path / "broken.jsonl.gz"
    bad.write_bytes(gzip.compress(b"junk\n"))
    summary = (tmp_path / "out" / "summary.json").read_bytes()
    assert _run(tmp_path, "--replay", str(bad), "--models", "svi") == EXIT_FAILURE
    assert (tmp_path / "out" / "summary.json").read_bytes() == summary
    assert len((tmp_path / "out" / "report.html").read_bytes()) == len(report)


@pytest.mark.usefixtures("fake_models")
def test_no_store_and_no_report(tmp_path: Path) -> None:
    args = ("--replay", str(ETH_TAPE), "--models", "svi", "--no-store", "--no-report")
    assert _run(tmp_path, *args) == EXIT_OK
    assert not (tmp_path / "out" / "volcal.duckdb").exists()
    assert not (tmp_path / "out" / "report.html").exists()
    assert _summary(tmp_path)["run"]["store"] is None


def test_standard_portfolios_pick_listed_usable_options() -> None:
    chain = tape_chain("ETH")
    books = standard_portfolios(chain)
    assert set(books) == {"short_straddle", "short_strangle", "risk_reversal"}
    q = chain.quotes.set_index("symbol")
    for book in books.values():
        assert (q.loc[book["symbol"], "filter_reason"] == "").all()
        assert q.loc[book["symbol"], "expiry"].nunique() == 1
    strangle = q.loc[books["short_strangle"]["symbol"]]
    assert strangle["call"].tolist() == [True, False]
    assert (strangle["k"].iloc[0] > 0) and (strangle["k"].iloc[1] < 0)


def test_default_run_on_one_tape_with_the_real_models(tmp_path: Path) -> None:
    """The real fits and margin (whatever this volcal provides) through the whole job."""
    from volcal.jobs import available_models

    out = tmp_path / "out"
    code = main(["run", "--replay", str(ETH_TAPE), "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    chain = summary["chains"][0]
    assert set(chain["models"]) == set(available_models())
    failed = {m: v["error"] for m, v in chain["models"].items() if v["status"] == "failed"}
    assert not failed
    assert code == EXIT_OK, summary["errors"]
    assert (out / "report.html").stat().st_size > 50_000


@pytest.mark.usefixtures("fake_models")
def test_run_from_a_snapshot_file_records_its_checksum(tmp_path: Path) -> None:
    from volcal.jobs import sha256_file

    snap = tape_chain("ETH").to_parquet(tmp_path / "eth.parquet")
    args = ("--snapshot", str(snap), "--currency", "eth", "--models", "svi", "--no-report")
    assert _run(tmp_path, *args) == EXIT_OK
    chain = _summary(tmp_path)["chains"][0]
    assert chain["underlying"] == "ETH" and chain["models"]["svi"]["status"] == "ok"
    assert chain["source"] == {"kind": "snapshot", "path": str(snap), "sha256": sha256_file(snap)}
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        assert store.snapshots()["source_sha256"].tolist() == [sha256_file(snap)]


# ---------------------------------------------------------------------------------------------
# margin parameters: calibrated from the store's history when it is long enough


def _history_chain(as_of: pd.Timestamp, spot: float) -> OptionChain:
    """A BTC chain priced from a fixed parametric smile at ``spot``: expiries 7, 30, 90 and
    200 days out, strikes every 2 % of log-moneyness within +-40 %."""
    from volcal import black_price
    from volcal.risk import ParametricSmile

    smile = ParametricSmile(spot=spot, atm_vol=0.5, skew=-0.3, curvature=0.8, rate=0.02)
    rows = []
    for days in (7, 30, 90, 200):
        expiry = as_of + pd.Timedelta(days=days)
        t = days / 365.0
        f = float(smile.forward(t))
        k = np.repeat(np.round(f * np.exp(np.linspace(-0.4, 0.4, 41))), 2)
        call = np.tile([False, True], 41)
        v = np.asarray(smile.implied_vol(k, t), dtype=float)
        price = {dv: np.asarray(black_price(f, k, t, v + dv, call)) / f for dv in (-5e-3, 0, 5e-3)}
        rows.append(
            pd.DataFrame(
                {
                    "symbol": [
                        f"BTC-{expiry:%d%b%y%H}-{int(x)}-{'C' if c else 'P'}".upper()
                        for x, c in zip(k, call, strict=True)
                    ],
                    "expiry": expiry,
                    "strike": k,
                    "call": call,
                    "bid_coin": price[-5e-3],
                    "ask_coin": price[5e-3],
                    "mark_coin": price[0],
                    "forward": f,
                    "open_interest": 100.0,
                    "index_price": spot,
                    "exchange_volume": 7.0,
                }
            )
        )
    return OptionChain.from_quotes(
        pd.concat(rows, ignore_index=True), as_of=as_of, exchange="deribit", underlying="BTC"
    )


@pytest.fixture(scope="module")
def btc_history() -> list[OptionChain]:
    """32 days of six-hourly chains (GBM spot, 60 % vol) then the chain to margin."""
    rng = np.random.default_rng(3)
    n = 4 * 32 + 1
    spot = 80_000.0 * np.exp(np.cumsum(rng.standard_normal(n) * 0.6 / np.sqrt(365 * 4)))
    start = pd.Timestamp("2026-01-01 08:00", tz="UTC")
    return [_history_chain(start + pd.Timedelta(hours=6 * i), float(s)) for i, s in enumerate(spot)]


def _store_of(path: Path, chains: list[OptionChain]) -> Path:
    from volcal.store import RunRecord, SnapshotTables, _chain_frame

    snaps = [
        SnapshotTables(
            c.exchange, c.underlying, c.as_of, {"status": "ok"}, {"chains": _chain_frame(c.quotes)}
        )
        for c in chains
    ]
    with Store(path) as store:
        store.write(RunRecord("history"), snaps)
    return path


@pytest.fixture(scope="module")
def btc_stores(
    btc_history: list[OptionChain], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """Stores holding the 32 days before the last chain, and only the last 10 of them."""
    folder = tmp_path_factory.mktemp("margin_history")
    past = btc_history[:-1]
    return _store_of(folder / "h.duckdb", past), _store_of(folder / "short.duckdb", past[-40:])


def test_margin_params_calibrated_from_the_store(
    btc_history: list[OptionChain], btc_stores: tuple[Path, Path]
) -> None:
    from volcal.config import MarginSettings
    from volcal.jobs import MIN_MARGIN_HISTORY_DAYS, _margin_params
    from volcal.risk import calibrate_margin_params, history_stats

    *past, today = btc_history
    settings = MarginSettings(confidence=0.99, horizon_days=1.0)
    store, short = btc_stores
    params, origin = _margin_params(settings, today, store=store)
    assert origin.startswith(f"calibrated on {len(past)} stored snapshot(s)"), origin
    # the same numbers as calibrating on the chains themselves (store round trip is lossless)
    direct = calibrate_margin_params(history_stats(btc_history), 0.99, "1D")
    assert params.price_range == pytest.approx(direct.price_range, rel=1e-9)
    assert params.vol_shock == direct.vol_shock and params.ssr == pytest.approx(direct.ssr)
    assert pd.Timestamp(params.as_of) == today.as_of  # today's chain is part of the history
    # sticky-strike smile, 60 % GBM: the range is a few percent, not the reference 16 %
    assert 0.02 < params.price_range < 0.16
    # too short a history (10 days): the reference grid, saying why
    ref, why = _margin_params(settings, today, store=short)
    assert why.startswith("reference grid") and f"needs {MIN_MARGIN_HISTORY_DAYS:g} days" in why
    assert ref.price_range == 0.16 and ref.horizon_days == 1.0
    # no history at all (the shipped one-instant run): the reference grid
    ref, why = _margin_params(settings, today)
    assert why.startswith("reference grid") and "no history" in why
    # a 99.9 % confidence needs 1000 horizon returns: 128 are not enough
    _, why = _margin_params(MarginSettings(confidence=0.999), today, store=store)
    assert why.startswith("reference grid") and "(< 1000 at confidence 0.999)" in why


def test_margin_step_records_the_parameters(
    btc_history: list[OptionChain], btc_stores: tuple[Path, Path]
) -> None:
    from types import SimpleNamespace

    from volcal.config import MarginSettings
    from volcal.jobs import ModelResult, margin_step
    from volcal.risk import MarkSurface

    today = btc_history[-1]
    store = btc_stores[0]
    model = ModelResult("marks", "ok", fit=SimpleNamespace(surface=MarkSurface.from_chain(today)))
    q = today.quotes
    book = pd.DataFrame({"symbol": q["symbol"].iloc[[40, 41]], "quantity": [-1.0, -1.0]})
    got = margin_step(today, [model], {"book": book}, MarginSettings(), store=store)[0]
    assert got.status == "ok", got.error
    assert got.detail.startswith("params: calibrated on")
    m = got.metrics.set_index("metric")["value"]
    assert m["params_calibrated"] == 1.0 and m["params_price_range"] < 0.16
    # the FHS confidence scale from the same history: the 99 % quantile of the book's
    # simulated (loss - liquidity) / risk, applied to the risk part of the margin
    from volcal.jobs import _margin_calibration
    from volcal.risk import SmileDynamics, margin, resolve_positions
    from volcal.risk.fhs import historical_scenarios, scenario_losses

    params, _, stats = _margin_calibration(MarginSettings(), today, store=store)
    surface = model.fit.surface
    rep = margin(book, surface, today, params, reference=False)
    sim = scenario_losses(
        resolve_positions(book, today),
        surface,
        historical_scenarios(stats, "1D", ssr=params.ssr),
        SmileDynamics(params.ssr),
    )
    score = np.sort(
        (sim - rep.components["liquidity_addon"]["coin"]) / rep.components["risk"]["coin"]
    )
    c = score[int(np.ceil(0.99 * score.size)) - 1]
    assert m["params_confidence_scale"] == pytest.approx(c, rel=1e-9)
    assert 0.05 < c < 5 and "confidence scale" in got.detail and "FHS" in got.detail
    assert m["initial_margin_usd"] == pytest.approx(
        c * m["risk_usd"] + m["liquidity_addon_usd"], rel=1e-9
    )
    plain = margin_step(today, [model], {"book": book}, MarginSettings())[0]
    assert plain.detail.startswith("params: reference grid")
    assert plain.metrics.set_index("metric")["value"]["params_price_range"] == 0.16
    assert plain.metrics.set_index("metric")["value"]["params_confidence_scale"] == 1.0
    # the calibrated range is smaller: so is the margin of the short strangle
    im = plain.metrics.set_index("metric")["value"]["initial_margin_usd"]
    assert m["initial_margin_usd"] < im


def test_heston_like_fit_gets_per_expiry_rmse_and_inside_share() -> None:
    """One-parameter-set fits (Heston) report rmse/inside per expiry from their quotes."""
    from types import SimpleNamespace

    from volcal.jobs import _flatten_fit

    e1, e2 = pd.Timestamp("2026-02-27 08:00", tz="UTC"), pd.Timestamp("2026-03-27 08:00", tz="UTC")
    quotes = pd.DataFrame(
        {
            "symbol": ["A", "B", "C", "D"],
            "expiry": [e1, e1, e2, e2],
            "iv_bid": [0.50, 0.60, 0.40, 0.45],
            "iv_ask": [0.52, 0.62, 0.42, 0.47],
        }
    )
    chain = SimpleNamespace(quotes=quotes)
    fit = SimpleNamespace(
        params=SimpleNamespace(to_dict=lambda: {"v0": 0.3}),
        quotes=SimpleNamespace(symbol=("A", "B", "C", "D"), iv=np.array([0.51, 0.61, 0.41, 0.46])),
        model_iv=np.array([0.51, 0.64, 0.44, 0.46]),  # errors 0, +3, +3 pts, 0
        used=np.array([True, True, True, False]),
        rmse_iv=0.0,
    )
    diag = _flatten_fit("heston", fit, chain, 0.0).diagnostics  # type: ignore[arg-type]
    per = diag[diag["expiry"].notna()].set_index(["expiry", "metric"])["value"]
    assert per[(e1, "rmse_iv")] == pytest.approx(0.03 / np.sqrt(2), rel=1e-12)
    assert per[(e1, "inside")] == 0.5 and per[(e1, "n_quotes")] == 2
    assert per[(e2, "rmse_iv")] == pytest.approx(0.03, rel=1e-12)  # D is not used
    assert per[(e2, "inside")] == 0.0 and per[(e2, "n_quotes")] == 1


def test_heston_weights_follow_the_configured_scheme() -> None:
    """``weights = "vega_spread"``: Heston weights its squared vol errors by 1/spread^2."""
    from volcal.jobs import _with_heston_weights

    q = pd.DataFrame(
        {
            "filter_reason": ["", "", "", "no bid"],
            "iv_bid": [0.50, 0.48, np.nan, 0.40],
            "iv_ask": [0.52, 0.52, 0.55, 0.50],
        }
    )
    w = _with_heston_weights(q, "vega_spread")["heston_weight"].to_numpy()
    # spreads 0.02 and 0.04: W^2 ratio 4; the one-sided quote gets the smallest weight
    assert w[0] / w[1] == pytest.approx(4.0, rel=1e-12)
    assert w[2] == w[1] and w[3] == w[1]
    assert np.mean(w[:2]) == pytest.approx(1.0, rel=1e-12)
