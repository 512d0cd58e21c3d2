"""`veil --help` stays fast: parsing and printing help import neither torch nor the config."""

from __future__ import annotations

import subprocess
import sys


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from veil.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'pydantic', 'dp_accounting', 'sklearn', 'rich',\n"
        "                     'veil.federation') if m in sys.modules]\n"
        "assert 'train' in out.getvalue(), out.getvalue()\n"
        "print(','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"`veil --help` imported {res.stdout.strip()}"
