"""End-to-end ingest of a sample movie against its bound, and the speed-up from 1 to 2 workers.

The bound, measured in the same run on the same movie:

    bound = one bare ffmpeg decode pass of the whole movie
          + the disparity stage's single-threaded time on the sampled frames / cores

An ideal ingest overlaps the labelling with the decode and spreads it over every core; whatever
else it spends (Prefect task orchestration, RGB conversion and crop of sampled frames, shot
detection, shard encoding, the manifest) shows as a ratio below 1. Target: >= 0.7.

    python bench/bench_ingest.py [--size 640x360] [--seconds 24] [--flow dis-medium] [--repeat 2]

Every movie frame of every shot window is sampled (no chapter dropped) and chunks hold 4 frames,
so the labelling dominates and both workers have work. Each figure is the best of ``--repeat``
runs: the machine may be shared, and the minimum is the least disturbed measurement. With one
worker the ingest lets OpenCV use every core inside each task; with N workers each task gets one
OpenCV thread (see ``ChunkJob.cv_threads``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bare_decode_seconds(movie: Path) -> float:
    from pipeline.synthetic import ffmpeg_exe

    t0 = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(movie), "-f", "null", "-"], check=True)
    return time.perf_counter() - t0


def disparity_seconds(movie: Path, config) -> tuple[float, int]:
    """Single-threaded labelling time of the sampled frames (decoded beforehand, not timed)."""
    import cv2

    from pipeline.disparity import Labeller
    from pipeline.video import open_stereo, scan_movie

    frames = list(scan_movie(open_stereo(movie), config.shots, config.sampling, "train"))
    cv2.setNumThreads(1)
    labeller = Labeller(config.disparity)
    labeller.label_pairs([(frames[0].left, frames[0].right)])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(frames), config.chunk_frames):
        chunk = frames[i : i + config.chunk_frames]
        labeller.label_pairs([(f.left, f.right) for f in chunk])
    seconds = time.perf_counter() - t0
    cv2.setNumThreads(-1)
    return seconds, len(frames)


OVERRIDES = ["chunk_frames=4", "sampling.drop_first_chapters=0", "sampling.drop_last_chapters=0"]


def ingest_seconds(movie: Path, out: Path, flow: str, workers: int) -> tuple[float, dict]:
    import shutil

    from flows.ingest import ingest_movie
    from flows.runners import RunnerSpec
    from pipeline.ingest import LabelSettings

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = ingest_movie(
        movie=str(movie),
        out=str(out),
        movie_id="bench",
        labelling=LabelSettings(flow, overrides=OVERRIDES),
        runner=RunnerSpec(workers=workers),
    )
    return time.perf_counter() - t0, result


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # set when run, never at import
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x360", help="per-eye size (default 640x360)")
    ap.add_argument("--seconds", type=float, default=24.0, help="movie length (default 24)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the best counts (default 2)")
    ap.add_argument("--flow", default="dis-medium", help="flow backend (default dis-medium)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cores = os.cpu_count() or 1

    from prefect import flow as prefect_flow

    from pipeline.ingest import ingest_config
    from pipeline.synthetic import make_sample_movie

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        movie = make_sample_movie(tmp / "movie.mkv", layout="sbs-half", seconds=args.seconds, size=(w, h), seed=7).path
        config = ingest_config(OVERRIDES, flow=args.flow)

        @prefect_flow
        def warm_up() -> None:  # start the temporary Prefect server outside the timings
            return None

        warm_up()
        t0 = time.perf_counter()
        warm_up()
        empty_flow = time.perf_counter() - t0  # Prefect's fixed cost of one flow run
        decode = label = t1 = t2 = float("inf")
        for _ in range(max(1, args.repeat)):  # interleaved, so a busy spell hits every figure alike
            decode = min(decode, bare_decode_seconds(movie))
            lab, n_frames = disparity_seconds(movie, config)
            label = min(label, lab)
            a, r1 = ingest_seconds(movie, tmp / "ds1", args.flow, workers=1)
            b, r2 = ingest_seconds(movie, tmp / "ds2", args.flow, workers=cores)
            t1, t2 = min(t1, a), min(t2, b)
            assert r1["kept"] == r2["kept"], "1 and N workers must make the same dataset"
        bound = decode + label / cores

    print(
        f"movie: sbs-half {w}x{h} per eye, {args.seconds:g} s; {n_frames} sampled frames; flow {args.flow}; {cores} cores"
    )
    print(f"  bare ffmpeg decode pass          {decode:7.2f} s")
    print(f"  disparity, 1 thread, all frames  {label:7.2f} s   ({label / max(n_frames, 1) * 1000:.0f} ms/frame)")
    print(f"  bound = decode + disparity/{cores}     {bound:7.2f} s")
    print(f"  ingest_movie, 1 worker           {t1:7.2f} s")
    print(f"  ingest_movie, {cores} workers          {t2:7.2f} s")
    print(f"  (labelling inside the {cores}-worker ingest: {r2['label_seconds']:.2f} s of task time)")
    print(f"  an empty Prefect flow run        {empty_flow:7.2f} s   (fixed cost of any flow run)")
    print(f"ratio bound / ingest ({cores} workers): {bound / t2:.2f}   (target >= 0.70)")
    print(f"  without the fixed flow-run cost: {bound / (t2 - empty_flow):.2f}")
    print(f"speed-up 1 -> {cores} workers:          {t1 / t2:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
