"""A non-editable install (``pip install .``) runs the quickstart from another folder: every
package, config default and data file the sweep needs ships in the wheel, none is read from
the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import store, sweep_runs
from tests.test_quickstart import CONFIG, UNSET

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["dynsweep", "trainers", "tracking", "analysis", "orchestrator"]


@pytest.mark.slow
def test_pip_install_dot_runs_the_quickstart_from_another_folder(tmp_path):
    # A copy of the project without its build leftovers, so the wheel is built from sources only
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", "build")
    )
    # conftest puts the checkout on PYTHONPATH (for Ray workers): not here
    env = {k: v for k, v in os.environ.items() if k not in {*UNSET, "PYTHONPATH"}}
    venv = tmp_path / "venv"
    # The dependencies (pip and setuptools too) come from this environment; dynsweep from a wheel
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", source],
        env=env, check=True,
    )  # fmt: skip
    shutil.rmtree(source)  # nothing may be read from the sources any more
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    code = f"import {', '.join(PACKAGES)}; print({'.__file__, '.join(PACKAGES)}.__file__)"
    where = subprocess.run(
        [python, "-c", code],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert all(path.startswith(site) for path in where), (site, where)

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    config = {**CONFIG, "config": {**CONFIG["config"], "optimizer": {"lr": 0.1}}}
    (folder / "quickstart.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [venv / "bin" / "dynsweep", "sweep", "quickstart.yaml"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parents, children = sweep_runs(store(folder))
    assert len(parents) == 1 and len(children) == 1
    assert children[0].info.status == "FINISHED"
    assert "analysis/edm/best_E" in children[0].data.metrics
    assert not list(tmp_path.glob("src")), "the sources were removed before the sweep"
