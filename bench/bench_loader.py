"""Training loader throughput vs what a training step consumes, and its scaling with workers.

The loader is the whole input path of the trainer: shard read (Parquet row groups), JPEG/PNG
decode, mask unpack, shuffle buffer, random crop + flip + resize to 384, [0, 1] target scaling,
ImageNet normalisation, collation. It is measured at the paper's stored frame size (940x400) with
``num_workers`` = 0, 1, 2 (this box has 2 cores).

Baselines measured in the same run:
  * a training step of the paper's small model (ResNet-50 encoder, 384x384, batch 2, fp32 on this
    CPU): forward, loss, backward, Adam step -> samples/s the trainer consumes here;
  * the loader with 0 workers (in the training process): the scaling reference.
The ratio loader/step says whether training waits for data here; the per-worker rate says how many
workers a GPU (about 110 samples/s for a MiDaS step on one H100 at 384 px, bf16) needs.

Run: ``python bench/bench_loader.py [--frames 48] [--batches 12] [--step-batch 2]``; on a machine with a
GPU, ``python bench/bench_loader.py --gpu`` records bf16 steps/s of both encoders at 384x384.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline.config import config_hash
from pipeline.shards import MovieShardWriter, ShardConfig, publish
from pipeline.shards.synthetic import make_frame_record
from training.datasets import ShardDataset, _collate
from training.losses import ScaleAndShiftInvariantLoss
from training.model import ModelConfig, build_model
from training.transforms import AugmentConfig

SIZE = (940, 400)
GPU_SAMPLES_PER_S = 110.0


def write_dataset(root: Path, frames: int, unique: int = 8) -> Path:
    base = [make_frame_record("bench", i, size=SIZE, seed=3) for i in range(unique)]
    # 4 movies so there are enough shards for 2 workers; ~6 rows per shard
    per_movie = frames // 4
    for m in range(4):
        movie = f"movie-{m}"
        key = config_hash({"source": f"bench:{movie}", "frames": per_movie})
        with MovieShardWriter(root, movie, key, ShardConfig(target_shard_bytes=2 << 20, row_group_rows=4)) as w:
            for i in range(per_movie):
                w.write({**base[(m * per_movie + i) % unique], "movie_id": movie, "frame_index": i})
    publish(root)
    return root


def loader_rate(root: Path, workers: int, batch: int, batches: int, crop: int) -> float:
    ds = ShardDataset(root, "train", augment=AugmentConfig(size=crop), seed=0, rank=0, world_size=1)
    prefetch = 2
    loader = DataLoader(
        ds, batch_size=batch, num_workers=workers, collate_fn=_collate, prefetch_factor=prefetch if workers else None
    )
    it = iter(loader)
    # worker start-up and the prefetched batches are not throughput: drain them first
    for _ in range(1 + prefetch * workers):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - t
    del it
    return batches * batch / dt


def step_rate(encoder: str, batch: int, crop: int, steps: int = 1, device: str = "cpu") -> float:
    """Samples/s of full training steps (bf16 autocast on CUDA, fp32 on the CPU)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=encoder, features=256)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = ScaleAndShiftInvariantLoss("trim")
    x = torch.randn(batch, 3, crop, crop, device=device)
    target = torch.rand(batch, crop, crop, device=device)
    mask = torch.ones(batch, crop, crop, dtype=torch.bool, device=device)
    cuda = device.startswith("cuda")

    def one():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            pred = model(x)
        loss = loss_fn(pred.float(), target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3 if cuda else 1):  # warm-up (cuDNN autotuning on GPUs)
        one()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def gpu_steps(batch: int, crop: int) -> None:
    """The issue's GPU record: steps/s with bf16 for both paper encoders at 384x384."""
    for encoder in ("resnet50", "resnext101_32x8d"):
        rate = step_rate(encoder, batch, crop, steps=20, device="cuda")
        print(
            f"GPU {torch.cuda.get_device_name()}: {encoder} {crop}x{crop} batch {batch} bf16: "
            f"{rate / batch:.2f} steps/s, {rate:.0f} samples/s"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=48, help="rows in the dataset (default 48)")
    ap.add_argument("--batches", type=int, default=12, help="batches timed per setting (default 12)")
    ap.add_argument("--batch", type=int, default=8, help="loader batch size (default 8, the paper's)")
    ap.add_argument("--crop", type=int, default=384, help="training crop (default 384)")
    ap.add_argument("--step-batch", type=int, default=2, help="batch of the timed training step (default 2)")
    ap.add_argument("--encoder", default="resnet50", help="encoder of the timed training step")
    ap.add_argument("--gpu", action="store_true", help="only time bf16 training steps of both encoders on CUDA")
    args = ap.parse_args(argv)
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here")
            return 2
        gpu_steps(8, args.crop)
        return 0
    # loader workers run torch single-threaded (the DataLoader sets it); do the same in-process so
    # that 0 workers is measured the same way and not slowed by idle OpenMP spinning
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        t = time.perf_counter()
        root = write_dataset(Path(tmp) / "ds", args.frames)
        print(
            f"dataset: {args.frames} frames at {SIZE[0]}x{SIZE[1]} in shards, written in {time.perf_counter() - t:.1f} s"
        )
        rates = {}
        for workers in (0, 1, 2):
            rates[workers] = loader_rate(root, workers, args.batch, args.batches, args.crop)
            print(
                f"loader, {workers} worker(s): {rates[workers]:7.1f} samples/s "
                f"(x{rates[workers] / rates[0]:.2f} vs 0 workers)"
            )
    torch.set_num_threads(2)
    step = step_rate(args.encoder, args.step_batch, args.crop)
    print(
        f"training step ({args.encoder}, {args.crop}x{args.crop}, batch {args.step_batch}, fp32, this CPU): "
        f"{step:.2f} samples/s"
    )
    best = max(rates.values())
    print(f"ratio loader/step here: {best / step:.1f}x (the loader is {'ahead' if best > step else 'BEHIND'})")
    per_worker = rates[1]
    print(
        f"one worker gives {per_worker:.0f} samples/s: a GPU at ~{GPU_SAMPLES_PER_S:.0f} samples/s needs "
        f"~{max(1, round(GPU_SAMPLES_PER_S / per_worker + 0.49))} worker core(s) per dataset stream"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
