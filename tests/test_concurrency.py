"""Issue 10, defect 5: concurrent runs on one dataset never break each other.

Two ``depthmine ingest`` processes on one movie both end 0 (the second waits for the first's movie
lock, then finds the movie committed), the dataset verifies and no staging is left; garbage
collection skips the staging and uncommitted folder of a movie whose lock a live process holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.prefect import wait_until

ROOT = Path(__file__).resolve().parents[1]

_HOLD = """
import sys
from pipeline.shards.locks import movie_lock
with movie_lock(sys.argv[1], sys.argv[2]):
    print("LOCKED", flush=True)
    sys.stdin.read()
"""


def _hold_lock(dataset: Path, movie_id: str) -> subprocess.Popen:
    """A real process holding the movie's lock until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(dataset), movie_id],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.stdout.readline().strip() == "LOCKED"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def _api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


@pytest.mark.slow
def test_two_ingests_of_one_movie_at_once_both_succeed(prefect_harness, sample_movie, tmp_path):
    from pipeline.shards import read_manifest, verify

    movie = sample_movie(layout="sbs-half", seconds=4.0, size=(160, 96), seed=41)
    out = tmp_path / "ds"
    out.mkdir()
    env = dict(os.environ, PREFECT_API_URL=_api_url(), PYTHONPATH=str(ROOT), PREFECT_LOGGING_LEVEL="WARNING")
    cmd = [
        sys.executable,
        "-m",
        "flows",
        "ingest",
        str(movie.path),
        "--out",
        str(out),
        "--movie-id",
        "same",
        "--flow",
        "dis-ultrafast",
        "--workers",
        "1",
        "--set",
        "chunk_frames=2",
        "--set",
        "sampling.eval_fps=4",
    ]
    # Hold the movie's lock while both start, so they really overlap: each must reach the lock and wait.
    holder = _hold_lock(out, "same")
    logs = [tmp_path / f"run{i}.err" for i in (0, 1)]
    procs = []
    try:
        for log in logs:
            with open(log, "w") as err:
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True))
        wait_until(
            lambda: all("another run" in log.read_text() and "waiting" in log.read_text() for log in logs),
            timeout_s=180,
            interval_s=0.2,
            what="both ingests waiting for the movie's lock",
        )
    finally:
        _release(holder)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    assert sum("unchanged (already ingested)" in o for o in outs) == 1, outs  # the second only published
    manifest = read_manifest(out)
    assert list(manifest.movies) == ["same"] and manifest.rows > 0
    assert [p for p in verify(str(out))] == []
    assert not (out / ".work").exists()


def test_garbage_collection_skips_a_locked_movie_and_recent_staging(tmp_path):
    from flows.build import collect_garbage_task
    from pipeline.shards import garbage_collect, publish
    from tests.fixtures.datasets import make_tiny_dataset

    out = make_tiny_dataset(tmp_path / "ds", n_movies=1, frames_per_movie=2)
    publish(out)
    staging = out / ".work" / "zeta" / "0123456789abcdef"
    staging.mkdir(parents=True)
    (staging / "s00000-p000.json").write_text("{}")
    writing = out / "movies" / "zeta" / "fedcba9876543210"
    writing.mkdir(parents=True)
    (writing / ".part-00000.parquet.tmp").write_bytes(b"half a shard")

    holder = _hold_lock(out, "zeta")  # an ingest of zeta is running in another process
    try:
        garbage_collect(out, keep=1)
        collect_garbage_task.fn(str(out), 1, ["movie-00"], {})
        assert (staging / "s00000-p000.json").exists() and (writing / ".part-00000.parquet.tmp").exists()
    finally:
        _release(holder)
    # unlocked but touched in the last hour: a catalog-less movie's staging is still kept
    collect_garbage_task.fn(str(out), 1, ["movie-00"], {})
    assert staging.exists() and not writing.exists()  # an uncommitted, unlocked folder is a dead write
    old = time.time() - 2 * 3600
    for p in (staging / "s00000-p000.json", staging, staging.parent):
        os.utime(p, (old, old))
    collect_garbage_task.fn(str(out), 1, ["movie-00"], {})
    assert not (out / ".work").exists()
