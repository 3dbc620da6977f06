"""Movies as the unit of distribution (#13): a build on a real Dask LocalCluster of two worker
processes sends paths and configurations, never frames; runs its movies at once; shows one task
run per movie with its artifacts; and writes the same shards as threads. The commit renames the
staged chunks, and a crash between two renames resumes to the same dataset."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml
from distributed.diagnostics.plugin import SchedulerPlugin

from flows.runners import RunnerSpec
from pipeline.ingest import LabelSettings

pytestmark = pytest.mark.slow  # a Prefect API, a LocalCluster of two processes, real ingests

OVERRIDES = ["chunk_frames=3", "sampling.eval_fps=4"]
LABELS = LabelSettings("dis-ultrafast", overrides=OVERRIDES)
IDS = ("dist-a", "dist-b")


def _read(what: str, **filters):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await getattr(client, what)(**filters)

    return asyncio.run(read())


def _task_runs(flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return _read("read_task_runs", flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _artifact(key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    found = _read("read_artifacts", artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return found[0]


def _shards(out: Path) -> dict[str, list[tuple[str, str, int]]]:
    from pipeline.shards import read_manifest

    return {mid: [(s.path, s.sha256, s.rows) for s in m.shards] for mid, m in sorted(read_manifest(out).movies.items())}


@pytest.fixture(scope="module")
def catalog(sample_movie, tmp_path_factory) -> Path:
    movies = [sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=s) for s in (41, 42)]
    path = tmp_path_factory.mktemp("distribute") / "catalog.yaml"
    entries = [{"path": str(m.path), "movie_id": mid, "split": "train"} for m, mid in zip(movies, IDS)]
    path.write_text(yaml.safe_dump({"movies": entries}))
    return path


class _InFlight(SchedulerPlugin):
    """A scheduler plugin: the most tasks the scheduler had processing at once, and on which workers."""

    name = "depthmine-in-flight"

    def __init__(self) -> None:
        super().__init__()
        self.now: set[str] = set()
        self.most = 0
        self.at_most: list[str] = []  # the keys processing when the most were
        self.workers: set[str] = set()

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "processing":
            self.now.add(str(key))
            if len(self.now) > self.most:
                self.most, self.at_most = len(self.now), sorted(self.now)
            if kwargs.get("worker"):
                self.workers.add(str(kwargs["worker"]))
        elif start == "processing":
            self.now.discard(str(key))


def _import_the_movie_task() -> None:
    import flows.ingest  # noqa: F401  (Prefect, the movie job, the labeller, OpenCV)
    import pipeline.video  # noqa: F401


@pytest.fixture(scope="module")
def dask_build(prefect_harness, catalog, tmp_path_factory):
    """One build on a LocalCluster of two single-thread worker processes, every task spec the flow
    host sent measured at the scheduler (bench.bench_scale.TaskBytes)."""
    from distributed import Client, LocalCluster

    from bench.bench_scale import TaskBytes
    from flows.build import build_dataset

    out = tmp_path_factory.mktemp("dask") / "dataset"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # both workers import the code first, so the movies' start times measure scheduling, not
        # one worker's imports (client.run is a direct call, not a task the meter counts)
        with Client(cluster) as client:
            client.run(_import_the_movie_task)
        meter, in_flight = TaskBytes(), _InFlight()
        cluster.scheduler.add_plugin(meter)
        cluster.scheduler.add_plugin(in_flight)
        state = build_dataset(
            catalog=str(catalog),
            out=str(out),
            labelling=LABELS,
            runner=RunnerSpec("dask", dask_address=cluster.scheduler_address),
            return_state=True,
        )
    return out, state.result(), meter.sizes, state.state_details.flow_run_id, in_flight


def test_the_flow_host_sends_paths_not_frames(dask_build, sample_movie):
    _, summary, sizes, _, _ = dask_build
    frames = sum(m["kept"] + sum(m["rejected"].values()) for m in summary["movies"])
    assert not summary["failed"] and frames > 0
    assert len(sizes) == len(IDS), f"one task per movie, got {sorted(sizes)}"
    one_frame = 2 * 160 * 96 * 3  # the pixels of one sampled pair: what a chunk task used to carry per frame
    assert max(sizes.values()) < one_frame, sizes
    assert sum(sizes.values()) / frames < 10_000, f"{sum(sizes.values()) / frames:.0f} bytes sent per labelled frame"


def test_the_movies_run_at_once_on_two_workers(dask_build):
    _, summary, _, _, in_flight = dask_build
    rows = summary["movies"]
    assert len({r["pid"] for r in rows}) == 2 and os.getpid() not in {r["pid"] for r in rows}, "two worker processes"
    # both movie tasks were processing at the scheduler at once (the flow host did not wait for the
    # first before sending the second); start and end times on the workers would depend on the load
    assert in_flight.most == 2, f"at most {in_flight.most} movie task(s) processing at once"
    assert all(key.startswith("movie_task-") for key in in_flight.at_most), in_flight.at_most  # movies, not chunks


def test_prefect_shows_one_task_run_per_movie_with_its_artifacts(dask_build):
    _, summary, _, flow_run_id, _ = dask_build
    runs = _task_runs(flow_run_id)
    names = sorted(r.name for r in runs)
    assert sorted(n for n in names if n.startswith("movie-")) == [f"movie-{mid}" for mid in IDS]
    assert len(runs) == len(IDS) + 3, names  # plus load-catalog, publish-dataset, collect-garbage
    movie_runs = {r.name: r for r in runs if r.name.startswith("movie-")}
    assert all("decode" in r.tags and "gpu" not in r.tags for r in movie_runs.values())
    for mid in IDS:
        report = _artifact(f"ingest-{mid}")
        assert report.task_run_id == movie_runs[f"movie-{mid}"].id, "the report comes from the movie's task"
        assert f"# Ingest of `{mid}`" in report.data and "data:image/png;base64," in report.data
        progress = _artifact(f"ingest-progress-{mid}")
        assert progress.task_run_id == movie_runs[f"movie-{mid}"].id and float(progress.data) == pytest.approx(100.0)


def test_threads_write_the_same_shards_as_dask(dask_build, catalog, tmp_path):
    from flows.build import build_dataset
    from pipeline.shards import verify

    out, _, _, _, _ = dask_build
    build_dataset(catalog=str(catalog), out=str(tmp_path / "ds"), labelling=LABELS, runner=RunnerSpec(workers=2))
    assert verify(str(out)) == [] and verify(str(tmp_path / "ds")) == []
    assert _shards(tmp_path / "ds") == _shards(out)
    assert all(len(shards) >= 2 for shards in _shards(out).values())


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
@pytest.mark.parametrize("collected", [False, True], ids=["resumed", "garbage-collected-between"])
def test_a_commit_interrupted_between_renames_resumes_to_the_same_dataset(
    prefect_harness, sample_movie, tmp_path, monkeypatch, collected
):
    """A crash after the first rename leaves one shard in the uncommitted folder. The next run
    finds it in place; if garbage collection removed the folder in between (it is unlocked and
    uncommitted), that chunk's rows are gone and it is labelled again, not trusted from its marker."""
    import pipeline.ingest as ingest_module
    from flows.ingest import ingest_movie
    from pipeline.errors import DepthmineError
    from pipeline.shards import garbage_collect, verify

    movie = sample_movie(layout="sbs-half", seconds=5.0, size=(160, 96), seed=41)
    args = dict(movie=str(movie.path), movie_id="renamed", labelling=LABELS, runner=RunnerSpec(workers=1))
    real_place, placed = ingest_module._place, []

    def place_once(staged, shard):  # the first rename happens, then the process "dies"
        if placed:
            raise DepthmineError("simulated crash between two renames")
        real_place(staged, shard)
        placed.append(Path(shard).name)

    monkeypatch.setattr(ingest_module, "_place", place_once)
    state = ingest_movie(out=str(tmp_path / "crashed"), return_state=True, **args)
    assert state.is_failed() and placed == ["part-00000.parquet"]
    folder = next((tmp_path / "crashed" / "movies" / "renamed").iterdir())
    assert (folder / "part-00000.parquet").exists() and not (folder / "movie.json").exists()
    if collected:
        garbage_collect(tmp_path / "crashed")
        assert not folder.exists()

    monkeypatch.setattr(ingest_module, "_place", real_place)
    resumed = ingest_movie(out=str(tmp_path / "crashed"), **args)
    clean = ingest_movie(out=str(tmp_path / "clean"), **args)
    assert resumed["chunks"] == clean["chunks"] and clean["chunks_resumed"] == 0
    assert resumed["chunks_resumed"] == resumed["chunks"] - (1 if collected else 0)
    assert verify(str(tmp_path / "crashed")) == []
    assert _shards(tmp_path / "crashed") == _shards(tmp_path / "clean")
    assert len(_shards(tmp_path / "clean")["renamed"]) >= 2


def test_movies_in_flight_follow_the_scheduler_not_the_flow_host():
    """A remote cluster's task slots are its workers' threads, asked of its scheduler."""
    from distributed import LocalCluster

    from flows.build import runner_slots
    from flows.runners import RunnerSpec, default_workers, make_task_runner

    threads = default_workers() + 1  # more than the flow host would guess from its own cores
    with LocalCluster(n_workers=1, threads_per_worker=threads, processes=False, dashboard_address=None) as cluster:
        spec = RunnerSpec("dask", dask_address=cluster.scheduler_address)
        with make_task_runner(spec) as runner:
            assert runner_slots(runner, spec) == threads != spec.n_workers
