"""The MLflow UI in a real browser (headless Chromium driven by Playwright) on a finished sweep:
the experiment page lists the sweep with its nested trials, a trial shows its metric charts and
artifacts (a figure, the trajectory), and the compare view of the trials shows their names and
parameters. Each test checks what the page shows (text, links, drawn chart lines, a loaded image).

Slow; run it with ``pytest -m slow tests/test_browser.py``. It needs Debian's ``chromium`` and
the ``playwright`` package, which ``.ci/setup-browser.sh`` installs (as root); without them the
tests skip, or fail when ``CI`` is set. ``DYNSWEEP_SCREENSHOTS=DIR`` also saves a screenshot of
each page there (the ones in ``docs/images/``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import free_port, run_cli, store, sweep_runs, wait_for_url, write_config

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

# browser_tools first: a missing browser skips (or fails) before Ray starts.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("browser_tools", "ray_session")]

SETUP = ".ci/setup-browser.sh"
WAIT = 60_000  # ms; the first page of a cold MLflow UI on a busy machine is slow


def missing(what: str) -> None:
    """Skip, or fail under CI (where a skip would hide that the browser test never ran)."""
    message = f"{what}: run {SETUP} (as root) to install it"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message} (CI is set, so this fails rather than skips)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser_tools() -> str:
    """Debian's chromium binary (Playwright drives it; no Playwright browser download)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        missing("Debian's chromium is not on PATH")
    if sync_playwright is None:
        missing(f"the playwright package is not installed for {sys.executable}")
    return executable


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
def page(browser_tools, ui):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_tools, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1600, "height": 1000})
        yield tab
        browser.close()


def shoot(page, name: str) -> None:
    """Save a screenshot to $DYNSWEEP_SCREENSHOTS when it is set (for docs/images/)."""
    folder = os.environ.get("DYNSWEEP_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(1500)  # let chart animations settle
    page.screenshot(path=str(Path(folder) / f"{name}.png"))


def close_assistant(page) -> None:
    """MLflow 3's assistant panel opens beside every page; close it for the screenshots."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def run_link(page, run):
    return page.get_by_role("link", name=run.info.run_name, exact=True)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_experiment_page_lists_the_sweep_with_its_nested_trials(ui, page):
    url, client = ui
    exp = client.get_experiment_by_name("quickstart")
    parents, children = sweep_runs(client, "quickstart")
    assert len(parents) == 1 and len(children) == 2
    page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs")
    expect(run_link(page, parents[0])).to_be_visible(timeout=WAIT)
    expect(page.get_by_text(f"{1 + len(children)} matching runs")).to_be_visible()
    close_assistant(page)
    for child in children:  # folded under the parent until it is expanded
        expect(run_link(page, child)).to_have_count(0)
    parent = page.locator("[role=gridcell]", has_text=parents[0].info.run_name).first
    parent.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()
    for child in children:  # each trial is a row linking to its own run page
        link = run_link(page, child)
        expect(link).to_be_visible(timeout=WAIT)
        expect(link).to_have_attribute("href", re.compile(f"/runs/{child.info.run_id}$"))
    shoot(page, "mlflow-experiment")


def test_a_trial_shows_its_metric_chart_and_artifacts(ui, page, tmp_path):
    url, client = ui
    exp = client.get_experiment_by_name("quickstart")
    _, children = sweep_runs(client, "quickstart")
    run = children[0]
    base = f"{url}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
    page.goto(f"{base}/model-metrics")
    for metric in ("train/loss", "train/acc"):
        # The chart card is titled by run and metric and draws a line through the history.
        card = page.get_by_test_id("experiment-view-compare-runs-card").filter(
            has_text=f"{run.info.run_name} ({metric})"
        )
        expect(card).to_be_visible(timeout=WAIT)
        line = card.locator(".js-plotly-plot path.js-line").first
        expect(line).to_have_attribute("d", re.compile(r"^M[^L]+(L[^L]+){10,}"), timeout=WAIT)
        box = line.evaluate("p => { const b = p.getBBox(); return [b.width, b.height]; }")
        assert min(box) > 0, f"the {metric} line is not drawn: {box}"
    close_assistant(page)
    shoot(page, "mlflow-trial-metrics")

    page.goto(f"{base}/artifacts")
    for name in ("figures", "trajectories", "model", "config.json"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=WAIT)
    close_assistant(page)
    page.get_by_text("trajectories", exact=True).first.click()
    expect(page.get_by_text("weights", exact=True).first).to_be_visible(timeout=WAIT)
    page.get_by_text("figures", exact=True).first.click()
    page.get_by_text("learning_curves.png", exact=True).first.click()
    # The preview shows the figure itself: the image is loaded, at the logged PNG's size.
    figure = "figures/learning_curves.png"
    width, height = png_size(Path(client.download_artifacts(run.info.run_id, figure, tmp_path)))
    image = page.get_by_alt_text(figure, exact=True)
    expect(image).to_be_visible(timeout=WAIT)
    image.evaluate("i => i.decode()")  # resolves once the image has loaded (raises if broken)
    natural = image.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
    assert natural == [True, width, height], f"{figure} preview: {natural}, PNG {width}x{height}"
    shoot(page, "mlflow-trial-artifacts")


def test_the_compare_view_of_the_trials_opens(ui, page):
    url, client = ui
    exp = client.get_experiment_by_name("quickstart")
    _, children = sweep_runs(client, "quickstart")
    ids = json.dumps([c.info.run_id for c in children])
    query = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp.experiment_id])})
    page.goto(f"{url}/#/compare-runs?{query}")
    expect(page.get_by_text("Comparing 2 Runs from 1 Experiment")).to_be_visible(timeout=WAIT)
    # One column per trial, in the order asked for: their names, and the swept parameter.
    rows = {
        "Run Name:": [c.info.run_name for c in children],
        "config.optimizer.lr": [c.data.params["config.optimizer.lr"] for c in children],
    }
    for key, values in rows.items():
        row = page.locator("tr", has_text=key).first
        expect(row.locator("td, th")).to_have_text([key, *values], timeout=WAIT)
    close_assistant(page)
    shoot(page, "mlflow-compare")
