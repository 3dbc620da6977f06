"""Shard store throughput at the paper's frame size (940x400): write, read, bytes per sample.

Baselines measured in the same run on the same frames:
  * write: bare ``cv2.imencode`` of the same images as JPEG (the unavoidable part of writing);
  * read: bare ``cv2.imdecode`` of the same JPEG bytes (the unavoidable part of reading).
The ratios say how much the shard format (disparity PNG, masks, Parquet, checksums) costs on
top. Reading is then compared with what a training step consumes: it must never be what a GPU
waits for.

Run: ``python bench/bench_shards.py [--frames 96] [--unique 12]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from bench.timing import best_of as timed
from pipeline.shards import MovieShardWriter, ShardConfig, encode_records, iter_samples, list_shards, publish
from pipeline.shards.codec import decode_image, encode_image
from pipeline.shards.synthetic import make_frame_record

SIZE = (940, 400)
# A MiDaS-style step on one H100 (ResNeXt-101/ViT-L encoder, 384 px crops, batch 16, mixed
# precision) takes roughly 0.15-0.3 s: about 50-110 samples/s per GPU. We take the high end.
GPU_SAMPLES_PER_S = 110.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96, help="rows written and read (default 96)")
    ap.add_argument("--unique", type=int, default=12, help="distinct rendered frames, cycled (default 12)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)

    t = time.perf_counter()
    unique = [make_frame_record("bench", i, size=SIZE, seed=5) for i in range(args.unique)]
    records = [{**unique[i % len(unique)], "frame_index": i} for i in range(args.frames)]
    n = len(records)
    print(
        f"{n} frames at {SIZE[0]}x{SIZE[1]} ({len(unique)} distinct, rendered in {time.perf_counter() - t:.1f} s); 1 thread"
    )

    config = ShardConfig()
    # -- write -----------------------------------------------------------------------------
    t_bare_enc = timed(lambda: [encode_image(r["image"], "jpeg", config.jpeg_quality) for r in records], 2)
    t_encode = timed(lambda: encode_records(records, config), 2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:

        def write():
            shutil.rmtree(tmp / "ds", ignore_errors=True)
            with MovieShardWriter(tmp / "ds", "bench", "k", config) as w:
                for r in records:
                    w.write(r)
            publish(tmp / "ds")

        t_write = timed(write, 2)
        shards = list_shards(tmp / "ds")
        nbytes = sum(s.bytes for s in shards)
        cols: dict[str, int] = {}
        for s in shards:
            md = pq.ParquetFile(s.path).metadata
            for g in range(md.num_row_groups):
                for c in range(md.num_columns):
                    cc = md.row_group(g).column(c)
                    cols[cc.path_in_schema] = cols.get(cc.path_in_schema, 0) + cc.total_compressed_size
        print("\nwrite                                samples/s   ratio to bare JPEG encode")
        print(f"  bare cv2 JPEG encode (baseline)   {n / t_bare_enc:9.1f}   1.00")
        print(f"  encode_records (all columns)      {n / t_encode:9.1f}   {t_bare_enc / t_encode:.2f}")
        print(f"  MovieShardWriter + publish        {n / t_write:9.1f}   {t_bare_enc / t_write:.2f}")
        print(f"\nbytes per sample: {nbytes / n / 1e3:.1f} kB  ({len(shards)} shard(s), {nbytes / 1e6:.1f} MB)")
        for c, b in sorted(cols.items(), key=lambda kv: -kv[1])[:6]:
            print(f"  {c:<18} {b / n / 1e3:8.1f} kB")

        # -- read ----------------------------------------------------------------------------
        jpegs = [encode_image(r["image"], "jpeg", config.jpeg_quality) for r in records]
        t_bare_dec = timed(lambda: [decode_image(b) for b in jpegs], 3)
        t_train = timed(lambda: sum(1 for _ in iter_samples(tmp / "ds", columns=["image", "disparity", "valid"])), 3)
        t_nopf = timed(
            lambda: sum(1 for _ in iter_samples(tmp / "ds", columns=["image", "disparity", "valid"], prefetch=False)), 3
        )
        t_all = timed(lambda: sum(1 for _ in iter_samples(tmp / "ds")), 3)
        t_meta = timed(lambda: sum(1 for _ in iter_samples(tmp / "ds", columns=["disparity_p50"])), 2)
        print("\nread (one consumer thread)           samples/s   ratio to bare JPEG decode")
        print(f"  bare cv2 JPEG decode (baseline)   {n / t_bare_dec:9.1f}   1.00")
        print(f"  iter_samples image+disparity+valid{n / t_train:9.1f}   {t_bare_dec / t_train:.2f}")
        print(f"    same, prefetch=False            {n / t_nopf:9.1f}   {t_bare_dec / t_nopf:.2f}")
        print(f"  iter_samples all columns          {n / t_all:9.1f}   {t_bare_dec / t_all:.2f}")
        print(f"  iter_samples scalar column only   {n / t_meta:9.1f}")
        need = GPU_SAMPLES_PER_S / (n / t_train)
        print(
            f"\ntraining needs ~{GPU_SAMPLES_PER_S:.0f} samples/s per GPU (assumed, H100): "
            f"{need:.2f} loader core(s) per GPU for reading+decoding at this size"
        )

        # -- disparity codecs on flow-like labels ---------------------------------------------
        # Rendered disparity is piecewise planar and compresses unrealistically well; optical
        # flow gives sub-pixel noise. Add 0.05 px of it (and LR-check-like uncertainty) to compare
        # the codecs on what real labels cost.
        rng = np.random.default_rng(0)
        noisy = []
        for r in unique:
            d = r["disparity"] + rng.normal(0, 0.05, r["disparity"].shape).astype(np.float32)
            u = np.abs(rng.normal(0, 0.07, d.shape)).astype(np.float32)
            u[rng.random(d.shape) < 0.05] *= 40
            noisy.append({**r, "disparity": d, "uncertainty": u})
        m = len(noisy)
        print("\nflow-like labels (+0.05 px noise)   disparity kB/sample   disparity decode samples/s")
        for codec in ("u16d", "u16", "png16"):
            cfg = ShardConfig(disparity_codec=codec)
            folder = tmp / f"ds-{codec}"
            with MovieShardWriter(folder, "bench", "k", cfg) as w:
                w.write_table(encode_records(noisy, cfg))
            publish(folder)
            path = list_shards(folder)[0].path
            md = pq.ParquetFile(path).metadata
            size = {}
            for g in range(md.num_row_groups):
                for c in range(md.num_columns):
                    cc = md.row_group(g).column(c)
                    size[cc.path_in_schema] = size.get(cc.path_in_schema, 0) + cc.total_compressed_size
            t_d = timed(lambda path=path: sum(1 for _ in iter_samples(path, columns=["disparity"])), 3)
            print(f"  {codec:<6} {size['disparity'] / m / 1e3:31.1f}   {m / t_d:22.1f}")
        print(f"  uncertainty (1/32 px codes)       {size['uncertainty'] / m / 1e3:6.1f} kB/sample")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
