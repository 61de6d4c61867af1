"""The package's dependency declarations, read from the built wheel and from pip's resolver.

pyproject.toml gives lower bounds only (constraints.txt holds the tested pins), so that a torch
already installed (a CUDA build, a newer release) is kept, never replaced, by ``pip install minbert``.
Both tests work on a copy of the source tree: building in place would leave build files in the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# pip's words (pip/_internal/index/collector.py) for an index page it could not reach
UNREACHABLE = re.compile(r"Could not fetch URL \S+: connection error")


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The files a build reads (pyproject.toml, README.md, LICENSE, src/) copied to a temp folder."""
    dest = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def pip(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=900)


def requirements(metadata: Message, extra: str | None) -> dict[str, Requirement]:
    """Requires-Dist entries by canonical name: the base ones (extra None) or those of one extra."""
    out = {}
    for line in metadata.get_all("Requires-Dist", []):
        req = Requirement(line)
        if extra is None and req.marker is None:
            out[canonicalize_name(req.name)] = req
        elif extra is not None and req.marker is not None and req.marker.evaluate({"extra": extra}):
            out[canonicalize_name(req.name)] = req
    return out


@pytest.mark.slow
def test_wheel_metadata_declares_lower_bounds_extras_license_and_types(source_copy, tmp_path):
    built = pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source_copy))
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("minbert-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = message_from_bytes(zf.read(meta_name))

    torch = requirements(metadata, None)["torch"]
    assert torch.specifier, f"torch has no lower bound: {torch}"
    assert {s.operator for s in torch.specifier} <= {">=", ">"}, f"torch is pinned or capped: {torch}"
    assert "2.11.0" in torch.specifier and "2.13.0" in torch.specifier, str(torch)

    assert {"serve", "tune"} <= set(metadata.get_all("Provides-Extra", []))
    pydantic = requirements(metadata, "serve")["pydantic"]
    assert "2.0.0" in pydantic.specifier and "1.10.13" not in pydantic.specifier, str(pydantic)
    assert "sqlalchemy" in requirements(metadata, "tune")

    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in metadata.get_all("License-File", [])
    assert "minbert/py.typed" in names


@pytest.mark.slow
def test_pip_keeps_the_installed_torch(source_copy, tmp_path):
    report = tmp_path / "report.json"
    # an empty PIP_CONSTRAINT is ignored by pip; os.devnull replaces any constraint file from pip's config
    env = {**os.environ, "PIP_CONSTRAINT": os.devnull}
    # -vv: pip logs an index it could not reach ("Could not fetch URL ...: connection error") at debug level only
    run = pip("install", "-vv", "--dry-run", "--no-build-isolation", "--report", str(report), str(source_copy), env=env)
    log = run.stdout + run.stderr
    if run.returncode != 0 and UNREACHABLE.search(log):
        pytest.skip(f"package index unreachable: {UNREACHABLE.search(log).group(0)}")
    assert run.returncode == 0, log[-6000:]

    installs = {canonicalize_name(item["metadata"]["name"]): item for item in json.loads(report.read_text())["install"]}
    assert "minbert" in installs, sorted(installs)  # the report covers the package itself ...
    assert any(r.startswith("torch") for r in installs["minbert"]["metadata"]["requires_dist"])  # ... and its torch
    assert "torch" not in installs, f"pip would replace torch with {installs['torch']['metadata']['version']}"
