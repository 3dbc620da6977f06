"""Training configuration contracts: the checkpoint's hash is the recipe's, test hooks are not configuration,
and what a checkpoint stores about the loader is what a resumed run uses."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import yaml

from pipeline.errors import ConfigError
from training.checkpoint import load_checkpoint
from training.config import RUN_SETTINGS, TrainConfig, load_train_config, recipe_hash
from training.train import run_training


def _config_file(tmp_path):
    cfg = {
        "model": {"encoder": "tiny", "features": 16},
        "data": {
            "datasets": [{"name": "a", "kind": "synthetic", "size": 16, "image_size": [64, 48]}],
            "batch_size": 2,
            "num_workers": 0,
            "augment": {"size": 32},
        },
        "max_steps": 2,
        "checkpoint_every": 1,
        "log_every": 1,
        "progress": False,
        "tensorboard": False,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_recipe_hash_leaves_out_run_settings_only():
    base = TrainConfig()
    run = dataclasses.replace(
        base,
        out_dir="elsewhere",
        resume="auto",
        progress=False,
        max_steps=7,
        log_every=3,
        tensorboard=False,
        keep_checkpoints=9,
    )
    assert {"out_dir", "resume", "progress", "max_steps"} <= set(RUN_SETTINGS)
    assert recipe_hash(run) == recipe_hash(base)
    assert recipe_hash(dataclasses.replace(base, seed=1)) != recipe_hash(base)
    assert recipe_hash(dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr_new=3e-4))) != recipe_hash(
        base
    )


def test_resume_with_other_run_settings_does_not_warn_but_another_recipe_does(tmp_path, caplog):
    path = _config_file(tmp_path)
    first = run_training(load_train_config(str(path), [f"out_dir={tmp_path / 'run'}"]))
    assert first.steps == 2
    caplog.set_level(logging.WARNING, logger="training.train")
    resumed = run_training(
        load_train_config(
            str(path),
            [f"out_dir={tmp_path / 'run'}", "resume=auto", "max_steps=3", "log_every=2", "keep_checkpoints=5"],
        )
    )
    assert resumed.steps == 3
    assert "different configuration" not in caplog.text
    run_training(
        load_train_config(str(path), [f"out_dir={tmp_path / 'run'}", "resume=auto", "max_steps=4", "optim.lr_new=0.01"])
    )
    assert "different configuration" in caplog.text


def test_the_crash_hook_is_not_configuration(tmp_path):
    assert "crash_at_step" not in {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ConfigError, match="crash_at_step"):
        load_train_config(str(_config_file(tmp_path)), ["crash_at_step=3"])


def test_resume_continues_at_the_loader_position_the_checkpoint_stored(tmp_path):
    path = _config_file(tmp_path)
    run_training(load_train_config(str(path), [f"out_dir={tmp_path / 'a'}"]))
    saved = tmp_path / "a" / "checkpoints" / "last.pt"
    assert load_checkpoint(saved)["data_state"]["batches"] == 2
    moved = load_checkpoint(saved)
    moved["data_state"] = {**moved["data_state"], "batches": 6}  # as if the loader had handed out 6 batches
    torch.save(moved, tmp_path / "moved.pt")

    def resume(ckpt, out):
        return run_training(
            load_train_config(str(path), [f"out_dir={tmp_path / out}", f"resume={ckpt}", "max_steps=3"])
        )

    as_saved, from_moved = resume(saved, "b"), resume(tmp_path / "moved.pt", "c")
    assert as_saved.steps == from_moved.steps == 3
    assert as_saved.losses != pytest.approx(from_moved.losses)  # other batches: the position was read
    assert load_checkpoint(tmp_path / "c" / "checkpoints" / "final.pt")["data_state"]["batches"] == 7
