"""The daily job's configuration: a TOML file, validated on load, overridden by the command line.

A ``volcal.toml`` has these tables (every key optional; the defaults are what ``volcal run``
does with no configuration)::

    [job]
    exchanges = ["deribit"]          # live: exchanges to fetch; else filter (absent: all)
    currencies = ["BTC", "ETH"]      # empty or absent: every currency the source holds
    models = ["svi", "heston"]       # any of svi, ssvi, essvi, heston; absent: all available
    out = "out"                      # folder of report.html, summary.json, chain parquet
    store = "history.duckdb"         # DuckDB history file; absent: OUT/volcal.duckdb; "" = none
    report = true                    # write report.html
    strict = false                   # exit code 3 when the run completed with warnings

    [input]
    source = "tapes"                 # tapes (the folder `data`), replay, snapshot or live
    data = "data"                    # folder searched for *.jsonl.gz tapes (source = tapes)
    replay = []                      # tape files (source = replay)
    snapshot = ""                    # snapshot file (source = snapshot)
    at = ""                          # UTC instant to pick from the snapshot (default: latest)

    [fit]
    weights = "vega_spread"          # vega_spread, vega or uniform
    min_t_days = 2.0                 # expiries closer than this are not fitted
    min_quotes = 6                   # usable quotes an expiry needs to be fitted
    heston_engine = "fast"           # fast or quantlib
    heston_min_t_days = 7.0          # shorter expiries are priced but do not steer Heston

    [margin]
    confidence = 0.99                # in (0, 1)
    horizon_days = 1.0               # > 0
    standard_portfolios = true       # also margin the standard test books

    [portfolios]                     # name = CSV of positions (symbol, quantity)
    book_a = "positions/book_a.csv"

Relative paths in a file are relative to the file's folder; relative paths given on the
command line are relative to the working directory. Unknown tables or keys, wrong types and
out-of-range values raise :class:`volcal.ConfigError` naming the file, table, key and value.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from volcal.errors import ConfigError

__all__ = [
    "KNOWN_MODELS",
    "WEIGHT_SCHEMES",
    "FitSettings",
    "InputSettings",
    "JobConfig",
    "MarginSettings",
    "load_config",
]

KNOWN_MODELS: tuple[str, ...] = ("svi", "ssvi", "essvi", "heston")
"""Model names the job knows, in the order it fits them."""
WEIGHT_SCHEMES: tuple[str, ...] = ("vega_spread", "vega", "uniform")
"""Quote weighting schemes (``volcal.svi.quotes.WEIGHT_SCHEMES``; a test keeps them equal)."""
SOURCES: tuple[str, ...] = ("tapes", "replay", "snapshot", "live")
HESTON_ENGINES: tuple[str, ...] = ("fast", "quantlib")


@dataclass(frozen=True)
class InputSettings:
    """Where the chains come from.

    Attributes
    ----------
    source:
        ``"tapes"``: every tape (``*.jsonl.gz``) in ``data``; ``"replay"``: the tapes in
        ``replay``; ``"snapshot"``: the file ``snapshot`` at ``at``; ``"live"``: fetch through
        ccxt (recording a tape next to the outputs).
    data:
        Folder of tapes for ``source = "tapes"``.
    replay:
        Tape files for ``source = "replay"``.
    snapshot:
        Snapshot file (Deribit flat, Tardis CSV or volcal parquet) for ``source = "snapshot"``.
    at:
        UTC instant of the snapshot to use; None for the latest in the file.
    """

    source: str = "tapes"
    data: str = "data"
    replay: tuple[str, ...] = ()
    snapshot: str | None = None
    at: str | None = None


@dataclass(frozen=True)
class FitSettings:
    """Settings passed to the model fits.

    Attributes
    ----------
    weights:
        Quote weighting scheme, one of :data:`WEIGHT_SCHEMES`: ``weights=`` of the SVI, SSVI
        and eSSVI fits (:func:`volcal.svi.quotes.select_quotes`); Heston weights its squared
        vol errors by the squares of the same weights (``docs/heston.md``).
    min_t_days:
        Expiries with less than this many days (ACT/365F) left are not fitted.
    min_quotes:
        Usable quotes an expiry needs to be fitted.
    heston_engine:
        ``"fast"`` (volcal's characteristic-function pricer) or ``"quantlib"``.
    heston_min_t_days:
        Expiries with less than this many days left are priced but do not steer the Heston
        fit (one-day smiles push its parameters to their bounds; docs/heston.md).
    """

    weights: str = "vega_spread"
    min_t_days: float = 2.0
    min_quotes: int = 6
    heston_engine: str = "fast"
    heston_min_t_days: float = 7.0


@dataclass(frozen=True)
class MarginSettings:
    """Margin settings.

    Attributes
    ----------
    confidence:
        Confidence level of the margin, in (0, 1) (0.99 = 99 %).
    horizon_days:
        Liquidation horizon in days (> 0).
    standard_portfolios:
        Also margin the standard test books built from each chain.
    """

    confidence: float = 0.99
    horizon_days: float = 1.0
    standard_portfolios: bool = True


@dataclass(frozen=True)
class JobConfig:
    """The resolved configuration of one ``volcal run`` (file, then command-line overrides).

    Attributes
    ----------
    exchanges:
        Exchange ids (lower case); empty = every exchange the source holds (``deribit`` for
        ``source = "live"``).
    currencies:
        Underlying coins (upper case); empty = every currency the source holds.
    models:
        Models to fit, a subset of :data:`KNOWN_MODELS`; None = every model this volcal provides.
    out:
        Output folder.
    store:
        DuckDB file; ``"auto"`` for ``OUT/volcal.duckdb``; None for no store (see
        :attr:`store_path`).
    report:
        Write ``report.html``.
    strict:
        Exit code 3 when the run completed with warnings.
    input, fit, margin:
        See :class:`InputSettings`, :class:`FitSettings`, :class:`MarginSettings`.
    portfolios:
        ``(name, csv path)`` pairs, in file order.
    path:
        The file the configuration was read from (None: defaults only).
    """

    exchanges: tuple[str, ...] = ()
    currencies: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None
    out: str = "out"
    store: str | None = "auto"
    report: bool = True
    strict: bool = False
    input: InputSettings = field(default_factory=InputSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    margin: MarginSettings = field(default_factory=MarginSettings)
    portfolios: tuple[tuple[str, str], ...] = ()
    path: str | None = None

    @property
    def store_path(self) -> Path | None:
        """The DuckDB file to use, or None when the store is disabled."""
        if self.store is None:
            return None
        if self.store == "auto":
            return Path(self.out) / "volcal.duckdb"
        return Path(self.store)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (the file path excluded), as stored with each run."""
        data = asdict(self)
        data.pop("path")
        data["portfolios"] = [list(p) for p in self.portfolios]
        return data

    def config_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`: equal configs, equal hash."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def with_overrides(self, **changes: Any) -> JobConfig:
        """A copy with the non-None ``changes`` applied and validated.

        Keys are the attribute names of :class:`JobConfig`, plus ``source``, ``data``,
        ``replay``, ``snapshot``, ``at`` (input), ``weights``, ``heston_engine`` (fit),
        ``confidence``, ``horizon_days`` (margin); ``portfolios`` is a list of paths (each
        named after its file stem) or of ``(name, path)`` pairs and is *added* to the file's.
        ``store=""`` disables the store.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        input_keys = {"source", "data", "replay", "snapshot", "at"}
        fit_keys = {"weights", "heston_engine", "heston_min_t_days", "min_t_days", "min_quotes"}
        margin_keys = {"confidence", "horizon_days", "standard_portfolios"}
        top: dict[str, Any] = {}
        inp: dict[str, Any] = {}
        fit: dict[str, Any] = {}
        margin: dict[str, Any] = {}
        for key, value in changes.items():
            if key in input_keys:
                inp[key] = value
            elif key in fit_keys:
                fit[key] = value
            elif key in margin_keys:
                margin[key] = value
            elif key in {f for f in self.__dataclass_fields__ if f != "path"}:
                top[key] = value
            else:
                raise ConfigError(f"unknown override {key!r}")
        raw = self.to_dict()
        raw["input"].update(inp)
        raw["fit"].update(fit)
        raw["margin"].update(margin)
        if "portfolios" in top:
            extra = []
            for item in top.pop("portfolios"):
                if isinstance(item, (tuple, list)):
                    extra.append([str(item[0]), str(item[1])])
                else:
                    extra.append([Path(str(item)).stem, str(item)])
            raw["portfolios"] = raw["portfolios"] + extra
        raw.update(top)
        if raw.get("store") in ("", "none"):
            raw["store"] = None
        return _from_plain(raw, where="command line", path=self.path)


# ---------------------------------------------------------------------------------------------
# validation


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (allowed: {', '.join(allowed)})"


def _check_keys(table: Mapping[str, Any], allowed: list[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, allowed)}")


def _str(value: Any, where: str, key: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{where}: {key} = {value!r} is not one of {', '.join(choices)}"
            + (
                f"; did you mean {m[0]!r}?"
                if (m := difflib.get_close_matches(value, choices, 1))
                else ""
            )
        )
    return value


def _str_list(value: Any, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings, got {value!r}")
    return tuple(value)


def _bool(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _number(value: Any, where: str, key: str, ok: Callable[[float], bool], domain: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number {domain}, got {value!r}")
    x = float(value)
    if not ok(x):
        raise ConfigError(f"{where}: {key} must be {domain}, got {value!r}")
    return x


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    return str(p)


def _table(raw: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table, got {value!r}")
    return value


def _from_plain(raw: Mapping[str, Any], *, where: str, path: str | None) -> JobConfig:
    """Validate a plain mapping shaped like :meth:`JobConfig.to_dict` (used after overrides)."""
    d = JobConfig()
    inp = _table(raw, "input", where)
    fit = _table(raw, "fit", where)
    margin = _table(raw, "margin", where)
    models = raw.get("models")
    return JobConfig(
        exchanges=_exchanges(raw.get("exchanges", d.exchanges), where),
        currencies=_currencies(raw.get("currencies", d.currencies), where),
        models=None if models is None else _models(models, where),
        out=_str(raw.get("out", d.out), where, "out"),
        store=None if raw.get("store") is None else _str(raw["store"], where, "store"),
        report=_bool(raw.get("report", d.report), where, "report"),
        strict=_bool(raw.get("strict", d.strict), where, "strict"),
        input=_input(inp, where, None),
        fit=_fit(fit, where),
        margin=_margin(margin, where),
        portfolios=tuple((str(n), str(p)) for n, p in raw.get("portfolios", ())),
        path=path,
    )


def _exchanges(value: Any, where: str) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in _str_list(value, where, "exchanges"))


def _currencies(value: Any, where: str) -> tuple[str, ...]:
    out = tuple(v.strip().upper() for v in _str_list(value, where, "currencies"))
    for c in out:
        if not c.isalnum():
            raise ConfigError(f"{where}: currencies: {c!r} is not a coin code like 'BTC'")
    return out


def _models(value: Any, where: str) -> tuple[str, ...]:
    out = tuple(v.strip().lower() for v in _str_list(value, where, "models"))
    for m in out:
        if m not in KNOWN_MODELS:
            raise ConfigError(
                f"{where}: models: unknown model {m!r}{_suggest(m, list(KNOWN_MODELS))}"
            )
    return tuple(dict.fromkeys(out))


def _input(t: Mapping[str, Any], where: str, base: Path | None) -> InputSettings:
    w = f"{where} [input]"
    _check_keys(t, ["source", "data", "replay", "snapshot", "at"], w)
    d = InputSettings()
    snapshot = t.get("snapshot") or None
    at = t.get("at") or None
    source = _str(t.get("source", d.source), w, "source", SOURCES)
    replay = tuple(_resolve(p, base) for p in _str_list(t.get("replay", d.replay), w, "replay"))
    if at is not None:
        at = _str(at, w, "at")
        try:
            import pandas as pd

            pd.Timestamp(at)
        except ValueError:
            raise ConfigError(
                f"{w}: at = {at!r} is not a timestamp (e.g. 2026-01-14T06:00Z)"
            ) from None
    if snapshot is not None:
        snapshot = _resolve(_str(snapshot, w, "snapshot"), base)
    if source == "replay" and not replay:
        raise ConfigError(f"{w}: source = 'replay' needs replay = [tape files]")
    if source == "snapshot" and snapshot is None:
        raise ConfigError(f"{w}: source = 'snapshot' needs snapshot = 'file'")
    return InputSettings(
        source=source,
        data=_resolve(_str(t.get("data", d.data), w, "data"), base),
        replay=replay,
        snapshot=snapshot,
        at=at,
    )


def _fit(t: Mapping[str, Any], where: str) -> FitSettings:
    w = f"{where} [fit]"
    _check_keys(t, ["weights", "min_t_days", "min_quotes", "heston_engine", "heston_min_t_days"], w)
    d = FitSettings()
    min_quotes = t.get("min_quotes", d.min_quotes)
    if isinstance(min_quotes, bool) or not isinstance(min_quotes, int) or min_quotes < 3:
        raise ConfigError(f"{w}: min_quotes must be an integer >= 3, got {min_quotes!r}")
    return FitSettings(
        weights=_str(t.get("weights", d.weights), w, "weights", WEIGHT_SCHEMES),
        min_t_days=_number(
            t.get("min_t_days", d.min_t_days),
            w,
            "min_t_days",
            lambda x: 0 <= x < 3650,
            "in [0, 3650)",
        ),
        min_quotes=min_quotes,
        heston_engine=_str(
            t.get("heston_engine", d.heston_engine), w, "heston_engine", HESTON_ENGINES
        ),
        heston_min_t_days=_number(
            t.get("heston_min_t_days", d.heston_min_t_days),
            w,
            "heston_min_t_days",
            lambda x: 0 <= x < 3650,
            "in [0, 3650)",
        ),
    )


def _margin(t: Mapping[str, Any], where: str) -> MarginSettings:
    w = f"{where} [margin]"
    _check_keys(t, ["confidence", "horizon_days", "standard_portfolios"], w)
    d = MarginSettings()
    return MarginSettings(
        confidence=_number(
            t.get("confidence", d.confidence),
            w,
            "confidence",
            lambda x: 0 < x < 1,
            "in (0, 1) (0.99 = 99 %)",
        ),
        horizon_days=_number(
            t.get("horizon_days", d.horizon_days),
            w,
            "horizon_days",
            lambda x: 0 < x <= 365,
            "in (0, 365]",
        ),
        standard_portfolios=_bool(
            t.get("standard_portfolios", d.standard_portfolios), w, "standard_portfolios"
        ),
    )


def load_config(path: str | Path | None = None) -> JobConfig:
    """Read and validate a ``volcal.toml``.

    Parameters
    ----------
    path:
        The TOML file; None returns the defaults (:class:`JobConfig`).

    Returns
    -------
    JobConfig

    Raises
    ------
    ConfigError
        The file is missing or not valid TOML (with line and column), or a table, key, type or
        value is invalid; the message names the file, the table and the key.
    """
    if path is None:
        return JobConfig()
    p = Path(path)
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    tables = ["job", "input", "fit", "margin", "portfolios"]
    for key, value in raw.items():
        if key not in tables:
            kind = "table" if isinstance(value, Mapping) else "top-level key"
            raise ConfigError(
                f"{where}: unknown {kind} {key!r}{_suggest(key, tables)}; keys go in tables, "
                'e.g. [job] currencies = ["BTC"]'
            )
    base = p.resolve().parent
    job = _table(raw, "job", where)
    w = f"{where} [job]"
    _check_keys(job, ["exchanges", "currencies", "models", "out", "store", "report", "strict"], w)
    d = JobConfig()
    store_raw = job.get("store", d.store)
    store: str | None
    if store_raw in (None, "", "none"):
        store = None
    elif store_raw == "auto":
        store = "auto"
    else:
        store = _resolve(_str(store_raw, w, "store"), base)
    ports = _table(raw, "portfolios", where)
    portfolios = tuple(
        (str(name), _resolve(_str(value, f"{where} [portfolios]", name), base))
        for name, value in ports.items()
    )
    models = job.get("models")
    return JobConfig(
        exchanges=_exchanges(job.get("exchanges", d.exchanges), w),
        currencies=_currencies(job.get("currencies", d.currencies), w),
        models=None if models is None else _models(models, w),
        out=_resolve(_str(job.get("out", d.out), w, "out"), base),
        store=store,
        report=_bool(job.get("report", d.report), w, "report"),
        strict=_bool(job.get("strict", d.strict), w, "strict"),
        input=_input(_table(raw, "input", where), where, base),
        fit=_fit(_table(raw, "fit", where), where),
        margin=_margin(_table(raw, "margin", where), where),
        portfolios=portfolios,
        path=str(p),
    )
