"""volcal.toml: defaults, validation messages, command-line overrides, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from volcal.cli import EXIT_USAGE, main
from volcal.config import JobConfig, load_config
from volcal.errors import ConfigError

FULL = """
[job]
exchanges = ["Deribit"]
currencies = ["btc", "ETH"]
models = ["svi", "heston"]
out = "reports"
store = "hist/volcal.duckdb"
report = false
strict = true

[input]
source = "replay"
replay = ["tapes/a.jsonl.gz"]

[fit]
weights = "vega"
min_t_days = 1.5
min_quotes = 8
heston_engine = "quantlib"

[margin]
confidence = 0.975
horizon_days = 2
standard_portfolios = false

[portfolios]
desk = "books/desk.csv"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "volcal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_readme_run() -> None:
    cfg = load_config(None)
    assert cfg == JobConfig()
    assert cfg.input.source == "tapes" and cfg.input.data == "data"
    assert cfg.models is None  # every available model
    assert cfg.store_path == Path("out") / "volcal.duckdb"
    assert cfg.margin.confidence == 0.99 and cfg.margin.horizon_days == 1.0


def test_full_file_is_read_normalised_and_paths_resolved(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, FULL))
    assert cfg.exchanges == ("deribit",)
    assert cfg.currencies == ("BTC", "ETH")
    assert cfg.models == ("svi", "heston")
    assert Path(cfg.out) == tmp_path.resolve() / "reports"
    assert cfg.store_path == tmp_path.resolve() / "hist" / "volcal.duckdb"
    assert cfg.report is False and cfg.strict is True
    assert cfg.input.replay == (str(tmp_path.resolve() / "tapes" / "a.jsonl.gz"),)
    assert cfg.fit.weights == "vega" and cfg.fit.min_quotes == 8
    assert cfg.fit.heston_engine == "quantlib"
    assert cfg.margin.confidence == 0.975 and cfg.margin.horizon_days == 2.0
    assert cfg.portfolios == (("desk", str(tmp_path.resolve() / "books" / "desk.csv")),)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[jobs]\nout = 'x'\n", "unknown table 'jobs'; did you mean 'job'?"),
        ("currencies = ['BTC']\n", "unknown top-level key 'currencies'"),
        (
            "[job]\ncurrency = ['BTC']\n",
            "[job]: unknown key 'currency'; did you mean 'currencies'?",
        ),
        ("[job]\nmodels = ['svj']\n", "unknown model 'svj'"),
        ("[job]\nreport = 'yes'\n", "report must be true or false, got 'yes'"),
        ("[job]\ncurrencies = 'BTC/ETH'\n", "'BTC/ETH' is not a coin code"),
        ("[margin]\nconfidence = 99\n", "[margin]: confidence must be in (0, 1)"),
        ("[margin]\nconfidence = '0.99'\n", "confidence must be a number"),
        ("[margin]\nhorizon_days = 0\n", "horizon_days must be in (0, 365]"),
        ("[fit]\nmin_quotes = 2\n", "min_quotes must be an integer >= 3, got 2"),
        ("[fit]\nweights = 'vegas'\n", "weights = 'vegas' is not one of"),
        ("[input]\nsource = 'snapshot'\n", "source = 'snapshot' needs snapshot = 'file'"),
        ("[input]\nat = 'yesterday-ish'\n", "at = 'yesterday-ish' is not a timestamp"),
        ("[job\nout = 'x'\n", "not valid TOML"),
    ],
)
def test_invalid_files_say_where_and_what(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert fragment in message
    assert str(path) in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides_win_and_are_validated(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, FULL))
    over = cfg.with_overrides(
        currencies=["SOL"], out="elsewhere", confidence=0.9, portfolios=["x/short.csv"], store=""
    )
    assert over.currencies == ("SOL",) and over.out == "elsewhere"
    assert over.margin.confidence == 0.9
    assert over.portfolios[-1] == ("short", "x/short.csv") and len(over.portfolios) == 2
    assert over.store_path is None
    assert cfg.with_overrides(currencies=None) == cfg  # None means "not given"
    with pytest.raises(ConfigError, match="confidence must be in"):
        cfg.with_overrides(confidence=1.5)
    with pytest.raises(ConfigError, match="unknown model"):
        cfg.with_overrides(models=["garch"])


def test_config_hash_is_stable_and_sensitive() -> None:
    a, b = JobConfig(), JobConfig()
    assert a.config_hash() == b.config_hash() and len(a.config_hash()) == 64
    assert a.with_overrides(confidence=0.95).config_hash() != a.config_hash()


def test_cli_config_errors_exit_2(tmp_path: Path) -> None:
    bad = _write(tmp_path, "[margin]\nconfidence = 2\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "o")]) == EXIT_USAGE
    assert not (tmp_path / "o").exists()
    assert main(["run", "--models", "nonsense", "--out", str(tmp_path / "o")]) == EXIT_USAGE
