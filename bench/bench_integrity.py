"""What the reader's integrity checks cost: reading with and without them, same shards, same run.

The reader checks every Parquet page against its CRC-32 and each shard against the manifest
(footer digest, row counts, movie id) before it yields a row. Baseline: the same
``iter_samples`` with ``verify=False`` (the reader before the checks existed) over the same
files, so the ratio is the price of never returning a silently changed value. The two are timed
in turns (best of ``--repeat`` each; wall and process CPU time), so a shared machine's changing
load falls on both alike. Also timed:
``verify --quick`` (footer digest and every page's CRC) against the full SHA-256 ``verify``.

Run: ``python bench/bench_integrity.py [--frames 96] [--unique 12]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

from bench.timing import best_of as timed
from pipeline.shards import MovieShardWriter, ShardConfig, iter_samples, publish
from pipeline.shards.synthetic import make_frame_record
from pipeline.shards.verify import verify

SIZE = (940, 400)
TRAIN_COLUMNS = ["image", "disparity", "valid"]


def _alternating(base, checked, repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Best (wall, CPU) seconds of each, measured in turns so load changes hit both alike."""
    best = [[float("inf")] * 2 for _ in range(2)]
    for _ in range(repeat):
        for i, fn in enumerate((base, checked)):
            w, c = time.perf_counter(), time.process_time()
            fn()
            best[i][0] = min(best[i][0], time.perf_counter() - w)
            best[i][1] = min(best[i][1], time.process_time() - c)
    return (best[0][0], best[0][1]), (best[1][0], best[1][1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96, help="rows written and read (default 96)")
    ap.add_argument("--unique", type=int, default=12, help="distinct rendered frames, cycled (default 12)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per measurement, best kept (default 5)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    t = time.perf_counter()
    unique = [make_frame_record("bench", i, size=SIZE, seed=5) for i in range(args.unique)]
    records = [{**unique[i % len(unique)], "frame_index": i} for i in range(args.frames)]
    n = len(records)
    print(
        f"{n} frames at {SIZE[0]}x{SIZE[1]} ({len(unique)} distinct, rendered in {time.perf_counter() - t:.1f} s); 1 thread"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    try:
        ds = tmp / "ds"
        with MovieShardWriter(ds, "bench", "k", ShardConfig(target_shard_bytes=4 << 20)) as w:
            for r in records:
                w.write(r)
        publish(ds)
        r = args.repeat
        rows = {}
        for label, cols in (
            ("image+disparity+valid", TRAIN_COLUMNS),
            ("all columns", None),
            ("scalar column only", ["disparity_p50"]),
        ):
            rows[label] = _alternating(
                lambda cols=cols: sum(1 for _ in iter_samples(ds, columns=cols, verify=False, prefetch=False)),
                lambda cols=cols: sum(1 for _ in iter_samples(ds, columns=cols, prefetch=False)),
                r,
            )
        print("\nread (one thread, no prefetch)  unchecked samples/s   checked samples/s   ratio wall   ratio CPU")
        for label, ((bw, bc), (cw, cc)) in rows.items():
            print(f"  {label:<28} {n / bw:12.1f} {n / cw:19.1f} {cw / bw:12.3f} {cc / bc:10.3f}")
        t_full = timed(lambda: verify(str(ds), checksum=True, sample_rows=2), r)
        t_quick = timed(lambda: verify(str(ds), checksum=False, sample_rows=2), r)
        print(f"\nverify (SHA-256 of every file)  {t_full * 1e3:8.1f} ms   1.00")
        print(f"verify --quick (CRC of pages)   {t_quick * 1e3:8.1f} ms   {t_quick / t_full:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
