"""Per-movie locks: one run at a time owns a movie's staging, commit and publish.

Two runs on one movie (the same ``ingest`` started twice, a nightly ``build`` while someone
re-ingests a film) would otherwise share ``.work/<movie_id>/<key>/``: one removes the staging the
other is still reading, or garbage collection removes a folder that is being committed. So every
ingest holds ``DATASET/.locks/<movie_id>.lock`` (an advisory ``flock``) from the moment it starts
staging until the movie is published and its staging removed; a second run on the same movie
waits for it, then finds the movie committed and only publishes it. Garbage collection never
waits: it skips the staging and uncommitted folders of locked movies (:func:`movie_locked`).

The lock files are empty and never deleted: deleting a lock file while another process waits on
it would let two processes hold "the" lock at once. They live outside ``.work`` so a finished run
leaves no staging behind. ``flock`` works across processes on one machine and on most network
file systems (NFSv4); where it does not, the age rule of garbage collection (staging touched in
the last hour is kept) is the remaining guard.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from pipeline.shards.manifest import check_movie_id

__all__ = ["LOCKS_DIR", "movie_lock", "movie_locked", "RECENT_SECONDS", "recently_touched"]

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
#: Staging or uncommitted folders touched this recently are never garbage-collected.
RECENT_SECONDS = 3600.0


def _lock_path(dataset_dir: str | os.PathLike, movie_id: str) -> Path:
    return Path(dataset_dir) / LOCKS_DIR / f"{check_movie_id(movie_id)}.lock"


@contextlib.contextmanager
def movie_lock(
    dataset_dir: str | os.PathLike,
    movie_id: str,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the movie's lock for the block; wait (calling ``on_wait`` once) while another run holds it."""
    path = _lock_path(dataset_dir, movie_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            owner = _owner(fh)
            msg = f"{movie_id}: another run{owner} is working on this movie; waiting for it to finish"
            log.warning(msg)
            if on_wait is not None:
                on_wait(msg)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {os.uname().nodename} {time.time():.0f}\n".encode())
            fh.flush()
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _owner(fh) -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fh.seek(0)
        pid, host = fh.read(200).decode().split()[:2]
        return f" (pid {pid} on {host})"
    return ""


def movie_locked(dataset_dir: str | os.PathLike, movie_id: str) -> bool:
    """Whether a run holds the movie's lock right now (without waiting, without creating files)."""
    try:
        path = _lock_path(dataset_dir, movie_id)
    except Exception:  # noqa: BLE001 - a folder name that is no valid id was never locked by us
        return False
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def recently_touched(folder: str | os.PathLike, seconds: float = RECENT_SECONDS) -> bool:
    """Whether anything in ``folder`` (or the folder itself) was modified in the last ``seconds``."""
    now = time.time()
    folder = Path(folder)
    with contextlib.suppress(FileNotFoundError):
        if now - folder.stat().st_mtime < seconds:
            return True
        for p in folder.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime < seconds:
                    return True
    return False
