"""Trial checkpoint files: reading them, and finding the one a trial resumes from.

A trial checkpoint is one file, ``state.pt`` (``state-rankN.pt`` for other ranks of a
distributed trial), loadable with ``torch.load(weights_only=True)``:
``{"loop": {"trainer", "step", "elapsed_s"}, "trial_id", "run_id", "trainer", "config",
"id", "origins"}``: ``id`` names this checkpoint, ``origins`` the other trials' checkpoints
that the trial's line of states was restored from (PBT exploits), oldest first.

Tune names the checkpoint to restore in its experiment state, which it saves every ~10 s.
After the driver is killed, that state can be behind the files: it may name an older
checkpoint, one already deleted, or none at all (the trial looks unstarted and gets a new
folder). So a trial resumes from the newest readable checkpoint file of its folders in the
sweep folder, and uses Tune's checkpoint only where those folders cannot be seen, or where
it is another trial's (a PBT exploit) — unless the trial's own newest file descends from
it and has the trial's config of now: then Tune's state is behind, naming an exploit the
trial has trained on since (a new exploit of the same checkpoint perturbs the config).
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from ray import tune

from dynsweep.errors import DataError
from orchestrator.storage import SweepFolder

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


MAX_ORIGINS = 64  # exploits remembered per line of states (each a 32-character id)


def checkpoint_state(header: dict[str, Any], loop: dict[str, Any]) -> dict[str, Any]:
    """The contents of a new checkpoint file: ``header`` (the trial's, with its ``origins``)
    and the loop's state, under a new ``id``."""
    return {**header, "id": uuid.uuid4().hex, "loop": loop}


def lineage(state: dict[str, Any] | None, trial_id: str) -> list[str]:
    """The ``origins`` of the checkpoints a trial saves after resuming from ``state``: those of
    ``state``, and ``state`` itself when it is another trial's (a PBT exploit)."""
    if state is None:
        return []
    origins = list(state.get("origins", []))
    if state.get("trial_id") != trial_id and state.get("id"):
        origins.append(state["id"])
    return origins[-MAX_ORIGINS:]


def state_file(rank: int) -> str:
    """The checkpoint file of ``rank`` (rank 0 and single-process trials: ``state.pt``)."""
    return STATE_FILE if rank == 0 else f"state-rank{rank}.pt"


def load_state(path: str | Path, folder: SweepFolder | None = None) -> dict[str, Any]:
    """Read a trial checkpoint file (``path`` of ``folder``'s filesystem when given, else a
    local path); a damaged file gets an error that names it."""
    try:
        source = folder.open_bytes(str(path)) if folder is not None else path
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def on_disk(sweep_dir: str, trial_id: str) -> tuple[SweepFolder | None, list[str]]:
    """The sweep's folder and the checkpoint files of ``trial_id`` in it, newest first; no
    files when this process cannot see the folder."""
    if not sweep_dir:
        return None, []
    folder = SweepFolder.at(sweep_dir)
    own = f"trial_{trial_id}"
    try:
        trial_dirs = [
            info.path
            for info in folder.list()
            if info.type == pafs.FileType.Directory
            and (info.base_name == own or info.base_name.startswith(own + "_"))
        ]
        files = [
            info
            for d in trial_dirs
            for info in folder.fs.get_file_info(pafs.FileSelector(d, recursive=True))
            if info.base_name == STATE_FILE
            and posixpath.basename(posixpath.dirname(info.path)).startswith("checkpoint_")
        ]
    except OSError:  # not reachable from here: Tune's own checkpoint is used
        return None, []
    files.sort(key=lambda info: (info.mtime_ns or 0, info.path), reverse=True)
    return folder, [info.path for info in files]


def _trained_past(
    own: dict[str, Any], foreign: dict[str, Any], config: dict[str, Any] | None
) -> bool:
    """Whether the trial's ``own`` checkpoint was saved after it was restored from the other
    trial's ``foreign`` one, with the config it runs with now (``None``: not compared)."""
    descends = foreign.get("id") is not None and foreign["id"] in own.get("origins", [])
    return descends and (config is None or own.get("config") == config)


def resume_state(
    sweep_dir: str,
    trial_id: str,
    checkpoint: tune.Checkpoint | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """(the state to resume ``trial_id`` from or None, the damaged files passed over).

    ``checkpoint``: the one Tune restores (default: ``tune.get_checkpoint()``). It is used
    when the trial's own files cannot be seen, or when it is another trial's (a PBT exploit),
    unless the newest of the trial's own files descends from it and was trained with the
    trial's ``config`` of now (then Tune's state is older than that file: the driver was
    killed before Tune saved again; a new exploit of the same checkpoint brings a perturbed
    config). Else the newest readable file of the trial's own folders. A damaged newest file
    (a process killed while Tune copied it) is passed over for the one before it, and named
    in the second value; if every file is damaged the error names them.
    """
    checkpoint = checkpoint or tune.get_checkpoint()
    own = f"trial_{trial_id}"
    folder, files = on_disk(sweep_dir, trial_id)
    foreign = None
    if checkpoint is not None:
        owner = Path(checkpoint.path).parent.name  # the trial folder Tune restores from
        if not files or (owner != own and not owner.startswith(own + "_")):
            with checkpoint.as_directory() as local:
                foreign = load_state(Path(local) / STATE_FILE)
            if not files:
                return foreign, []
    damaged: list[str] = []
    for path in files:
        try:
            state = load_state(path, folder)
        except DataError as exc:
            log.warning("%s; resuming from an older checkpoint", exc)
            damaged.append(str(exc))
            continue
        if foreign is None or _trained_past(state, foreign, config):
            return state, damaged
        return foreign, damaged  # exploited since this file was saved: go on from there
    if foreign is not None:
        return foreign, damaged
    if damaged:
        raise DataError("no readable checkpoint to resume from: " + "; ".join(damaged))
    return None, []
