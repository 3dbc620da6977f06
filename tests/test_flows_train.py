"""The train_model flow: a thin wrapper that runs the trainer and reports its checkpoint."""

from __future__ import annotations

from pathlib import Path


def test_train_model_flow_writes_a_checkpoint(prefect_harness, tmp_path):
    from flows.train import train_model

    result = train_model(
        config="train_demo",
        overrides=[  # the shipped configuration, by name
            f"out_dir={tmp_path / 'run'}",
            "max_steps=2",
            "checkpoint_every=2",
            "val_every=0",
            "data.val=null",
            "progress=false",
            "tensorboard=false",
            "data.batch_size=2",
            "data.datasets=[{name: synthetic, kind: synthetic, size: 4, image_size: [64, 48]}]",
        ],
    )
    assert result["steps"] == 2
    assert Path(result["checkpoint"]).is_file()
    assert Path(result["out_dir"]) == tmp_path / "run"
