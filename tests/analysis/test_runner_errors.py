"""An analysis step that fails on a run keeps its traceback where the user finds it (the run's
``analysis/<step>/traceback.txt`` and an error tag), and steps that read other runs get the
sweep's tracking URI as a parameter (not through the environment)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

import tracking
from analysis import runner
from orchestrator.spec import AnalysisStepSpec


def test_a_failing_step_returns_its_traceback_and_it_is_logged(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "e")
    run = MlflowClient(uri).create_run(exp).info.run_id
    monkeypatch.setattr(runner, "metric_histories", lambda run_id, keys, uri: ([1, 2], {"x": []}))
    # edm on a series that is too short: a real step failing deep inside pyEDM or our code
    metrics, tables, files, error = runner._fit_one("edm", {}, "x", uri, run)
    assert metrics == {} and error is not None
    text = files["traceback.txt"].decode()
    assert text.startswith("Traceback (most recent call last)") and "analysis/edm.py" in text

    tracking.log_analysis_error(uri, run, "edm", error, files)
    client = MlflowClient(uri)
    assert client.get_run(run).data.tags["dynsweep.analysis.edm.error"] == error
    local = client.download_artifacts(run, "analysis/edm/traceback.txt", str(tmp_path))
    assert Path(local).read_text() == text


def test_steps_that_read_other_runs_get_the_sweeps_uri():
    fid = AnalysisStepSpec(step="fid", params={"extractor": "classifier", "classifier": "abc"})
    params, uses_model = runner._params(fid, "data", 0.0, "http://tracking:5000")
    assert params["tracking_uri"] == "http://tracking:5000" and uses_model
    edm = AnalysisStepSpec(step="edm", input="train/loss")
    assert "tracking_uri" not in runner._params(edm, "data", 0.0, "http://tracking:5000")[0]
