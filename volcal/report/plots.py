"""Figures of the report, rendered with matplotlib's Agg backend to base64 PNG data URIs.

Every function takes plain DataFrames and returns a ``data:image/png;base64,...`` string (or
``""`` when there is nothing to draw); nothing touches pyplot's global figure manager.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["history_figure", "smile_grid", "term_structure_figure"]

MODEL_COLOURS: dict[str, str] = {
    "market": "#222222",
    "svi": "#d62728",
    "ssvi": "#9467bd",
    "essvi": "#2ca02c",
    "heston": "#1f77b4",
}
DPI = 80


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # the Agg canvas: no GUI, no pyplot state
    return fig


def _to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colour(model: str) -> str:
    return MODEL_COLOURS.get(model, "#ff7f0e")


def smile_grid(quotes: pd.DataFrame, curves: Mapping[str, pd.DataFrame], *, title: str = "") -> str:
    """Small multiples, one panel per expiry: bid/ask IV bars, mark IVs, fitted curves.

    Parameters
    ----------
    quotes:
        Chain quotes (``expiry, t, k, iv_bid, iv_ask, iv_mark, filter_reason, call, strike,
        forward``); out-of-the-money usable quotes are drawn, filtered ones greyed.
    curves:
        Model name → ``expiry, t, k, iv`` (decimal vols).
    """
    expiries = sorted(pd.unique(quotes["expiry"]))
    if not expiries:
        return ""
    n = len(expiries)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(3.2 * ncols, 2.4 * nrows + 0.4)
    otm = np.where(
        quotes["call"].to_numpy(dtype=bool),
        quotes["strike"].to_numpy() >= quotes["forward"].to_numpy(),
        quotes["strike"].to_numpy() < quotes["forward"].to_numpy(),
    )
    q = quotes[otm]
    legend_done = False
    for i, expiry in enumerate(expiries):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        s = q[q["expiry"] == expiry]
        ok = (s["filter_reason"] == "").to_numpy()
        k = s["k"].to_numpy(dtype=float)
        bid = s["iv_bid"].to_numpy(dtype=float) * 100
        ask = s["iv_ask"].to_numpy(dtype=float) * 100
        mark = s["iv_mark"].to_numpy(dtype=float) * 100
        both = np.isfinite(bid) & np.isfinite(ask)
        for sel, colour in ((ok & both, "#7fa7d9"), (~ok & both, "#cccccc")):
            if sel.any():
                ax.vlines(k[sel], bid[sel], ask[sel], colors=colour, linewidth=2.0)
        one = ok & ~both
        if one.any():
            ax.plot(
                k[one],
                np.where(np.isfinite(bid[one]), bid[one], ask[one]),
                "v",
                color="#7fa7d9",
                markersize=3,
            )
        fin = np.isfinite(mark)
        ax.plot(k[fin & ok], mark[fin & ok], ".", color="#222222", markersize=3)
        drawn = False
        for model, c in curves.items():
            cs = c[c["expiry"] == expiry]
            if len(cs):
                drawn = True
                ax.plot(
                    cs["k"], cs["iv"] * 100, "-", color=_colour(model), linewidth=1.2, label=model
                )
        t = float(s["t"].iloc[0]) if len(s) else float("nan")
        ax.set_title(f"{pd.Timestamp(expiry):%d %b %Y} ({t * 365:.1f} d)", fontsize=8)
        ax.tick_params(labelsize=7)
        ylo = np.nanpercentile(mark[fin], 1) if fin.any() else 0
        yhi = np.nanpercentile(mark[fin], 99) if fin.any() else 100
        if np.isfinite(ylo) and np.isfinite(yhi) and yhi > ylo:
            pad = 0.25 * (yhi - ylo) + 2
            ax.set_ylim(max(0.0, ylo - pad), yhi + pad)
        if i % ncols == 0:
            ax.set_ylabel("implied vol (%)", fontsize=7)
        if i >= n - ncols:
            ax.set_xlabel("k = ln(K/F)", fontsize=7)
        if drawn and not legend_done:
            ax.legend(fontsize=6, loc="upper center")
            legend_done = True
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins: tight_layout would draw the figure once more just to measure it
    top = 1.0 - 0.5 / fig.get_figheight()
    fig.subplots_adjust(
        left=0.06, right=0.99, bottom=0.8 / fig.get_figheight(), top=top, wspace=0.22, hspace=0.45
    )
    return _to_data_uri(fig)


def term_structure_figure(terms: Mapping[str, pd.DataFrame], *, title: str = "") -> str:
    """ATM vol (left) and ATM skew ``d sigma / d k`` (right) against days to expiry."""
    if not any(len(t) for t in terms.values()):
        return ""
    fig = _figure(9.0, 3.2)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    for model, t in terms.items():
        if not len(t):
            continue
        days = t["t"].to_numpy(dtype=float) * 365
        style = "o-" if model == "market" else ".--"
        ax1.plot(
            days,
            t["atm_vol"].to_numpy(dtype=float) * 100,
            style,
            color=_colour(model),
            label=model,
            markersize=4,
        )
        ax2.plot(
            days,
            t["atm_skew"].to_numpy(dtype=float),
            style,
            color=_colour(model),
            label=model,
            markersize=4,
        )
    ax1.set_xlabel("days to expiry", fontsize=8)
    ax1.set_ylabel("ATM vol (%)", fontsize=8)
    ax2.set_xlabel("days to expiry", fontsize=8)
    ax2.set_ylabel("ATM skew d sigma / dk", fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.16, top=0.9, wspace=0.25)
    return _to_data_uri(fig)


def history_figure(
    series: Mapping[str, pd.DataFrame], *, ylabel: str, title: str = "", scale: float = 1.0
) -> str:
    """Lines over time: label → ``as_of, value``."""
    if not any(len(s) for s in series.values()):
        return ""
    fig = _figure(9.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    for label, s in series.items():
        if len(s):
            x = pd.to_datetime(s["as_of"], utc=True).dt.tz_localize(None)
            ax.plot(x, s["value"].to_numpy(dtype=float) * scale, ".-", label=label, markersize=4)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    if title:
        ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.22, top=0.9)
    return _to_data_uri(fig)
