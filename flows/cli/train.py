"""``depthmine train``: train the depth model from a YAML configuration (one or several processes)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from pipeline.errors import ConfigError

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the MiDaS-style depth model on shards",
        description=(
            "Train the MiDaS-style depth model: encoder and decoder, scale-and-shift-invariant loss "
            "with gradient matching, naive or Pareto mixing of several datasets, checkpoints with the "
            "full state every N steps. The configuration is a YAML file (configs/train_demo.yaml, "
            "configs/train_midas.yaml) with KEY=VALUE overrides. --nproc N runs N processes with "
            "torchrun (DDP: gloo on the CPU, nccl on GPUs); the same as "
            "'torchrun --standalone --nproc_per_node=N -m training.train --config FILE'."
        ),
        epilog="example: depthmine train --config configs/train_demo.yaml --set max_steps=200 --set data.batch_size=4",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="YAML training configuration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value, e.g. --set optim.lr_new=3e-4 (repeatable)")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint, or 'auto' (OUT/checkpoints/last.pt)")
    p.add_argument("--out", metavar="DIR", help="run folder (overrides out_dir)")
    p.add_argument("--nproc", type=int, default=1, metavar="N", help="processes on this machine (default 1)")
    p.set_defaults(func=run)


def _forwarded(args: argparse.Namespace) -> list[str]:
    argv = ["--config", args.config]
    for item in args.overrides:
        argv += ["--set", item]
    if args.resume:
        argv += ["--resume", args.resume]
    if args.out:
        argv += ["--out", args.out]
    return argv


def run(args: argparse.Namespace) -> int:
    from training.train import config_from_args, run_training

    if args.nproc < 1:
        raise ConfigError("--nproc must be at least 1")
    args.extra = []
    cfg = config_from_args(args)  # fail fast on a bad configuration, before spawning anything
    if args.nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "training.train", *_forwarded(args)]
        return subprocess.call(cmd)
    result = run_training(cfg)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    print(f"trained {result.steps} steps; final loss {loss}; checkpoint {result.checkpoint}")
    if result.val_error is not None:
        print(f"validation aligned disparity RMSE: {result.val_error_start:.4f} -> {result.val_error:.4f}")
    return 0
