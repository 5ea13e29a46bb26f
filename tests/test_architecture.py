"""The package's layers (the import contract in pyproject.toml) hold, and a new back-edge breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contract_is_kept():
    r = lint_imports(ROOT / "src", ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_a_back_edge_from_the_world_to_a_stage_breaks_the_contract(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "instructrl", src / "instructrl", ignore=shutil.ignore_patterns("__pycache__", "resources")
    )
    kb = src / "instructrl" / "world" / "kb.py"
    kb.write_text(kb.read_text() + "\nfrom instructrl.sft.config import SFTConfig  # noqa: E402,F401\n")
    r = lint_imports(src, tmp_path)
    assert r.returncode != 0
    assert "instructrl.world is not allowed to import instructrl.sft" in r.stdout
