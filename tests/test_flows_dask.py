"""The Dask task runner on a real LocalCluster of two worker processes: the same shards as threads."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # a LocalCluster of two worker processes

OVERRIDES = ["chunk_frames=3", "sampling.eval_fps=4"]


def test_dask_local_cluster_builds_the_same_shards_as_threads(prefect_harness, sample_movie, tmp_path):
    from flows.ingest import ingest_movie
    from flows.runners import RunnerSpec
    from pipeline.ingest import LabelSettings
    from pipeline.shards import read_manifest, verify

    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=31)
    labelling = LabelSettings("dis-ultrafast", overrides=OVERRIDES)
    common = dict(movie=str(movie.path), movie_id="dask", split="val", labelling=labelling)
    threads = ingest_movie(out=str(tmp_path / "threads"), runner=RunnerSpec("threads", 2), **common)
    dask = ingest_movie(out=str(tmp_path / "dask"), runner=RunnerSpec("dask", 2), **common)
    assert dask["chunks"] == threads["chunks"] >= 2 and dask["kept"] == threads["kept"] > 0
    assert verify(str(tmp_path / "dask")) == []
    shards = lambda out: [(s.sha256, s.rows) for s in read_manifest(out).shards]  # noqa: E731
    assert shards(tmp_path / "dask") == shards(tmp_path / "threads")


def test_runner_spec_validates_and_builds_each_kind():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import RunnerSpec, make_task_runner
    from pipeline.errors import ConfigError

    assert isinstance(make_task_runner("threads", 3), ThreadPoolTaskRunner)
    assert isinstance(make_task_runner("processes", 2), ProcessPoolTaskRunner)
    remote = make_task_runner("dask", dask_address="tcp://10.0.0.5:8786")
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigError, match="valid runners: threads, processes, dask"):
        RunnerSpec("ray")
    with pytest.raises(ConfigError, match="needs --runner dask"):
        RunnerSpec("threads", dask_address="tcp://x:1")


def test_chunk_job_and_frames_pickle(sample_movie):
    """What a Dask or process worker receives must survive pickling."""
    import pickle

    from pipeline.ingest import ChunkJob, ingest_config, iter_chunks
    from pipeline.video import open_stereo, scan_movie

    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=31)
    src = open_stereo(movie.path)
    chunk = next(iter_chunks(scan_movie(src, split="train"), 2))
    job = ChunkJob(
        "/tmp/w", "m", "train", ingest_config(["chunk_frames=2"]), {"x": 0, "y": 0, "w": 1, "h": 1}, 1, 1, {}
    )
    back_frames, back_job = pickle.loads(pickle.dumps((chunk.frames, job)))
    assert back_job == job and len(back_frames) == len(chunk.frames) <= 2
    assert (back_frames[0].left == chunk.frames[0].left).all()


def test_relative_out_reaches_dask_workers_started_elsewhere(prefect_harness, sample_movie, tmp_path, monkeypatch):
    """Workers started in another folder (as on other machines) must get absolute paths: with a
    relative --out they staged chunks under their own folder and the commit never found them."""
    from distributed import LocalCluster

    from flows.ingest import ingest_movie
    from flows.runners import RunnerSpec
    from pipeline.ingest import LabelSettings
    from pipeline.shards import verify

    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=31)
    (tmp_path / "workers").mkdir()
    (tmp_path / "host").mkdir()
    monkeypatch.chdir(tmp_path / "workers")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.chdir(tmp_path / "host")
        result = ingest_movie(
            movie=str(movie.path),
            out="dataset",
            movie_id="rel",
            split="val",
            labelling=LabelSettings("dis-ultrafast", overrides=OVERRIDES),
            runner=RunnerSpec("dask", dask_address=cluster.scheduler_address),
        )
    assert result["kept"] > 0
    assert verify(str(tmp_path / "host" / "dataset")) == []
    assert not (tmp_path / "workers" / "dataset").exists(), "nothing staged in the workers' folder"
