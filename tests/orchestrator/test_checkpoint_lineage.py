"""Which checkpoint a resumed PBT trial goes on from (orchestrator.checkpoints).

Tune saves its experiment state every ~10 s, so after the driver is killed it can still name
the other trial's checkpoint that PBT restored a trial from long before, although the trial
trained on and saved its own checkpoints since. Each checkpoint records the other trials'
checkpoints its line of states came from (``origins``), so the trial's own newest file wins
over an exploit it already trained on with the config of now, and a fresh exploit (or the
same checkpoint again, with a perturbed config) wins over the trial's own files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ray import tune

from orchestrator.checkpoints import checkpoint_state, lineage, resume_state

A, B = "abc12_00000", "abc12_00001"


def save(root: Path, trial: str, index: int, state: dict) -> Path:
    folder = root / f"trial_{trial}" / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    torch.save(state, folder / "state.pt")
    return folder


def header(trial: str, origins: list[str], x: float = 0.5) -> dict:
    return {"trial_id": trial, "run_id": "r", "config": {"x": x}, "origins": origins}


def test_a_new_checkpoint_has_its_own_id_and_keeps_the_header():
    one, two = (checkpoint_state(header(A, ["x"]), {"step": 4}) for _ in range(2))
    assert one["id"] != two["id"] and len(one["id"]) == 32
    assert one["origins"] == ["x"] and one["loop"] == {"step": 4} and one["trial_id"] == A


def test_lineage_adds_another_trials_checkpoint_and_not_the_trials_own():
    theirs = checkpoint_state(header(B, ["old"]), {"step": 12})
    assert lineage(theirs, A) == ["old", theirs["id"]]  # A is exploited from B's checkpoint
    ours = checkpoint_state(header(A, ["x"]), {"step": 16})
    assert lineage(ours, A) == ["x"]
    assert lineage(None, A) == []
    assert lineage({"trial_id": B, "loop": {}}, A) == []  # a checkpoint from before ids


def test_tunes_stale_exploit_loses_to_the_trials_own_newer_checkpoint(tmp_path):
    exploited = checkpoint_state(header(B, []), {"step": 12})
    source = save(tmp_path, B, 2, exploited)
    save(tmp_path, A, 2, checkpoint_state(header(A, []), {"step": 8}))  # before the exploit
    save(tmp_path, A, 4, checkpoint_state(header(A, lineage(exploited, A)), {"step": 24}))
    checkpoint = tune.Checkpoint.from_directory(source)
    state, damaged = resume_state(str(tmp_path), A, checkpoint, config={"x": 0.5})
    assert (state["trial_id"], state["loop"]["step"], damaged) == (A, 24, [])
    # PBT exploits the same checkpoint again (its source has not saved since): a perturbed
    # config says so, and the trial goes on from that checkpoint.
    state, _ = resume_state(str(tmp_path), A, checkpoint, config={"x": 0.6})
    assert (state["trial_id"], state["loop"]["step"]) == (B, 12)


def test_a_fresh_exploit_wins_over_the_trials_own_checkpoints(tmp_path):
    save(tmp_path, A, 4, checkpoint_state(header(A, ["older-exploit"]), {"step": 24}))
    fresh = save(tmp_path, B, 6, checkpoint_state(header(B, []), {"step": 24}))
    state, _ = resume_state(str(tmp_path), A, tune.Checkpoint.from_directory(fresh))
    assert state["trial_id"] == B  # PBT restores A from B's checkpoint: go on from there


def test_with_its_own_files_unseen_the_trial_takes_tunes_checkpoint(tmp_path):
    fresh = save(tmp_path / "elsewhere", B, 0, checkpoint_state(header(B, []), {"step": 4}))
    state, _ = resume_state(str(tmp_path / "unseen"), A, tune.Checkpoint.from_directory(fresh))
    assert state["trial_id"] == B and state["loop"]["step"] == 4
