"""S3 request timeouts of a sweep's storage and the error for an S3 store that did not answer
(the outage itself: tests/faults/test_s3_outage.py)."""

from __future__ import annotations

import pickle

from orchestrator.storage import S3_STALL_S, StorageUnreachable, SweepFolder, unreachable

URI = "s3://key:secret@bucket/sweeps/t-1?endpoint_override=127.0.0.1:9&scheme=http"
STALLED = OSError("When reading x: AWS Error NETWORK_CONNECTION during GetObject operation")


def test_s3_requests_wait_for_a_stalled_server_also_in_the_trials():
    folder = SweepFolder.at(URI)
    for fs in (folder.fs, pickle.loads(pickle.dumps(folder.child("trial").fs))):  # as Tune
        assert fs.__reduce__()[1][0]["request_timeout"] == S3_STALL_S == 60


def test_an_unanswered_s3_store_gives_one_error_naming_it_and_resume():
    error = unreachable(URI, STALLED)
    assert isinstance(error, StorageUnreachable)
    text = str(error)
    assert "the S3 storage s3://key:***@bucket/sweeps/t-1 did not answer" in text
    assert "`dynsweep resume s3://key:***@bucket/sweeps/t-1`" in text
    assert "secret" not in text and "endpoint_override" not in text


def test_other_errors_and_local_folders_are_left_as_they_are(tmp_path):
    other = OSError("When reading x: AWS Error ACCESS_DENIED during GetObject operation")
    assert unreachable(URI, other) is other
    assert unreachable(str(tmp_path), STALLED) is STALLED
