"""Scale-out: what the flow host sends per labelled frame, task runs per movie, frames/s on 1 and 2 workers.

Movies are the unit of distribution (``pipeline.movie_job``): ``build_dataset`` sends each Dask
worker a ``MovieJob`` (paths, configuration) and the worker decodes its movie itself. This bench
builds a catalog of sample movies on a ``LocalCluster`` of N worker processes (one thread each)
and prints, for N = 1 and 2:

* bytes sent from the flow host per labelled frame: every task spec the scheduler received,
  pickled as for the wire (:class:`TaskBytes`, a scheduler plugin), over the frames labelled;
  the baseline is the old design, where each sampled frame's pixels went to a chunk task: one
  decoded pair pickled, measured in the same run on the same movie (ratio = new / old);
* Prefect task runs per movie (read back from the API after the run) and in all;
* throughput, frames labelled per second of the build, and the speed-up from 1 to 2 workers.

    python -m bench.bench_scale [--movies 3] [--size 480x270] [--seconds 8] [--flow dis-fast]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import tempfile
import time
from pathlib import Path

import cloudpickle
from distributed.diagnostics.plugin import SchedulerPlugin

OVERRIDES = [
    "chunk_frames=4",
    "sampling.train_fps=12",
    "sampling.drop_first_chapters=0",
    "sampling.drop_last_chapters=0",
]


class TaskBytes(SchedulerPlugin):
    """Size of every task spec a client sends to the scheduler (pickled, as it travels), by key."""

    name = "depthmine-task-bytes"

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def update_graph(self, scheduler, *, client, keys, tasks, annotations, priority, stimulus_id, **kwargs) -> None:
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.run_spec is not None:
                self.sizes[str(key)] = len(cloudpickle.dumps(ts.run_spec))


def frame_bytes(movie: Path) -> int:
    """The old design's bytes per frame: one sampled pair (left, right, ids) pickled for a chunk task."""
    from pipeline.video import open_stereo, scan_movie

    frame = next(iter(scan_movie(open_stereo(movie), split="train")))
    return len(pickle.dumps(frame, protocol=5))


def task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return asyncio.run(read())


def build(catalog: Path, out: Path, workers: int, flow: str) -> dict:
    from distributed import LocalCluster

    from flows.build import build_dataset
    from flows.runners import RunnerSpec
    from pipeline.ingest import LabelSettings

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        meter = TaskBytes()
        cluster.scheduler.add_plugin(meter)
        t0 = time.perf_counter()
        state = build_dataset(
            catalog=str(catalog),
            out=str(out),
            labelling=LabelSettings(flow, overrides=OVERRIDES),
            runner=RunnerSpec("dask", dask_address=cluster.scheduler_address),
            return_state=True,
        )
        seconds = time.perf_counter() - t0
    summary = state.result()
    runs = task_runs(state.state_details.flow_run_id)
    frames = sum(m["kept"] + sum(m["rejected"].values()) for m in summary["movies"])
    return {
        "seconds": seconds,
        "frames": frames,
        "sent": sum(meter.sizes.values()),
        "tasks_sent": len(meter.sizes),
        "runs": len(runs),
        "movie_runs": sum(r.name.startswith("movie-") for r in runs),
        "movies": len(summary["movies"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=3, help="sample movies in the catalog (default 3)")
    parser.add_argument("--size", default="480x270", help="per-eye size of the sample movies (default 480x270)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each sample movie (default 8)")
    parser.add_argument("--flow", default="dis-fast", help="flow backend (default dis-fast)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # a Prefect API of its own (as the CLI starts one), in a scratch home; slow machines get time
        os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        from flows.runners import start_temporary_server
        from pipeline.synthetic import make_sample_movie

        start_temporary_server()
        movies = [
            make_sample_movie(tmp / f"m{i}.mkv", layout="sbs-half", seconds=args.seconds, size=(w, h), seed=60 + i)
            for i in range(args.movies)
        ]
        catalog = tmp / "catalog.yaml"
        catalog.write_text(
            "movies:\n"
            + "".join(f"  - {{path: {m.path}, movie_id: m{i}, split: train}}\n" for i, m in enumerate(movies))
        )
        old_per_frame = frame_bytes(movies[0].path)
        print(f"{args.movies} movies of {args.seconds:g} s, {w}x{h} per eye, flow {args.flow}, {os.cpu_count()} cores")
        results = {}
        for workers in (1, 2):
            r = results[workers] = build(catalog, tmp / f"ds{workers}", workers, args.flow)
            per_frame = r["sent"] / max(r["frames"], 1)
            print(
                f"workers={workers}: {r['frames']} frames in {r['seconds']:.1f} s = {r['frames'] / r['seconds']:.2f} "
                f"frames/s; sent {r['sent']} B in {r['tasks_sent']} task specs = {per_frame:.0f} B/frame "
                f"(old design: {old_per_frame} B/frame, ratio {per_frame / old_per_frame:.4f}); "
                f"task runs: {r['movie_runs'] / r['movies']:.0f} per movie, {r['runs']} in all"
            )
        speedup = results[1]["seconds"] / results[2]["seconds"]
        print(f"speed-up 1 -> 2 workers: {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
