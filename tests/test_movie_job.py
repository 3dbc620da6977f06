"""The movie job's small parts, without decoding: what crosses the network, threads, tags."""

from __future__ import annotations

import pickle

from pipeline.ingest import ingest_config
from pipeline.movie_job import MovieJob, labelling_threads, uses_gpu


def _job(**kw) -> MovieJob:
    return MovieJob(movie="/data/movies/a.mkv", out="/data/ds", movie_id="a", config=ingest_config(**kw))


def test_a_movie_job_pickles_to_a_few_kilobytes():
    job = _job()
    data = pickle.dumps(job)
    assert pickle.loads(data) == job
    assert len(data) < 8_000, f"{len(data)} bytes: only paths and the configuration may travel"


def test_labelling_threads_share_the_cores_and_gpu_jobs_take_one():
    import os

    assert labelling_threads(MovieJob(**{**_job().__dict__, "threads": 3})) == 3
    assert labelling_threads(_job()) == max(1, len(os.sched_getaffinity(0)))  # not in a Dask worker: every core
    gpu = MovieJob(**{**_job(device="cuda").__dict__, "threads": 8})
    assert uses_gpu(gpu.config) and labelling_threads(gpu) == 1  # one chunk at a time: a batch on the device


def test_movie_tasks_are_tagged_decode_and_gpu_for_cuda():
    from flows.ingest import movie_tags

    assert movie_tags(ingest_config()) == ["decode"]
    assert movie_tags(ingest_config(device="cuda")) == ["decode", "gpu"]
    assert movie_tags(ingest_config(flow="ptlflow:raft")) == ["decode", "gpu"]  # no device: may use one


def test_the_job_s_labellers_are_one_per_thread_and_configuration():
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.disparity import DisparityConfig
    from pipeline.ingest import LabellerPool

    pool = LabellerPool()
    normal, swapped = DisparityConfig(flow="dis-ultrafast", matcher=None), DisparityConfig(swap_eyes=True)

    def borrow(config):
        with pool.borrow(config) as labeller:
            assert labeller.config == config
            return id(labeller)

    with ThreadPoolExecutor(2) as threads:
        seen = set(threads.map(borrow, [normal] * 20))
    assert 1 <= len(seen) <= 2  # never more labellers than threads
    assert borrow(swapped) not in seen  # another configuration gets its own engines
    assert borrow(normal) in seen  # and the first ones are reused, not rebuilt


def test_a_clips_movie_committed_before_its_count_was_recorded_reports_rows_less_rejected():
    from pipeline.movie_job import MovieResult
    from pipeline.shards.manifest import MovieManifest, MovieRef, ShardEntry

    shard = ShardEntry(path="part-00000.parquet", rows=16, bytes=1, sha256="0" * 64, split_counts={"train": 16})
    for mode, kept in (("frames", 16), ("clips", 13)):
        manifest = MovieManifest(
            movie_id="m",
            key="k",
            shards=[shard],
            rejected=None,
            rejected_reasons={"left_right_consistency": 3},
            meta={"config": {"sampling": {"mode": mode}}},
        )
        # clips keep their 3 rejected frames as rows without a label: they are not "kept"
        assert MovieResult.committed(MovieRef.from_manifest(manifest), 0.0, manifest).kept == kept


def test_a_committed_clips_movie_found_again_reports_the_kept_frames_of_its_ingest(sample_movie, tmp_path):
    """Some rejected clip frames are rows without a label, others (whole chunks) are no rows: only
    the count the ingest recorded at its commit gives the kept frames back."""
    from pipeline.movie_job import run_movie_job

    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=21)
    config = ingest_config(
        ["chunk_frames=4", "sampling.eval_fps=4", "sampling.mode=clips", "sampling.clip_frames=4"]
        + ["disparity.min_range_px=90"],
        flow="dis-ultrafast",
    )
    job = MovieJob(movie=str(movie.path), out=str(tmp_path / "ds"), movie_id="m", config=config, threads=2)
    first = run_movie_job(job)
    rows = first["manifest"]["rows"]
    assert first["rejected"] and rows not in (first["kept"], first["kept"] + sum(first["rejected"].values()))
    again = run_movie_job(job)
    assert again["skipped"] and (again["kept"], again["rejected"]) == (first["kept"], first["rejected"])


def test_a_package_upgrade_that_changes_no_row_relabels_nothing(sample_movie, tmp_path, monkeypatch):
    """The key holds LABELS_VERSION, not the package version: a release that changes no row finds
    every movie committed (a library of films is not relabelled for a trainer fix); bumping
    LABELS_VERSION does relabel."""
    import pipeline
    from pipeline import ingest, movie_job
    from pipeline.changes import settings_hash
    from pipeline.movie_job import run_movie_job

    movie = sample_movie(layout="sbs-half", seconds=2.0, size=(160, 96), seed=3)
    config = ingest_config(["sampling.eval_fps=2"], flow="dis-ultrafast")
    job = MovieJob(movie=str(movie.path), out=str(tmp_path / "ds"), movie_id="m", config=config, threads=1)
    first = run_movie_job(job)
    before = settings_hash(config, None, "train")
    monkeypatch.setattr(pipeline, "__version__", "9.9.9")
    again = run_movie_job(job)
    assert again["skipped"] and again["key"] == first["key"]
    assert settings_hash(config, None, "train") == before
    monkeypatch.setattr(ingest, "LABELS_VERSION", "9.9.9")
    monkeypatch.setattr(movie_job, "LABELS_VERSION", "9.9.9")
    assert settings_hash(config, None, "train") != before
    relabelled = run_movie_job(job)
    assert not relabelled["skipped"] and relabelled["key"] != first["key"]
