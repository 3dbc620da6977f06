"""One-pass stereo reader vs. FFmpeg decoding to nothing, on the same 2-minute 1920x540 SBS movie.

Baselines, measured in the same run on the same file (interleaved repeats, best of each): ``ffmpeg -i MOVIE -f null -`` (FFmpeg's own
decoder with its default threads, frames thrown away: the speed of the decoder), and PyAV decoding
every frame and nothing else (the reader's decoder: the ceiling of this design). Measured: the
whole one-pass reader as the ingest calls it, ``open_stereo`` (probe, layout, letterbox seeks) plus
iterating ``scan_movie`` (shot detection on every frame, the sampled frames converted to
full-resolution RGB eyes and cropped). Target: reader fps >= 0.8 x ffmpeg fps.

The movie (cached in bench/out/) is the synthetic generator's 20 s at 960x540 per eye, sbs-full,
looped six times (re-encoded: clean timestamps) into 2 minutes at 24 fps: 2880 frames, 1920x540.

Wall-clock fps on a shared machine depends on what else runs; the CPU seconds (user + system,
all threads) of each side are printed too: their ratio does not depend on the load.

Run: ``python bench/bench_decode.py [--repeats 2] [--split train]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from pipeline.probe import probe
from pipeline.sampling import SamplingConfig
from pipeline.synthetic import ffmpeg_exe, make_sample_movie
from pipeline.video import open_stereo, scan_movie

OUT = Path(__file__).resolve().parent / "out"


def bench_movie() -> Path:
    """The 2-minute 1920x540 SBS H.264 movie, made once."""
    movie = OUT / "decode_1920x540_sbs_120s.mkv"
    if movie.exists():
        return movie
    OUT.mkdir(parents=True, exist_ok=True)
    short = OUT / "decode_1920x540_sbs_20s.mkv"
    print(f"making {movie.name} (once; cached in {OUT}) ...", flush=True)
    # no stereo tag on the short movie: re-encoding would copy it into an H.264 frame-packing SEI,
    # and FFmpeg 8's CLI then fails on the duplicated stereo3d side data (PyAV decodes it fine)
    make_sample_movie(
        short,
        layout="sbs-full",
        seconds=20.0,
        size=(960, 540),
        seed=11,
        chapters=1,
        shots=8,
        crf=20,
        preset="veryfast",
        progress=True,
        stereo_metadata=False,
    )
    tmp = movie.with_suffix(".tmp.mkv")
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "5",
            "-i",
            str(short),
            "-map",
            "0:v",
            "-map_chapters",
            "-1",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "48",
            "-metadata:s:v:0",
            "stereo_mode=left_right",
            str(tmp),
        ],
        check=True,
    )
    tmp.rename(movie)
    return movie


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (all threads)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_ffmpeg_null(movie: Path) -> tuple[float, int, float]:
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(movie), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    dt = time.perf_counter() - t0
    cpu = _cpu_seconds() - c0
    frames = 0
    for line in proc.stderr.splitlines():  # last "frame=  2880 fps=..." line
        if "frame=" in line:
            try:
                frames = int(line.split("frame=")[1].split()[0])
            except (ValueError, IndexError):
                pass
    return dt, frames, cpu


def time_pyav_decode(movie: Path) -> tuple[float, int, float]:
    """Second reference: PyAV decoding every frame with the reader's threading, doing nothing else."""
    import av

    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    with av.open(str(movie)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = sum(1 for _ in container.decode(stream))
    return time.perf_counter() - t0, frames, _cpu_seconds() - c0


def time_reader(movie: Path, split: str) -> tuple[float, int, int, int, float]:
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    src = open_stereo(movie)
    # no chapter dropping: the bench movie has one chapter; every shot is sampled
    scan = scan_movie(src, sampling=SamplingConfig(drop_first_chapters=0, drop_last_chapters=0), split=split)
    pixels = 0
    for f in scan:
        pixels += f.left.size + f.right.size
    dt = time.perf_counter() - t0
    return dt, scan.frame_count, len(scan.samples), len(scan.shots), _cpu_seconds() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each (best is reported)")
    ap.add_argument("--split", default="train", choices=("train", "val", "test"))
    args = ap.parse_args(argv)
    movie = bench_movie()
    info = probe(movie)
    print(f"movie: {movie} ({info.width}x{info.height}, {info.fps:g} fps, ~{info.frame_count} frames)")
    ff, rd, pa = [], [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits all alike
        ff.append(time_ffmpeg_null(movie))
        rd.append(time_reader(movie, args.split))
        pa.append(time_pyav_decode(movie))
    ff_dt, ff_frames, _ = min(ff)
    rd_dt, rd_frames, n_samples, n_shots, _ = min(rd)
    ff_cpu, rd_cpu = min(r[2] for r in ff), min(r[4] for r in rd)
    ff_fps, rd_fps = ff_frames / ff_dt, rd_frames / rd_dt
    print(f"ffmpeg -f null     : {ff_frames} frames in {ff_dt:6.2f} s = {ff_fps:7.1f} fps  (CPU {ff_cpu:.2f} s)")
    print(
        f"one-pass reader    : {rd_frames} frames in {rd_dt:6.2f} s = {rd_fps:7.1f} fps  (CPU {rd_cpu:.2f} s; "
        f"{n_shots} shots, {n_samples} sampled frames as full-res eyes, split={args.split})"
    )
    pa_dt, pa_frames, _ = min(pa)
    pa_cpu = min(r[2] for r in pa)
    print(
        f"PyAV decode only   : {pa_frames} frames in {pa_dt:6.2f} s = {pa_frames / pa_dt:7.1f} fps  (CPU {pa_cpu:.2f} s; "
        f"the decoder the reader runs, with nothing else)"
    )
    ratio = rd_fps / ff_fps
    cpu_ratio = ff_cpu / rd_cpu
    print(
        f"ratio reader/ffmpeg: {ratio:.2f} wall-clock fps (target >= 0.80) {'OK' if ratio >= 0.8 else 'BELOW TARGET'}; "
        f"{cpu_ratio:.2f} by CPU time (load-independent)"
    )
    print(f"reader / PyAV decode only: {rd_fps / (pa_frames / pa_dt):.2f} wall-clock (the reader's own overhead)")
    print(
        json.dumps(
            {
                "bench": "decode",
                "ffmpeg_fps": round(ff_fps, 1),
                "reader_fps": round(rd_fps, 1),
                "pyav_decode_fps": round(pa_frames / pa_dt, 1),
                "ratio": round(ratio, 3),
                "cpu_ratio": round(cpu_ratio, 3),
                "frames": rd_frames,
                "samples": n_samples,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
