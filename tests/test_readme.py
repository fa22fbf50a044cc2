"""The README's desk example runs as written (from the repository root, on the shipped tape)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _desk_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Ten lines for a desk", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README lost its desk example"
    return match.group(1)


def test_desk_example_is_ten_lines_and_runs(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code = _desk_example()
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.startswith(("import", "from"))]
    assert len(lines) <= 10
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "inside bid/ask" in out  # the fit summary
    assert re.search(r"initial\s+[\d.]+ coin\s+[\d,.]+ USD", out)  # the margin totals
