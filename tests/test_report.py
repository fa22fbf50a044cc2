"""The HTML report: self-contained, its plots, history charts, headless-Chromium rendering."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.jobs_fakes import (  # noqa: F401  (fake_models is a fixture)
    NO_MARGIN,
    fake_models,
    tape_chain,
    use_fake_models,
)
from volcal.jobs import SnapshotResult, process_chain
from volcal.report import history_from_store, render_report, write_report
from volcal.store import RunRecord, Store

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


@pytest.fixture(scope="module")
def eth_results() -> list[SnapshotResult]:
    """The ETH tape through the fake svi (ok), ssvi (warning) and heston (fails) models."""
    with pytest.MonkeyPatch.context() as mp:
        use_fake_models(mp)
        res = process_chain(tape_chain("ETH"), models=["svi", "ssvi", "heston"], margin=NO_MARGIN)
    return [res]


def _summary() -> dict[str, object]:
    return {"run": {"run_id": "abc", "status": "partial", "exit_code": 1}, "errors": []}


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_report_is_self_contained_with_plots_and_tables(eth_results: list[SnapshotResult]) -> None:
    from PIL import Image

    text = render_report(eth_results, _summary())
    # nothing to fetch: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "<script" not in text and "@import" not in text
    images = _images(text)
    assert len(images) == 2  # smiles and term structure (no history yet)
    for raw in images:
        img = Image.open(io.BytesIO(raw))
        assert img.format == "PNG" and img.size[0] > 300
    for fragment in ("deribit ETH", "Fits", "Smiles", "ATM term structure", "Arbitrage checks"):
        assert fragment in text
    # the fit table reports each model's status; the failure's message is shown
    assert "CalibrationError: fake failure on ETH" in text
    assert "fake fit: not converged on one expiry" in text
    assert "svi parameters" not in text  # per-expiry parameters are not whole-surface ones


@pytest.mark.usefixtures("fake_models")
def test_history_charts_appear_with_two_snapshots(tmp_path: Path) -> None:
    chain = tape_chain("ETH")
    results = [
        process_chain(
            replace(chain, as_of=chain.as_of + pd.Timedelta(days=d)),
            models=["svi"],
            margin=NO_MARGIN,
        )
        for d in (0, 1)
    ]
    with Store(tmp_path / "h.duckdb") as store:
        store.write(RunRecord("r1"), [results[0].to_tables()])
        one = history_from_store(store, ["ETH"])
        store.write(RunRecord("r2"), [results[1].to_tables()])
        two = history_from_store(store, ["ETH"])
    assert one["ETH"]["n_snapshots"] == 1 and two["ETH"]["n_snapshots"] == 2
    text = render_report(results[1:], _summary(), two)
    assert "History (2 stored snapshots)" in text
    assert len(_images(text)) == 4  # + ATM vol history + fit error history


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from volcal.report import html

    path = tmp_path / "report.html"
    path.write_text("earlier report", encoding="utf-8")

    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(html, "render_report", boom)
    with pytest.raises(RuntimeError):
        write_report(path, [], _summary())
    assert path.read_text(encoding="utf-8") == "earlier report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian package "
    "'chromium'; .ci/run installs it with apt-get when it can)",
)
def test_report_renders_in_headless_chromium(
    tmp_path: Path, eth_results: list[SnapshotResult]
) -> None:
    from PIL import Image

    path = write_report(tmp_path / "report.html", eth_results, _summary())
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
            f"--screenshot={shot}", "--window-size=1300,1600", path.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert shot.exists(), proc.stderr[-2000:]
    # no console errors from the page (Chromium prints page console messages as "CONSOLE")
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    non_white = np.any(img < 245, axis=2)
    assert non_white.mean() > 0.05, "screenshot is (nearly) blank"
    # the plots are drawn: the fitted curves' red (svi) pixels are on the page
    red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert red.sum() > 200, "no plotted curve visible in the screenshot"
