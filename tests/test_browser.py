"""The MLflow UI in a real browser (headless Chromium driven by Playwright) on a finished sweep:
the experiment page lists the sweep with its nested trials, a trial shows its metric chart and
artifacts (a figure, the trajectory), and the compare view of the trials opens.

Slow (it installs Debian's chromium and Playwright when they are missing); run it with
``pytest -m slow tests/test_browser.py``. Screenshots go to ``$DYNSWEEP_SCREENSHOTS`` (default:
the test's temporary folder) and are the ones in ``docs/images/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import free_port, run_cli, store, sweep_runs, wait_for_url, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def chromium() -> str:
    """Debian's chromium, installed with apt when missing (as root, or with sudo)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr[-2000:]}"
    return shutil.which("chromium")


def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], check=True)
        from playwright.sync_api import sync_playwright
    return sync_playwright


@pytest.fixture(scope="module")
def ui(tmp_path_factory, ray_session):
    """A finished 2-trial quickstart-like sweep, and `dynsweep ui` serving its store."""
    folder = tmp_path_factory.mktemp("browser")
    cfg = write_config(
        folder,
        name="quickstart",
        config={"optimizer": {"lr": {"grid": [0.02, 0.1]}}},
        stop={"iterations": 60},
        loop={"record": [{"probe": "weights", "every": 2}]},
        analysis=[{"step": "edm", "input": "train/loss", "params": {"max_E": 5}}],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert run_cli("sweep", str(cfg)) == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port),
         "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
        cwd=folder, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}", store(folder)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(ui):
    default = Path(ui[1].tracking_uri.removeprefix("sqlite:///")).parent / "screenshots"
    shots = Path(os.environ.get("DYNSWEEP_SCREENSHOTS") or default)
    executable = chromium()
    with playwright()() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1600, "height": 1000})
        tab.shots = shots
        yield tab
        browser.close()


def shoot(page, name: str) -> Path:
    page.shots.mkdir(parents=True, exist_ok=True)
    path = page.shots / f"{name}.png"
    page.wait_for_timeout(1500)  # let charts finish drawing
    page.screenshot(path=str(path))
    assert path.stat().st_size > 20_000  # a rendered page, not a blank one
    return path


def close_assistant(page) -> None:
    """MLflow 3's assistant panel opens beside every page; close it for the screenshots."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def test_experiment_page_lists_the_sweep_with_its_nested_trials(ui, page):
    url, client = ui
    exp = client.get_experiment_by_name("quickstart")
    parents, children = sweep_runs(client, "quickstart")
    page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs")
    parent = page.locator("[role=gridcell]", has_text=parents[0].info.run_name).first
    parent.wait_for(timeout=60_000)
    close_assistant(page)
    for child in children:  # folded under the parent until it is expanded
        assert not page.get_by_text(child.info.run_name).count()
    parent.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()
    for child in children:
        page.get_by_text(child.info.run_name).first.wait_for(timeout=30_000)
    shoot(page, "mlflow-experiment")


def test_a_trial_shows_its_metric_chart_and_artifacts(ui, page):
    url, client = ui
    exp = client.get_experiment_by_name("quickstart")
    _, children = sweep_runs(client, "quickstart")
    run = children[0]
    base = f"{url}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    page.goto(f"{base}/model-metrics")
    page.get_by_text(f"{run.info.run_name} (train/loss)").first.wait_for(timeout=60_000)
    page.get_by_text(f"{run.info.run_name} (train/acc)").first.wait_for(timeout=60_000)
    close_assistant(page)
    shoot(page, "mlflow-trial-metrics")
    page.goto(f"{base}/artifacts")
    for name in ("figures", "trajectories", "model", "config.json"):
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    close_assistant(page)
    page.get_by_text("trajectories", exact=True).first.click()
    page.get_by_text("weights", exact=True).first.wait_for(timeout=30_000)
    page.get_by_text("figures", exact=True).first.click()
    page.get_by_text("learning_curves.png", exact=True).first.click()
    # The preview shows the figure itself (a loaded image as wide as the PNG).
    page.wait_for_function(
        "[...document.images].some(i => i.complete && i.naturalWidth >= 600)", timeout=60_000
    )
    shoot(page, "mlflow-trial-artifacts")


def test_the_compare_view_of_the_trials_opens(ui, page):
    url, client = ui
    exp = client.get_experiment_by_name("quickstart")
    _, children = sweep_runs(client, "quickstart")
    ids = json.dumps([c.info.run_id for c in children])
    query = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp.experiment_id])})
    page.goto(f"{url}/#/compare-runs?{query}")
    page.get_by_text("Run details").first.wait_for(timeout=60_000)
    for child in children:
        page.get_by_text(child.info.run_name).first.wait_for(timeout=30_000)
    page.get_by_text("config.optimizer.lr").first.wait_for(timeout=30_000)
    close_assistant(page)
    shoot(page, "mlflow-compare")
