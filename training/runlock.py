"""One live training run per run folder: ``OUT/.lock`` held with ``flock`` and naming its owner.

Two trainers writing one run folder interleave checkpoints and ``metrics.csv`` rows, and a
``--resume auto`` of the second continues from whichever ``last.pt`` the first wrote last. The
trainer (rank 0) therefore holds an exclusive ``flock`` on ``OUT/.lock`` for the whole run and
writes its pid and host into the file, so a second run fails at once with a message that names
the owner. The kernel drops the lock when the holder dies, however it dies (SIGKILL, a crash, a
power cut of the process): a stale lock file never blocks a later run, and no pid guessing is
needed. ``flock`` is advisory and per host; a run folder on a network file system shared by
several machines is not protected.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from pathlib import Path

from pipeline.errors import DepthmineError

__all__ = ["RunLock", "LOCK_NAME", "check_unlocked"]

LOCK_NAME = ".lock"

log = logging.getLogger(__name__)


class RunLock:
    """``with RunLock(out_dir):`` holds the run folder for this process.

    Raises:
        DepthmineError: another live process holds the folder (the message names its pid).
    """

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise DepthmineError(
                f"{self.path.parent}: another training run is using this folder ({owner}); "
                "wait for it to finish or stop it, or train into another --out"
            ) from None
        except OSError as exc:  # a file system without flock (some network mounts): run unguarded
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            log.warning("%s: file locks are not supported here (%s); concurrent runs are not detected", self.path, exc)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing the last descriptor drops the flock
                self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "owner unknown"


def check_unlocked(out_dir: str | Path) -> None:
    """Fail now (in the launching process) if a live run holds ``out_dir``; holds nothing."""
    if (Path(out_dir) / LOCK_NAME).exists():
        RunLock(out_dir).acquire().release()
