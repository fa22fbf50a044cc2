"""Fixtures of the exchange-layer tests: the tapes under ``tests/data/tapes`` (built by
``tests/data/make_tapes.py``) and a no-wait backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

TAPES = Path(__file__).resolve().parent / "tapes"


@pytest.fixture()
def tapes() -> Path:
    """Folder of the recorded test tapes."""
    return TAPES


@pytest.fixture()
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace the retry sleeps by a recorder of the requested delays (seconds)."""
    import volcal.data.exchanges as exchanges

    delays: list[float] = []

    def sleep(s: float) -> None:
        delays.append(s)

    async def asleep(s: float) -> None:
        delays.append(s)

    monkeypatch.setattr(exchanges, "_sleep", sleep)
    monkeypatch.setattr(exchanges, "_asleep", asleep)
    return delays
