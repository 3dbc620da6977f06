"""The ingest_movie flow on a real (temporary) Prefect API: rows, artifacts, retries, CLI."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flows.runners import RunnerSpec
from pipeline.errors import BadInputError
from pipeline.ingest import LabelSettings

pytestmark = pytest.mark.slow  # a Prefect API and real ingests

FAST = ["chunk_frames=2", "sampling.eval_fps=4"]


@pytest.fixture(scope="module")
def tiny_movie(sample_movie):
    return sample_movie(layout="sbs-half", seconds=6.0, size=(160, 96), seed=3)


def _artifacts(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    return asyncio.run(read())


def _task_runs(flow_run_id, name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)),
            )

    return asyncio.run(read())


@pytest.fixture(scope="module")
def ingested(prefect_harness, tiny_movie, tmp_path_factory):
    from flows.ingest import ingest_movie

    out = tmp_path_factory.mktemp("ingest") / "dataset"
    result = ingest_movie(
        movie=str(tiny_movie.path),
        out=str(out),
        movie_id="tiny",
        split="val",
        labelling=LabelSettings("dis-ultrafast", overrides=FAST),
        runner=RunnerSpec(workers=2),
    )
    return out, result


def test_ingest_writes_a_verified_dataset_with_every_kept_frame(ingested):
    from pipeline.shards import iter_samples, read_manifest, verify

    out, result = ingested
    assert verify(str(out)) == []
    manifest = read_manifest(out)
    assert set(manifest.movies) == {"tiny"} and manifest.rows == result["kept"] > 0
    rows = list(iter_samples(out))
    assert [r["frame_index"] for r in rows] == sorted(r["frame_index"] for r in rows)  # shot order kept
    assert {r["split"] for r in rows} == {"val"}
    assert rows[0]["flow_backend"] == "dis-ultrafast" and rows[0]["ingest_key"] == result["key"]
    assert result["chunks"] > 1 and result["chunks_resumed"] == 0
    assert not (out / ".work" / "tiny").exists(), "staging must be cleaned up after the commit"


def test_ingest_result_reports_swapped_eyes(ingested):
    _, result = ingested
    swap = result["swapped_eyes"]
    assert swap["mode"] == "never" and swap["corrected_shots"] == []
    assert swap["shots"] and {int(s) for s in swap["shots"]} <= set(range(result["shots"]))  # shots with samples
    assert swap["movie"]["frames"] == result["kept"] + sum(result["rejected"].values())


@pytest.mark.parametrize("swap_eyes", [False, True], ids=["normal", "reversed"])
def test_swapped_eyes_are_reported_and_auto_corrected(prefect_harness, sample_movie, tmp_path, swap_eyes):
    """320x180 eyes: at 160x96 (80 px wide encoded halves) the evidence is not reliable."""
    from flows.ingest import ingest_movie
    from pipeline.shards import iter_samples, read_manifest

    movie = sample_movie(layout="sbs-half", seconds=4.0, size=(320, 180), seed=5, swap_eyes=swap_eyes)
    out = tmp_path / "ds"
    mid = "rev" if swap_eyes else "ok"
    result = ingest_movie(
        movie=str(movie.path),
        out=str(out),
        movie_id=mid,
        labelling=LabelSettings("dis-ultrafast", overrides=FAST + ["swap_eyes=auto"]),
        runner=RunnerSpec(workers=1),
    )
    swap = result["swapped_eyes"]
    md = _artifacts(f"ingest-{mid}")[0].data
    assert "## Swapped eyes" in md
    if not swap_eyes:
        assert not swap["movie"]["swapped"] and swap["swapped_shots"] == [] and swap["corrected_shots"] == []
        assert swap["movie"]["normal_frames"] > 0 and swap["movie"]["swapped_frames"] == 0
    else:
        assert swap["movie"]["swapped"] and swap["movie"]["confidence"] > 0.5, swap
        assert swap["swapped_shots"] == sorted(int(s) for s in swap["shots"]), "every shot is reversed"
        assert swap["corrected_shots"] == swap["swapped_shots"] and "**reversed** (corrected)" in md
        assert read_manifest(out).movies[mid].meta["swapped_eyes"]["corrected_shots"] == swap["corrected_shots"]
    # stored rows: the true left view's image and disparity either way
    truth = movie.load_truth()
    c = truth.crop
    rows = list(iter_samples(out))
    assert len(rows) == result["kept"] > 0
    for r in rows:
        gt = truth.disparity[r["frame_index"]][c.y : c.y + c.h, c.x : c.x + c.w].astype(np.float32)
        ok = r["valid"] & ~r["sky"] & np.isfinite(gt)
        assert np.corrcoef(r["disparity"][ok], gt[ok])[0, 1] > 0.6, "stored label must be the true left view's"


def test_ingest_publishes_report_and_progress_artifacts(ingested):
    report = _artifacts("ingest-tiny")
    assert report, "no markdown report"
    md = report[0].data
    assert "# Ingest of `tiny`" in md and "data:image/png;base64," in md
    assert "## Shots" in md and "## Frames rejected by reason" in md
    progress = _artifacts("ingest-progress-tiny")
    assert progress and float(progress[0].data) == pytest.approx(100.0)


def test_reingest_of_an_unchanged_movie_recomputes_nothing(ingested, tiny_movie):
    from flows.ingest import ingest_movie
    from pipeline.shards import read_manifest

    out, first = ingested
    again = ingest_movie(
        movie=str(tiny_movie.path),
        out=str(out),
        movie_id="tiny",
        split="val",
        labelling=LabelSettings("dis-ultrafast", overrides=FAST),
    )
    assert again["skipped"] and again["key"] == first["key"] and again["kept"] == first["kept"]
    assert read_manifest(out).movies["tiny"].key == first["key"]


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
def test_bad_input_fails_fast_without_retries(prefect_harness, tmp_path):
    from flows.ingest import ingest_movie

    bad = tmp_path / "not_a_movie.mkv"
    bad.write_bytes(b"this is not a video" * 100)
    state = ingest_movie(movie=str(bad), out=str(tmp_path / "ds"), return_state=True)
    assert state.is_failed()
    with pytest.raises(BadInputError, match="not_a_movie.mkv"):
        state.result()
    runs = _task_runs(state.state_details.flow_run_id, "movie-")  # the movie's task probes it on its worker
    assert len(runs) == 1 and runs[0].run_count == 1, "bad input must not be retried"
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_retry_condition_retries_io_errors_only():
    from prefect.states import Completed, Failed

    from flows.ingest import retry_unless_bad_input

    def failed(exc):
        return Failed(data=exc)

    assert retry_unless_bad_input(None, None, failed(OSError("NFS hiccup")))
    assert not retry_unless_bad_input(None, None, failed(BadInputError("x.mkv", "not a video")))
    assert retry_unless_bad_input(None, None, Completed())


def test_cli_ingest_bad_file_prints_one_line_and_exits_2(prefect_harness, tmp_path, capsys):
    from flows.cli import main

    code = main(["ingest", str(tmp_path / "missing.mkv"), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing.mkv" in err and "Traceback" not in err


def test_cli_ingest_prints_summary(ingested, tiny_movie, capsys):
    from flows.cli import main

    out, first = ingested
    code = main(
        [
            "ingest",
            str(tiny_movie.path),
            "--out",
            str(out),
            "--movie-id",
            "tiny",
            "--split",
            "val",
            "--flow",
            "dis-ultrafast",
        ]
        + [a for o in FAST for a in ("--set", o)]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert f"tiny (val): {first['kept']} frames kept" in text and "unchanged" in text


def test_ingest_key_changes_with_configuration_and_file(tmp_path):
    from pipeline.ingest import ingest_config, ingest_key, source_fingerprint

    f = tmp_path / "m.bin"
    f.write_bytes(np.arange(3 << 20, dtype=np.uint8).tobytes())
    fp = source_fingerprint(f)
    a = ingest_key(fp, ingest_config(flow="dis-fast"))
    assert a == ingest_key(fp, ingest_config(flow="dis-fast", device="cuda"))  # device: same rows
    assert a != ingest_key(fp, ingest_config(["disparity.lr_threshold_px=1.5"], flow="dis-fast"))
    with open(f, "r+b") as fh:  # change the last MiB, keep the size
        fh.seek(-10, 2)
        fh.write(b"x" * 10)
    assert source_fingerprint(f) != fp


def test_build_summary_shows_reversed_eyes():
    from flows.build import _summary_markdown

    movie = {
        "movie_id": "a",
        "split": "train",
        "skipped": False,
        "kept": 3,
        "rejected": {},
        "chunks_resumed": 0,
        "chunks": 2,
        "seconds": 1.0,
        "swapped_eyes": {"swapped_shots": [2, 5], "corrected_shots": [], "movie": {"swapped": False}},
    }
    normal = {**movie, "movie_id": "b", "swapped_eyes": {"swapped_shots": [], "corrected_shots": []}}
    md = _summary_markdown(
        "c.yaml",
        "/ds",
        {"version": 1, "rows": 6, "movies": [movie, normal], "failed": [], "removed": [], "seconds": 1.0},
    )
    assert any("movie" in line and "eyes" in line for line in md.splitlines()), "a column for the eyes"
    assert "**reversed**: shots 2, 5" in md and "| normal |" in md


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
def test_auto_correction_resumes_after_a_crash_before_the_commit(prefect_harness, sample_movie, tmp_path, monkeypatch):
    import pipeline.movie_job as job_module
    from flows.ingest import ingest_movie
    from pipeline.shards import iter_samples

    movie = sample_movie(layout="sbs-half", seconds=4.0, size=(320, 180), seed=5, swap_eyes=True)
    args = dict(
        movie=str(movie.path),
        movie_id="rev",
        labelling=LabelSettings("dis-ultrafast", overrides=FAST + ["swap_eyes=auto"]),
        runner=RunnerSpec(workers=1),
    )
    real_commit = job_module.commit_movie

    def crash(*a, **kw):  # a user-error type: the movie's task fails at once, without retries
        raise BadInputError("commit", "simulated crash before the commit")

    monkeypatch.setattr(job_module, "commit_movie", crash)
    state = ingest_movie(out=str(tmp_path / "crashed"), return_state=True, **args)
    assert state.is_failed()
    staged = {p.name for p in (tmp_path / "crashed" / ".work" / "rev").glob("*/s*-p*.json")}
    assert any(n.endswith("x.json") for n in staged) and any(not n.endswith("x.json") for n in staged)

    monkeypatch.setattr(job_module, "commit_movie", real_commit)
    resumed = ingest_movie(out=str(tmp_path / "crashed"), **args)
    clean = ingest_movie(out=str(tmp_path / "clean"), **args)
    assert resumed["chunks_resumed"] == resumed["chunks"] == clean["chunks"] and clean["chunks_resumed"] == 0
    assert resumed["swapped_eyes"]["corrected_shots"] == clean["swapped_eyes"]["corrected_shots"] != []

    def rows(out):
        return [(r["frame_index"], r["image"].tobytes(), r["disparity"].tobytes()) for r in iter_samples(out)]

    assert rows(tmp_path / "crashed") == rows(tmp_path / "clean")
