"""The package's layering, checked in fresh interpreters: what each entry point imports.

- The inference path (``minbert.load`` and a prediction, ``evaluate``/``export``/``serve``'s
  modules) imports nothing from ``minbert.training`` or ``minbert.experiments``.
- ``minbert.training`` imports nothing from ``minbert.experiments``.
- ``minbert --help`` (and an argument error) imports neither torch nor the training stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minbert_testkit import shared_run

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the names in its ``sys.modules`` afterwards."""
    probe = code + "\nimport sys, json\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MODULES=")][-1]
    return json.loads(line[len("MODULES="):])


def _under(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


@pytest.fixture(scope="module")
def run(tiny_encoder, data_dir, tmp_path_factory):
    return shared_run(tiny_encoder, data_dir, tmp_path_factory)


def test_loading_and_predicting_never_imports_training_or_experiments(run):
    mods = _modules_after(
        "import minbert\n"
        f"m = minbert.load({str(run.run_dir)!r}, device='cpu')\n"
        "print(m.sentiment(['a fine film'])[0].label, m.similarity([('a', 'b')])[0])\n"
        "import minbert.inference.evaluate, minbert.inference.export, minbert.inference.server\n"
    )
    assert "minbert.inference.predictor" in mods and "torch" in mods  # the probe did load the model
    assert _under(mods, "minbert.training", "minbert.experiments") == []


def test_training_never_imports_experiments():
    mods = _modules_after("import minbert.training.trainer, minbert.training.surgical")
    assert "minbert.training.trainer" in mods
    assert _under(mods, "minbert.experiments") == []


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict"], ["--version"]])
def test_cli_help_and_argument_errors_leave_torch_unimported(argv):
    mods = _modules_after(
        "import sys\n"
        "from minbert.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    assert "minbert.cli" in mods
    assert _under(mods, "torch", "minbert.training", "minbert.inference", "minbert.model") == []
