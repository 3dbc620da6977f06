"""Checkpoint load cost of the weights checksum (issue #14).

Run: ``python bench/bench_checkpoint.py [--encoder resnet50] [--features 256]``. Random weights.
Saves one training-style checkpoint (model only) and times, best of 3 each:

1. ``torch.load(weights_only=True)`` alone (baseline: what loading cost before the checksum);
2. :func:`training.checkpoint.load_checkpoint`, which also recomputes the SHA-256 of the weights;
3. :func:`training.checkpoint.weights_sha256` alone (also paid once per save).

Prints the checkpoint size and each time with its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from bench.timing import best_of


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="resnet50")
    ap.add_argument("--features", type=int, default=256)
    args = ap.parse_args()

    import logging

    logging.getLogger("training.model").setLevel(logging.ERROR)
    from training.checkpoint import load_checkpoint, save_checkpoint, weights_sha256
    from training.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=args.encoder, features=args.features))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "ck.pt", model, rng=False)
        size_mb = path.stat().st_size / 1e6
        torch.load(path, weights_only=True)  # warm the page cache
        t_plain = best_of(lambda: torch.load(path, weights_only=True))
        t_checked = best_of(lambda: load_checkpoint(path))
        state = torch.load(path, weights_only=True)["model"]
        t_hash = best_of(lambda: weights_sha256(state))
    print(
        f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; {args.encoder}, "
        f"features {args.features}: checkpoint {size_mb:.0f} MB"
    )
    print(f"torch.load weights_only (baseline)  : {t_plain:6.3f} s")
    print(f"load_checkpoint with SHA-256 check  : {t_checked:6.3f} s  ratio {t_checked / t_plain:.2f}x")
    print(f"weights_sha256 alone                : {t_hash:6.3f} s  ({size_mb / t_hash:.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
