"""The ``train_model`` flow: a training run under Prefect, a thin wrapper of the trainer.

Training itself is :func:`training.train.run_training` (one process here; ``torchrun -m
training.train`` for several GPUs); the flow adds what the platform gives: a run record with its
parameters, logs, and a markdown artifact with the result.
"""

from __future__ import annotations

from typing import Any

import prefect
from prefect import get_run_logger

from flows.artifacts import markdown_table, publish_markdown

__all__ = ["train_model"]


@prefect.flow(name="train-model", log_prints=False, persist_result=False)
def train_model(config: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train as the YAML ``config`` plus dotted ``overrides`` say (``training.config``).

    Returns:
        ``{"out_dir", "checkpoint", "steps", "final_loss", "val_error_start", "val_error"}``.
    """
    from training.config import load_train_config
    from training.train import run_training

    cfg = load_train_config(config, list(overrides or ()))
    logger = get_run_logger()
    logger.info("training %d steps into %s", cfg.max_steps, cfg.out_dir)
    result = run_training(cfg)
    out = {
        "out_dir": str(result.out_dir),
        "checkpoint": str(result.checkpoint),
        "steps": int(result.steps),
        "final_loss": getattr(result, "final_loss", None),
        "val_error_start": getattr(result, "val_error_start", None),
        "val_error": getattr(result, "val_error", None),
    }
    publish_markdown(
        "train-result", "# Training run\n\n" + markdown_table(["field", "value"], sorted(out.items())) + "\n"
    )
    return out
