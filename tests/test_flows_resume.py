"""Resume after a crash: SIGKILL an ingest mid-run, run it again, get exactly a clean run's dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.prefect import wait_until

pytestmark = pytest.mark.slow  # two ingests in subprocesses and one in process

# Many small chunks, every frame of every shot sampled: a run long enough to be killed mid-way.
OPTIONS = [
    "--flow",
    "dis-medium",
    "--workers",
    "1",
    "--movie-id",
    "resume",
    "--set",
    "chunk_frames=4",
    "--set",
    "sampling.train_fps=24",
    "--set",
    "sampling.drop_first_chapters=0",
    "--set",
    "sampling.drop_last_chapters=0",
]
ROOT = Path(__file__).resolve().parents[1]


def _api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def _cli(movie, out, env, extra=()):
    return [sys.executable, "-m", "flows", "ingest", str(movie), "--out", str(out), *OPTIONS, *extra]


def _shards(out: Path) -> list[tuple[str, str, int]]:
    from pipeline.shards import read_manifest

    m = read_manifest(out)
    return [(s.path.rsplit("/", 1)[-1], s.sha256, s.rows) for s in m.shards]


def _rows(out: Path) -> list[tuple]:
    from pipeline.shards import iter_samples

    return [
        (r["shot_id"], r["frame_index"], r["image"].tobytes(), r["disparity"].tobytes(), r["valid"].tobytes())
        for r in iter_samples(out)
    ]


def test_sigkill_mid_ingest_then_rerun_equals_a_clean_run(prefect_harness, sample_movie, tmp_path):
    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=11)
    env = dict(os.environ, PREFECT_API_URL=_api_url(), PYTHONPATH=str(ROOT))

    # 1. the reference: an uninterrupted run
    clean = tmp_path / "clean"
    done = subprocess.run(
        _cli(movie.path, clean, env, ["--json"]), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads(done.stdout)
    assert reference["chunks"] >= 8

    # 2. a run killed with SIGKILL as soon as its first chunk is staged
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        _cli(movie.path, crashed, env), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    work = crashed / ".work" / "resume"
    try:
        wait_until(
            lambda: list(work.glob("*/s*-p*.json")), timeout_s=240, interval_s=0.05, what="the first staged chunk"
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    staged = {p.stem for p in work.glob("*/s*-p*.json")}
    assert 1 <= len(staged) < reference["chunks"], "the kill must land mid-run"
    assert not (crashed / "manifest.json").exists()

    # 3. the same command again resumes: staged chunks are reused, not recomputed
    again = subprocess.run(
        _cli(movie.path, crashed, env, ["--json"]), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(again.stdout)
    assert resumed["key"] == reference["key"]
    assert resumed["chunks_resumed"] >= len(staged)
    assert resumed["chunks"] == reference["chunks"]

    # 4. identical datasets: same shard bytes, same decoded rows, nothing lost or duplicated
    assert _shards(crashed) == _shards(clean)
    rows = _rows(crashed)
    assert rows == _rows(clean)
    assert len(rows) == len({(r[0], r[1]) for r in rows}) == reference["kept"]
