"""The output folder of a run: what may be in it before a run starts, whether to resume, and its lock.

Policy (the engine applies it on the main process before anything is written):

* ``--out`` must be a folder (or not exist yet); a path naming a file is refused.
* A fresh run (``resume=False``) needs an empty or missing folder: a folder holding anything else
  (an earlier run's ``model.safetensors``, ``metrics.jsonl``, ``checkpoints/``, or unrelated files)
  is refused, so nothing is overwritten or appended to.
* ``resume=True`` needs a checkpoint; ``resume="auto"`` resumes when one is there and otherwise
  starts fresh, also in a folder that holds only what a run writes before its first checkpoint
  (``run.json``, ``metrics.jsonl``, a stale lock): the case of a job restarted by
  ``torchrun --max-restarts`` before it ever checkpointed.
* The lock ``<out>/.vislearn.lock`` (JSON: pid, host, process start time, torchelastic run id and
  restart count) keeps two runs out of one folder. A lock left by a process that no longer runs
  on this host (or by an earlier worker group of the same torchelastic job, on any host: the
  ``--rdzv-id``, unless it is torchrun's default ``none``) is taken over with a message;
  a live one is refused naming its pid and host. A lock from another host cannot be checked from
  here: the message says to delete the file if that run is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from vislearn.errors import UserError
from vislearn.io import atomic_write_bytes
from vislearn.train.metrics_log import dumps_strict
from vislearn.train.resume import compare_configs

__all__ = ["LOCK_NAME", "RUN_RECORD", "RunLock", "check_out_path", "prepare_out_dir", "resolve_resume", "say"]

LOCK_NAME = ".vislearn.lock"
RUN_RECORD = "run.json"  # the config of the run in this folder, written when a fresh run starts
# what a run writes before its first checkpoint: `resume="auto"` may start over in a folder holding only these
_PRE_CHECKPOINT = {RUN_RECORD, "metrics.jsonl", "tensorboard", LOCK_NAME, "checkpoints"}


def say(text: str) -> None:
    """One ``vislearn: ...`` line on stderr (what the engine tells a user without stopping)."""
    print(f"vislearn: {text}", file=sys.stderr, flush=True)


def prepare_out_dir(out: Path, resume: bool | str, config_record: dict) -> tuple[bool, RunLock | None]:
    """Check ``out``, take its lock, decide whether to resume; a fresh start writes ``run.json``.

    Returns ``(resume, lock)``. A fresh start under ``resume="auto"`` in the folder of a run that never
    checkpointed compares that run's ``run.json`` with ``config_record`` and drops its ``metrics.jsonl``.
    """
    check_out_path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {out}: {e.strerror or e}") from None
    lock = RunLock(out)
    lock.acquire()
    try:
        resumed = resolve_resume(out, resume)
        if not resumed:
            record = out / RUN_RECORD
            if record.is_file():
                try:
                    saved = json.loads(record.read_text()).get("config", {})
                except (OSError, ValueError, AttributeError):
                    saved = {}
                compare_configs(saved, config_record, str(record))
                (out / "metrics.jsonl").unlink(missing_ok=True)
            atomic_write_bytes(record, (dumps_strict({"config": config_record}, indent=2) + "\n").encode())
    except BaseException:
        lock.release()
        raise
    return resumed, lock


def check_out_path(out: Path) -> None:
    """Refuse an ``out`` that names a file, or whose parent is a file."""
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise UserError(f"--out {out}: {p} is a file, not a folder; choose a folder for the run")


def _has_checkpoint(out: Path) -> bool:
    root = out / "checkpoints"
    return root.is_dir() and any(p.is_dir() and p.name.startswith("step_") for p in root.iterdir())


def resolve_resume(out: Path | None, resume: bool | str) -> bool:
    """Whether a run into ``out`` resumes (``resume``: True, False or ``"auto"``); refuses what the policy refuses."""
    if resume not in (True, False, "auto"):
        raise UserError(f"resume must be true, false or 'auto', got {resume!r}")
    if out is None:
        if resume is True:
            raise UserError("resume needs an output directory")
        return False
    check_out_path(out)
    if resume is True:
        if not _has_checkpoint(out):
            raise UserError(f"nothing to resume: no checkpoint under {out}/checkpoints")
        return True
    if resume == "auto" and _has_checkpoint(out):
        return True
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    entries = [e for e in entries if e != LOCK_NAME]
    if not entries:
        return False
    if resume == "auto" and (out / RUN_RECORD).is_file() and set(entries) <= _PRE_CHECKPOINT:
        return False  # a run that never checkpointed: start it over (its record is compared by the caller)
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    if (out / "checkpoints").exists() or (out / RUN_RECORD).exists():
        raise UserError(f"--out {out} already holds a run ({shown}); pass --resume to continue it (--resume auto: "
                        "continue or start), or choose another --out")
    raise UserError(f"--out {out} is not empty (holds {shown}) and a fresh run would write over or append to "
                    "what is there; choose an empty or new --out")


# ------------------------------------------------------------------------------------------ the lock
def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (tells a reused pid apart), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    now = _start_time(pid)
    return start is None or now is None or now == start


def _me() -> dict[str, object]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _start_time(pid), "since": time.time(),
            "run_id": os.environ.get("TORCHELASTIC_RUN_ID"),
            "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)}


class RunLock:
    """``<out>/.vislearn.lock``, held by the main process while it trains (:meth:`acquire`, :meth:`release`)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self.held = False

    def _stale(self, other: dict) -> str | None:
        """Why the lock ``other`` may be taken over, or None when its run may still be going."""
        me = _me()
        if other.get("pid") == me["pid"] and other.get("host") == me["host"]:
            return "this process"  # an earlier Trainer of this process (e.g. one that failed)
        # One torchelastic job runs one worker group at a time, and torchrun stops a group before it starts the
        # next, so a lock of the same job is an earlier group's. Restart counts cannot tell (a node whose worker
        # did not fail restarts without counting), except under torchrun's default run id "none", shared by jobs.
        if me["run_id"] and other.get("run_id") == me["run_id"] and (
                me["run_id"] != "none" or me["restart"] > int(other.get("restart", 0))):
            return f"an earlier worker group (attempt {other.get('restart', 0)}) of torchelastic job {me['run_id']}"
        if other.get("host") == me["host"] and isinstance(other.get("pid"), int) \
                and not _alive(other["pid"], other.get("start")):
            return f"process {other['pid']} no longer runs"
        return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps(_me()).encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text())
                    if not isinstance(other, dict):
                        raise ValueError("not an object")
                except (OSError, ValueError):
                    other = {}
                why = self._stale(other) if other else "its lock file is unreadable"
                if why is None:
                    raise UserError(
                        f"--out {self.path.parent} is in use by process {other.get('pid')} on "
                        f"{other.get('host')} (lock {self.path}); wait for it, or delete the lock file if that "
                        "run is gone") from None
                if why != "this process":
                    print(f"vislearn: taking over the stale lock {self.path} ({why})", file=sys.stderr)
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(record)
            self.held = True
            return
        raise UserError(f"could not take the lock {self.path}: another run keeps creating it")

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
