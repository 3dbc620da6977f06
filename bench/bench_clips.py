"""Clip ingest cost per frame against frame mode (issue #16).

One sample movie is ingested three times through the library path the flow runs (one decode pass,
chunks labelled and staged, the shard folder committed), in one process:

* ``frames``: the default sampling (the baseline),
* ``clips``: ``sampling.mode=clips`` (clips of 8 consecutive frames),
* ``clips+flow``: the same with ``store_temporal_flow=true``.

It prints seconds per stored frame of each and the ratios to frame mode measured in the same run.
Clips store many more frames of a movie (every frame of each clip instead of 4 per second), so the
ratio per frame is what says whether a clip frame costs more than a single frame to make.

    python -m bench.bench_clips [--size 640x360] [--seconds 12] [--flow dis-medium] [--repeat 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

MODES = {
    "frames": [],
    "clips": ["sampling.mode=clips"],
    "clips+flow": ["sampling.mode=clips", "store_temporal_flow=true"],
}
COMMON = ["sampling.drop_first_chapters=0", "sampling.drop_last_chapters=0"]


def ingest_seconds(movie: Path, overrides: list[str], flow: str, root: Path) -> tuple[float, int]:
    """Wall time of decode + label + stage + commit, and the rows stored."""
    from pipeline.ingest import ChunkJob, WorkDir, commit_movie, ingest_config, iter_chunks, label_chunk
    from pipeline.video import open_stereo, scan_movie

    cfg = ingest_config([*COMMON, *overrides], flow=flow)
    t0 = time.perf_counter()
    src = open_stereo(movie)
    scan = scan_movie(src, cfg.shots, cfg.sampling, "train")
    work = WorkDir(root / "work")
    job = ChunkJob(str(work.root), "bench", "train", cfg, src.crop, *src.eye_size, {})
    names = [label_chunk(c.frames, (c.shot_id, c.part), job).name for c in iter_chunks(scan, cfg.chunk_frames)]
    manifest = commit_movie(root / "ds", "bench", "k", work, names, cfg, {})
    return time.perf_counter() - t0, int(manifest.rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x360")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--flow", default="dis-medium")
    p.add_argument("--repeat", type=int, default=1, help="best of N runs per mode (a shared machine)")
    args = p.parse_args(argv)
    from pipeline.synthetic import make_sample_movie

    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        movie = make_sample_movie(Path(tmp) / "movie.mkv", seconds=args.seconds, size=(w, h), seed=4).path
        per_frame: dict[str, float] = {}
        for name, overrides in MODES.items():
            best = None
            for r in range(args.repeat):
                seconds, rows = ingest_seconds(movie, overrides, args.flow, Path(tmp) / f"{name}-{r}")
                best = (seconds, rows) if best is None or seconds < best[0] else best
            seconds, rows = best
            per_frame[name] = seconds / rows
            print(f"{name:<11} {rows:4d} frames  {seconds:7.1f} s  {1000 * seconds / rows:7.1f} ms/frame")
        for name in ("clips", "clips+flow"):
            print(f"ratio {name} / frames per frame: {per_frame[name] / per_frame['frames']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
