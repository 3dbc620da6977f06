"""The training command's options, defined once for both entry points.

``depthmine train`` (:mod:`flows.cli.train`) and the ``python -m training.train`` that torchrun starts in each
process parse the same options; this module holds them and imports nothing heavy, so building the CLI's
parser does not import torch.
"""

from __future__ import annotations

import argparse

__all__ = ["add_train_options"]


def add_train_options(p: argparse.ArgumentParser, *, config_required: bool) -> None:
    """The training options, defined once for both entry points: ``depthmine train`` and the
    ``python -m training.train`` that torchrun starts in each process (:func:`config_from_args`
    reads them)."""
    p.add_argument(
        "--config",
        required=config_required,
        metavar="FILE",
        help="YAML training configuration: a file, or a shipped name (train_demo, train_demo_dataset, train_midas)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a configuration value, e.g. --set optim.lr_new=3e-4 (repeatable)",
    )
    p.add_argument("--resume", metavar="CKPT", help="checkpoint to continue from, or 'auto' (OUT/checkpoints/last.pt)")
    p.add_argument("--out", metavar="DIR", help="run folder (overrides out_dir)")
