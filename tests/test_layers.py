"""The layering contract in pyproject.toml ([tool.importlinter]): the core imports nothing from
experiments, data, CLI, benchmarks or results. Checked with import-linter on the source tree."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint(config: Path):
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_core_imports_no_app_layer():
    p = lint(ROOT / "pyproject.toml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 kept, 0 broken" in p.stdout, p.stdout


def test_the_contract_can_fail(tmp_path):
    """The same contract with ablo.inner forbidden from the estimators (which do import it) breaks:
    the check is not vacuous."""
    text = (ROOT / "pyproject.toml").read_text().replace('"ablo.models"]', '"ablo.models", "ablo.inner"]', 1)
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text(text.replace('source_modules = ["ablo.problem", "ablo.inner", ', 'source_modules = ["ablo.problem", '))
    p = lint(cfg)
    assert p.returncode != 0 and "broken" in p.stdout, p.stdout + p.stderr
