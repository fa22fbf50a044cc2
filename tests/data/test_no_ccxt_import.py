"""The numerical core never imports ccxt; the exchange layer imports it only when used."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_without_ccxt() -> None:
    code = (
        "import sys\n"
        "import volcal, volcal.black, volcal.implied, volcal.chain, volcal.conventions\n"
        "import volcal.data.tape, volcal.data.exchanges, volcal.data.synth\n"
        "bad = sorted(m for m in sys.modules if m == 'ccxt' or m.startswith('ccxt.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
