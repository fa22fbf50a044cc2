"""Render the run's results as one self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from volcal._atomic import atomic_write_text

__all__ = ["atomic_write_text", "history_from_store", "render_report", "write_report"]

MARGIN_COLUMNS: tuple[str, ...] = (
    "initial_margin_usd",
    "maintenance_margin_usd",
    "scenario_usd",
    "delta_addon_usd",
    "gamma_addon_usd",
    "vega_addon_usd",
    "liquidity_addon_usd",
    "standard_initial_usd",
    "reference_pm_usd",
)
"""Margin metrics shown in the report's table (when present); all are stored."""

_DASH = "&ndash;"
"""Shown for a missing value (an HTML entity: the source stays ASCII)."""

HISTORY_TENORS_DAYS: tuple[float, ...] = (7.0, 30.0, 90.0)
"""Constant tenors of the ATM-vol history chart."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;
color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:1.6em}
h3{font-size:1.05em;margin-top:1.2em}
table{border-collapse:collapse;font-size:12px;margin:.4em 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.ok{color:#1a7f37}.warning{color:#9a6700}.failed,.load_failed{color:#cf222e;font-weight:bold}
.skipped{color:#777}img{max-width:100%;display:block;margin:.3em 0}
.muted{color:#666;font-size:12px}ul{font-size:13px}
"""


def history_from_store(store: Any, currencies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the report's history charts need, per currency, from a :class:`volcal.store.Store`.

    Returns
    -------
    dict
        ``currency -> {"n_snapshots", "atm" (atm_vol_history), "params" (svi/heston
        whole-surface and diagnostics), "margin" (margin_history)}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for cur in currencies:
        snaps = store.snapshots(currency=cur)
        out[cur] = {
            "n_snapshots": len(snaps),
            "atm": store.atm_vol_history(cur, tenors_days=HISTORY_TENORS_DAYS),
            "heston": store.param_history("heston", currency=cur),
            "fits": store.fits(currency=cur),
            "margin": store.margin_history(currency=cur),
        }
    return out


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return _DASH
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _DASH if not np.isfinite(v) else format(float(v), spec)
    return _esc(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    head = "".join(
        f'<th class="l">{_esc(h)}</th>' if i < left else f"<th>{_esc(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _status(s: str) -> str:
    return f'<span class="{_esc(s)}">{_esc(s)}</span>'


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">' if uri else ""


def _section(result: Any, hist: Mapping[str, Any] | None) -> str:
    from volcal.report.plots import history_figure, smile_grid, term_structure_figure

    parts = [f'<h2 id="{_esc(result.label)}">{_esc(result.label)} {_status(result.status)}</h2>']
    if result.chain is None:
        parts.append(f"<p class=failed>loading failed: {_esc(result.error)}</p>")
        return "".join(parts)
    chain = result.chain
    q = chain.quotes
    parts.append(
        f"<p>as of {_esc(chain.as_of.isoformat())}; {len(q)} options, "
        f"{int((q['filter_reason'] == '').sum())} usable, {len(chain.expiries)} expiries; "
        f"source {_esc(result.source.kind)} <code>{_esc(result.source.path or '')}</code></p>"
    )
    problems = list(result.warnings)
    for m in result.models:
        problems += [f"{m.model}: {w}" for w in m.warnings]
        if m.error and m.status == "failed":
            problems.append(f"{m.model} failed: {m.error}")
    for g in result.margins:
        if g.error:
            problems.append(f"margin {g.portfolio} {g.status}: {g.error}")
    if problems:
        parts.append("<ul>" + "".join(f"<li>{_esc(p)}</li>" for p in problems) + "</ul>")

    # fit table
    rows = []
    for m in result.models:
        s = m.summary
        rmse = s.get("rmse_iv")
        inside = s.get("inside_share")
        rows.append(
            [
                _esc(m.model),
                _status(m.status),
                _DASH if rmse is None else f"{100 * rmse:.3f}",
                _DASH if inside is None else f"{100 * inside:.1f} %",
                _fmt(s.get("n_used")),
                _fmt(s.get("converged")),
                _fmt(s.get("arbitrage_free")),
                f"{m.elapsed_s:.2f}",
                _esc(m.error or s.get("message", "")),
            ]
        )
    if rows:
        parts.append("<h3>Fits</h3>")
        parts.append(
            _table(
                [
                    "model",
                    "status",
                    "RMSE (vol pts)",
                    "inside bid/ask",
                    "quotes used",
                    "converged",
                    "arbitrage-free",
                    "time (s)",
                    "message",
                ],
                rows,
                left=2,
            )
        )
        parts[-1] = parts[-1].replace("<th>message</th>", '<th class="l">message</th>')

    curves = {m.model: m.curves for m in result.models if len(m.curves)}
    parts.append("<h3>Smiles</h3>")
    parts.append(
        '<p class="muted">bars: bid-ask implied vol of out-of-the-money quotes (grey: '
        "filtered); dots: mark IV; lines: fitted models.</p>"
    )
    parts.append(_img(smile_grid(q, curves, title=f"{chain.underlying} smiles"), "smiles"))

    terms = {"market": result.market_term}
    terms.update({m.model: m.term for m in result.models if len(m.term)})
    parts.append("<h3>ATM term structure</h3>")
    parts.append(_img(term_structure_figure(terms), "ATM term structure"))
    mt = result.market_term
    per_model = {m.model: m for m in result.models if len(m.term)}
    rmse_by_expiry = {
        m.model: m.diagnostics[m.diagnostics["metric"] == "rmse_iv"].set_index("expiry")["value"]
        for m in result.models
        if len(m.diagnostics)
    }
    header = ["expiry", "days", "forward", "ATM vol mark"]
    header += [f"ATM {name}" for name in per_model]
    header += [f"RMSE {name} (pts)" for name in rmse_by_expiry]
    trows = []
    for r in mt.itertuples():
        row = [
            _esc(f"{pd.Timestamp(r.expiry):%Y-%m-%d %H:%M}"),
            f"{r.t * 365:.2f}",
            _fmt(r.forward, ",.2f"),
            _fmt(100 * r.atm_vol, ".2f"),
        ]
        for m in per_model.values():
            hit = m.term[m.term["expiry"] == r.expiry]
            row.append(_fmt(100 * float(hit["atm_vol"].iloc[0]), ".2f") if len(hit) else _DASH)
        for ser in rmse_by_expiry.values():
            v = ser.get(r.expiry, np.nan) if len(ser) else np.nan
            row.append(_fmt(100 * float(v), ".3f"))
        trows.append(row)
    parts.append(_table(header, trows))

    # arbitrage
    arows = []
    quote_viol = pd.DataFrame()
    for m in result.models:
        a = m.arbitrage
        if len(a):
            bf = a[a["check"] == "butterfly"]
            cal = a[a["check"] == "calendar"]
            arows.append(
                [
                    _esc(m.model),
                    _fmt(bf["value"].min() if len(bf) else np.nan),
                    _fmt(int(bf["violated"].sum())),
                    _fmt(int(cal["violated"].sum())),
                    _fmt(m.summary.get("arbitrage_free")),
                ]
            )
        if len(m.quote_arbitrage) and not len(quote_viol):
            quote_viol = m.quote_arbitrage
    parts.append("<h3>Arbitrage checks</h3>")
    if arows:
        parts.append(
            _table(
                [
                    "model",
                    "min g(k)",
                    "butterfly violations",
                    "calendar violations",
                    "arbitrage-free",
                ],
                arows,
            )
        )
    else:
        parts.append('<p class="muted">no fitted surface reports arbitrage checks</p>')
    if len(quote_viol):
        parts.append(
            f"<p>raw quotes: {len(quote_viol)} violated spread(s) (size in normalised "
            "call price C/(DF))</p>"
        )
        parts.append(
            _table(
                ["check", "expiry", "size", "detail"],
                [
                    [
                        _esc(r.check),
                        _esc(str(r.expiry)[:10]),
                        _fmt(r.value),
                        _esc(r.detail),
                    ]
                    for r in quote_viol.itertuples()
                ],
                left=2,
            )
        )
    else:
        parts.append(
            "<p>raw quotes: no violated vertical, butterfly or calendar spread reported</p>"
        )

    # whole-surface parameters (Heston)
    for m in result.models:
        surf = m.params[m.params["expiry"].isna()] if len(m.params) else m.params
        if len(surf):
            parts.append(f"<h3>{_esc(m.model)} parameters</h3>")
            parts.append(
                _table(
                    [r for r in surf["param"]], [[_fmt(v, ".5g") for v in surf["value"]]], left=0
                )
            )

    # margin
    if result.margins:
        parts.append("<h3>Margin</h3>")
        mrows = []
        present: set[str] = set()
        for g in result.margins:
            present.update(str(n) for n in g.metrics["metric"])
        metric_names = [n for n in MARGIN_COLUMNS if n in present]
        for g in result.margins:
            values = (
                dict(zip(g.metrics["metric"], g.metrics["value"], strict=True))
                if len(g.metrics)
                else {}
            )
            mrows.append(
                [_esc(g.portfolio), _esc(g.model), _status(g.status)]
                + [_fmt(values.get(n), ",.0f") for n in metric_names]
                + [_esc(g.error or g.detail)]
            )
        header = ["portfolio", "surface", "status"]
        header += [n.removesuffix("_usd").replace("_", " ") + " (USD)" for n in metric_names]
        parts.append(_table([*header, "notes"], mrows, left=3))
        parts[-1] = parts[-1].replace("<th>notes</th>", '<th class="l">notes</th>')

    # history
    if hist and hist.get("n_snapshots", 0) >= 2:
        parts.append(f"<h3>History ({hist['n_snapshots']} stored snapshots)</h3>")
        atm = hist["atm"]
        series = {
            f"{int(d)} d": atm[atm["tenor_days"] == d].rename(columns={"atm_vol": "value"})
            for d in HISTORY_TENORS_DAYS
        }
        parts.append(
            _img(
                history_figure(
                    series,
                    ylabel="ATM vol (%)",
                    scale=100,
                    title="ATM vol at constant tenors (mark IVs)",
                ),
                "ATM vol history",
            )
        )
        fits = hist["fits"]
        if len(fits):
            series = {
                m: g.rename(columns={"rmse_iv": "value"})[["as_of", "value"]]
                for m, g in fits.groupby("model")
                if g["rmse_iv"].notna().any()
            }
            parts.append(
                _img(
                    history_figure(
                        series, ylabel="RMSE (vol pts)", scale=100, title="fit error over time"
                    ),
                    "fit error history",
                )
            )
        hp = hist["heston"]
        if len(hp):
            series = {
                p: g[["as_of", "value"]]
                for p, g in hp.groupby("param")
                if p in ("v0", "theta", "rho")
            }
            parts.append(
                _img(
                    history_figure(series, ylabel="value", title="Heston v0, theta, rho over time"),
                    "Heston history",
                )
            )
        mh = hist["margin"]
        if len(mh) and mh["metric"].notna().any():
            im = mh[mh["metric"] == "initial_margin_usd"]
            series = {p: g[["as_of", "value"]] for p, g in im.groupby("portfolio")}
            parts.append(
                _img(
                    history_figure(series, ylabel="USD", title="initial margin over time"),
                    "margin history",
                )
            )
    return "".join(parts)


def render_report(
    results: Sequence[Any],
    summary: Mapping[str, Any],
    history: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    run = summary.get("run", {})
    title = "volcal daily report"
    as_of = sorted({r.chain.as_of.isoformat() for r in results if r.chain is not None})
    nav = " · ".join(f'<a href="#{_esc(r.label)}">{_esc(r.label)}</a>' for r in results)
    errors = summary.get("errors", [])
    head = [
        f"<h1>{title}</h1>",
        f"<p>run <code>{_esc(str(run.get('run_id', ''))[:12])}</code>, status "
        f"{_status(str(run.get('status', '')))}, exit code {_fmt(run.get('exit_code'))}; "
        f"as of {_esc(', '.join(as_of))}; generated {_esc(run.get('finished_at', ''))}; "
        f"volcal {_esc(run.get('versions', {}).get('volcal', ''))}; config "
        f"<code>{_esc(str(run.get('config_hash', ''))[:12])}</code>; store "
        f"<code>{_esc(run.get('store') or 'none')}</code></p>",
        f"<p>{nav}</p>",
    ]
    if errors:
        head.append(
            "<ul>"
            + "".join(
                f"<li class=failed>{_esc(e.get('exchange', ''))} {_esc(e.get('currency', ''))} "
                f"{_esc(e.get('model', ''))}: {_esc(e.get('message', ''))}</li>"
                for e in errors
            )
            + "</ul>"
        )
    sections = [_section(r, (history or {}).get(r.currency)) for r in results]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        + "".join(head)
        + "".join(sections)
        + "</body></html>\n"
    )


def write_report(
    path: Path,
    results: Sequence[Any],
    summary: Mapping[str, Any],
    history: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``report.html`` atomically.

    Parameters
    ----------
    path:
        The file to write.
    results:
        :class:`volcal.jobs.SnapshotResult` per input.
    summary:
        The run's ``summary.json`` content (run metadata, errors).
    history:
        Per currency, :func:`history_from_store` output; history charts appear when the store
        holds at least two snapshots of the currency.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    return atomic_write_text(Path(path), render_report(results, summary, history))
