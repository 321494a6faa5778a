"""Trial checkpoint files: reading them, and finding the one a trial resumes from.

A trial checkpoint is one file, ``state.pt`` (``state-rankN.pt`` for other ranks of a
distributed trial), loadable with ``torch.load(weights_only=True)``:
``{"loop": {"trainer", "step", "elapsed_s"}, "trial_id", "run_id", "trainer", "config"}``.

Tune names the checkpoint to restore in its experiment state, which it saves every ~10 s.
After the driver is killed, that state can be behind the files: it may name an older
checkpoint, one already deleted, or none at all (the trial looks unstarted and gets a new
folder). So a trial resumes from the newest readable checkpoint file of its folders in the
sweep folder, and uses Tune's checkpoint only where those folders cannot be seen.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from ray import tune

from dynsweep.errors import DataError
from orchestrator.storage import SweepFolder

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


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


def resume_state(sweep_dir: str, trial_id: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(the state to resume ``trial_id`` from or None, the damaged files passed over).

    Tune's checkpoint when it is another trial's (a PBT exploit) or when the sweep folder
    cannot be seen; else the newest readable file of the trial's own folders. A damaged newest
    file (a process killed while Tune copied it) is passed over for the one before it, and
    named in the second value; if every file is damaged the error names them.
    """
    checkpoint = tune.get_checkpoint()
    own = f"trial_{trial_id}"
    folder, files = on_disk(sweep_dir, trial_id)
    if checkpoint is not None:
        owner = Path(checkpoint.path).parent.name  # the trial folder Tune restores from
        if not files or (owner != own and not owner.startswith(own + "_")):
            with checkpoint.as_directory() as local:
                return load_state(Path(local) / STATE_FILE), []
    damaged: list[str] = []
    for path in files:
        try:
            return load_state(path, folder), damaged
        except DataError as exc:
            log.warning("%s; resuming from an older checkpoint", exc)
            damaged.append(str(exc))
    if damaged:
        raise DataError("no readable checkpoint to resume from: " + "; ".join(damaged))
    return None, []
