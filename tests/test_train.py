"""The trainer: it learns, it resumes after a real crash, its CLI and configuration."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from flows.cli import main as cli_main
from pipeline.errors import BadInputError, ConfigError
from training.checkpoint import load_checkpoint, load_model
from training.config import load_train_config, train_config_from_dict
from training.train import run_training


@pytest.fixture(scope="module")
def movies(tiny_dataset):
    """Two training movies and one held-out movie (a scene never seen in training)."""
    return tiny_dataset(n_movies=3, frames_per_movie=12, size=(96, 64), splits=("train", "train", "val"))


def _shard_config(dataset, out_dir, **top):
    cfg = {
        "model": {"encoder": "tiny", "features": 16},
        "data": {
            "datasets": [{"name": "movies", "kind": "shards", "path": str(dataset), "split": "train"}],
            "val": {"name": "held-out", "kind": "shards", "path": str(dataset), "split": "val"},
            "val_samples": 12,
            "val_size": 64,
            "batch_size": 8,
            "num_workers": 0,
            "augment": {"size": 64, "min_crop_scale": 0.6},
        },
        "optim": {"lr_new": 1e-3},
        "max_steps": 200,
        "log_every": 50,
        "checkpoint_every": 0,
        "tensorboard": False,
        "progress": False,
        "out_dir": str(out_dir),
    }
    cfg.update(top)
    return cfg


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_training_lowers_held_out_error(movies, tmp_path):
    """200 steps on two synthetic movies: the held-out movie's aligned disparity error drops well
    below the untrained model's."""
    result = run_training(train_config_from_dict(_shard_config(movies, tmp_path / "run")))
    print(f"held-out aligned disparity RMSE {result.val_error_start:.4f} -> {result.val_error:.4f}")
    assert result.steps == 200
    assert result.val_error < 0.7 * result.val_error_start
    assert np.mean(result.losses[-20:]) < 0.6 * np.mean(result.losses[:5])
    # the final checkpoint is usable on its own
    model, cfg = load_model(result.checkpoint)
    assert cfg.encoder == "tiny"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 64, 96)
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [50, 100, 150, 200]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_killed_and_resumed_run_ends_where_uninterrupted_one_does(movies, tmp_path):
    """A subprocess SIGKILLs itself right after its step-6 checkpoint; --resume auto finishes the
    run; losses and weights equal an uninterrupted run's. One loader worker, so the shard
    stream's mid-epoch skip is exercised across processes."""
    common = dict(max_steps=10, checkpoint_every=3, log_every=1, seed=5)
    data_over = {"num_workers": 1, "batch_size": 4}

    def cfg(out, **extra):
        c = _shard_config(movies, out, **common, **extra)
        c["data"].update(data_over)
        c["data"]["val"] = None
        return c

    straight = run_training(train_config_from_dict(cfg(tmp_path / "straight")))

    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(cfg(tmp_path / "crash")))
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "OMP_NUM_THREADS": "1", "DEPTHMINE_TEST_CRASH_AT_STEP": "6"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")["step"] == 6
    assert not (tmp_path / "crash" / "checkpoints" / "final.pt").exists()

    resumed = run_training(load_train_config(str(path), ["resume=auto"]))
    assert resumed.steps == 10
    assert resumed.losses == pytest.approx(straight.losses[6:], rel=1e-5)
    a = load_checkpoint(straight.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    with open(tmp_path / "crash" / "metrics.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 11))


def _synthetic_yaml(tmp_path, **top):
    cfg = {
        "model": {"encoder": "tiny", "features": 16},
        "data": {
            "datasets": [
                {"name": "a", "kind": "synthetic", "size": 8, "image_size": [64, 48]},
                {"name": "b", "kind": "synthetic", "size": 8, "seed": 30, "image_size": [64, 48]},
            ],
            "batch_size": 2,
            "num_workers": 0,
            "augment": {"size": 32},
        },
        "max_steps": 3,
        "log_every": 1,
        "progress": False,
    }
    cfg.update(top)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_trains_with_overrides_and_tensorboard(tmp_path, capsys):
    path = _synthetic_yaml(tmp_path, tensorboard=True)
    out = tmp_path / "run"
    code = cli_main(
        ["train", "--config", str(path), "--out", str(out), "--set", "mixing.strategy=pareto", "--set", "max_steps=2"]
    )
    assert code == 0
    assert "trained 2 steps" in capsys.readouterr().out
    ck = load_checkpoint(out / "checkpoints" / "final.pt")
    assert ck["step"] == 2 and ck["config"]["mixing"]["strategy"] == "pareto"
    assert len(ck["extra"]["mixing_weights"]) == 2 and sum(ck["extra"]["mixing_weights"]) == pytest.approx(1.0)
    assert "optimizer" in ck and "rng" in ck and ck["data_state"]["batches"] == 2
    assert any((out / "tensorboard").iterdir())
    assert yaml.safe_load((out / "config.yaml").read_text())["max_steps"] == 2


def test_learning_rate_groups(tmp_path):
    from training.model import ModelConfig, build_model
    from training.train import param_groups

    model = build_model(ModelConfig(encoder="tiny", features=16))
    enc, dec = param_groups(model, 1e-5, 1e-4, encoder_pretrained=True)
    assert (enc["lr"], dec["lr"]) == (1e-5, 1e-4)
    assert param_groups(model, 1e-5, 1e-4, encoder_pretrained=False)[0]["lr"] == 1e-4
    assert len(enc["params"]) + len(dec["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.lr_nwe=1", "lr_nwe"),
        ("loss.kind=l7", "l7"),
        ("data.batch_size=many", "batch_size"),
        ("precision=fp8", "fp8"),
    ],
    ids=["unknown-key", "bad-loss", "bad-type", "bad-precision"],
)
def test_config_mistakes_name_the_problem(tmp_path, override, match):
    path = _synthetic_yaml(tmp_path)
    with pytest.raises(ConfigError, match=match):
        cfg = load_train_config(str(path), [override, f"out_dir={tmp_path / 'r'}"])
        run_training(cfg)


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    assert cli_main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    path = _synthetic_yaml(tmp_path)
    assert (
        cli_main(["train", "--config", str(path), "--resume", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r")])
        == 2
    )
    assert "nope.pt" in capsys.readouterr().err


def test_resume_refuses_weights_only_file(tmp_path):
    from training.model import ModelConfig, build_model

    torch.save(build_model(ModelConfig(encoder="tiny", features=16)).state_dict(), tmp_path / "w.pt")
    path = _synthetic_yaml(tmp_path)
    with pytest.raises(BadInputError, match="w.pt"):
        run_training(
            load_train_config(
                str(path), [f"resume={tmp_path / 'w.pt'}", f"out_dir={tmp_path / 'r'}", "model.features=16"]
            )
        )


def test_demo_config_trains_on_a_dataset(movies, tmp_path):
    from training.config import demo_train_config

    cfg = demo_train_config(str(movies), str(tmp_path / "demo"), max_steps=2)
    cfg.progress = cfg.tensorboard = False
    result = run_training(cfg)
    assert result.steps == 2 and result.val_error is not None


def test_shipped_dataset_config_trains_on_the_demo_shards(movies, tmp_path, monkeypatch, capsys):
    """configs/train_demo_dataset.yaml reads demo_out/dataset (what `depthmine demo` builds) and
    validates on its val split; train_demo.yaml stays the synthetic-frames demo."""
    import shutil

    from training.config import SHIPPED_CONFIGS as root

    shipped = yaml.safe_load((root / "train_demo_dataset.yaml").read_text())
    assert shipped["data"]["datasets"][0]["kind"] == "shards"
    assert shipped["data"]["datasets"][0]["path"] == shipped["data"]["val"]["path"] == "demo_out/dataset"
    assert yaml.safe_load((root / "train_demo.yaml").read_text())["data"]["datasets"][0]["kind"] == "synthetic"
    shutil.copytree(movies, tmp_path / "demo_out" / "dataset")
    monkeypatch.chdir(tmp_path)
    rc = cli_main(
        [
            "train",
            "--config",
            str(root / "train_demo_dataset.yaml"),
            "--set",
            "max_steps=2",
            "--set",
            "progress=false",
            "--set",
            "data.val_samples=4",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "trained 2 steps" in out and "validation aligned disparity RMSE" in out
    assert (tmp_path / "demo_out" / "train-dataset" / "checkpoints" / "final.pt").is_file()


def test_set_reaches_list_entries_of_the_defaults_without_a_file():
    """--set applies to the full default recipe, so list entries are reachable with no YAML."""
    from training.config import TrainConfig, load_train_config

    cfg = load_train_config(None, ["data.datasets.0.path=/data/films", "data.datasets.0.split=val"])
    assert cfg.data.datasets[0].path == "/data/films" and cfg.data.datasets[0].split == "val"
    assert cfg.model == TrainConfig().model, "everything else keeps the defaults"
