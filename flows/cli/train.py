"""``depthmine train``: train the depth model from a YAML configuration (one or several processes)."""

from __future__ import annotations

import argparse
import os
import signal
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
            "full state every N steps. The configuration is a YAML file (configs/train_demo.yaml: synthetic "
            "frames, no data needed; configs/train_demo_dataset.yaml: the shards the demo built in "
            "demo_out/dataset; "
            "configs/train_midas.yaml) with KEY=VALUE overrides. --nproc N runs N processes with "
            "torchrun (DDP: gloo on the CPU, nccl on GPUs); the same as "
            "'torchrun --standalone --nproc_per_node=N -m training.train --config FILE'. Everything is "
            "checked before anything starts (values, datasets, shard counts, batch size per process, "
            "that no other live run uses the run folder): a mistake is one line and exit 2. "
            "Stopping this command (Ctrl-C, SIGTERM, even SIGKILL) stops torchrun and its workers."
        ),
        epilog="example: depthmine train --config configs/train_demo.yaml --set max_steps=200 --set data.batch_size=4",
    )
    from training.cli_options import add_train_options

    add_train_options(p, config_required=True)
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
    from training.preflight import preflight
    from training.train import config_from_args, run_training

    if args.nproc < 1:
        raise ConfigError("--nproc must be at least 1")
    args.extra = []
    # every check before anything starts: configuration, data, shard counts, divisibility, lock
    checked = preflight(config_from_args(args), args.nproc)
    for notice in checked.notices:
        print(f"depthmine train: note: {notice}", file=sys.stderr)
    if args.nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.nproc}",
            "-m",
            "training.train",
            *_forwarded(args),
        ]
        return run_torchrun(cmd)
    result = run_training(checked.config, announce=False)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    print(f"trained {result.steps} steps; final loss {loss}; checkpoint {result.checkpoint}")
    if result.val_error is not None:
        print(f"validation aligned disparity RMSE: {result.val_error_start:.4f} -> {result.val_error:.4f}")
    return 0


_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_torchrun(cmd: list[str]) -> int:
    """Run torchrun as a child that lives and dies with this process.

    SIGTERM, SIGINT and SIGHUP are forwarded to torchrun (which stops its workers) and this
    process waits for it to end. Against SIGKILL, which cannot be caught, torchrun is started
    with ``PR_SET_PDEATHSIG`` = SIGTERM (Linux): the kernel signals it when this process dies, and
    its workers carry their own death signal (:func:`training.train.die_with_parent`). Returns
    torchrun's exit status (128 + N when a signal N ended it).
    """
    from training.train import LAUNCHED_ENV

    parent = os.getpid()
    libc = None
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it

    def tie_to_parent() -> None:  # runs in the child between fork and exec
        if libc is not None:
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the launcher died before the line above
            os._exit(143)

    env = {**os.environ, LAUNCHED_ENV: "1"}
    proc = subprocess.Popen(cmd, env=env, preexec_fn=tie_to_parent)
    previous = {}

    def forward(signum, _frame) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in _FORWARDED_SIGNALS:
        previous[sig] = signal.signal(sig, forward)
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # SIGINT with the default handler elsewhere: keep waiting
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
