"""Launching training: one up-front check in the launching process, the run-folder lock, and
signals that reach torchrun and its workers (real `depthmine train --nproc 2` processes)."""

from __future__ import annotations

import csv
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

from flows.cli import main as cli_main
from pipeline.shards import ShardConfig
from training.checkpoint import load_checkpoint


def _yaml(tmp_path, datasets, name="train.yaml", **top):
    cfg = {
        "model": {"encoder": "tiny", "features": 16},
        "data": {"datasets": datasets, "batch_size": 2, "num_workers": 0, "augment": {"size": 32}},
        "max_steps": 2,
        "log_every": 1,
        "checkpoint_every": 0,
        "progress": False,
        "tensorboard": False,
        "out_dir": str(tmp_path / "run"),
    }
    for key, value in top.items():
        if key == "data":
            cfg["data"].update(value)
        else:
            cfg[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


SYNTH = [
    {"name": "a", "kind": "synthetic", "size": 8, "image_size": [64, 48]},
    {"name": "b", "kind": "synthetic", "size": 8, "seed": 30, "image_size": [64, 48]},
]


@pytest.fixture(scope="module")
def one_shard(tiny_dataset):
    return tiny_dataset(
        n_movies=1,
        frames_per_movie=4,
        splits=("train",),
        config=ShardConfig(target_shard_bytes=1 << 30, row_group_rows=2),
    )


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("depthmine: error:"), err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


# ---- the pre-flight check ------------------------------------------------------------------


def test_misspelt_validity_fails_before_the_model_is_built(tmp_path, capsys):
    """'validity: postive' used to surface inside a data worker as a long traceback."""
    (tmp_path / "ext" / "images").mkdir(parents=True)
    (tmp_path / "ext" / "targets").mkdir()
    path = _yaml(
        tmp_path,
        [{"name": "ext", "kind": "folder", "path": str(tmp_path / "ext"), "target": "depth", "validity": "postive"}],
        data={"num_workers": 2},
    )
    assert cli_main(["train", "--config", str(path)]) == 2
    _one_line_error(capsys, "validity 'postive'", "positive, finite, nonzero")
    assert not (tmp_path / "run").exists()


def test_batch_not_divisible_by_processes_fails_in_the_launcher(tmp_path, capsys):
    path = _yaml(tmp_path, SYNTH, data={"batch_size": 3})
    t0 = time.monotonic()
    assert cli_main(["train", "--config", str(path), "--nproc", "2"]) == 2
    _one_line_error(capsys, "data.batch_size=3 is not divisible by 2 processes")
    assert time.monotonic() - t0 < 20  # no torchrun was started
    assert not (tmp_path / "run").exists()


def test_too_few_shards_for_the_processes_fails_in_the_launcher(one_shard, tmp_path, capsys):
    path = _yaml(tmp_path, [{"name": "movies", "kind": "shards", "path": str(one_shard), "split": "train"}])
    assert cli_main(["train", "--config", str(path), "--nproc", "2"]) == 2
    _one_line_error(capsys, "'movies' has 1 shard(s) for 2 processes")


def test_unreadable_dataset_and_empty_split_name_themselves(one_shard, tmp_path, capsys):
    path = _yaml(tmp_path, [{"name": "movies", "kind": "shards", "path": str(one_shard), "split": "val"}])
    assert cli_main(["train", "--config", str(path)]) == 2
    _one_line_error(capsys, "dataset 'movies'", "split 'val'")
    path = _yaml(tmp_path, [{"name": "ext", "kind": "csv", "path": str(tmp_path / "none.csv")}])
    assert cli_main(["train", "--config", str(path)]) == 2
    _one_line_error(capsys, "none.csv")


def test_default_workers_with_a_one_shard_dataset_are_lowered_with_a_notice(one_shard, tmp_path, capsys):
    """num_workers: 2 (the default) and a one-shard dataset: every loader worker needs a shard,
    so the run reads in-process and says so, instead of failing inside a worker."""
    path = _yaml(
        tmp_path,
        [{"name": "movies", "kind": "shards", "path": str(one_shard), "split": "train"}],
        data={"num_workers": 2},
    )
    assert cli_main(["train", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "data.num_workers=2 lowered to 0" in captured.err and "'movies' has 1 shard(s)" in captured.err
    assert "trained 2 steps" in captured.out
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")["config"]["data"]["num_workers"] == 0


def test_metrics_name_datasets_and_average_over_the_window(tmp_path):
    """loss/<name> and weight/<name> columns, averaged over the logging window like 'loss': with
    equal valid counts the naive loss is the mean of the two datasets' losses, step by step and
    so also for window means (a one-step snapshot would not match)."""
    path = _yaml(tmp_path, SYNTH, max_steps=4, log_every=2)
    assert cli_main(["train", "--config", str(path)]) == 0
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"loss/a", "loss/b", "weight/a", "weight/b"} <= set(rows[0])
    for r in rows:
        assert float(r["loss"]) == pytest.approx(0.5 * (float(r["loss/a"]) + float(r["loss/b"])), rel=1e-5)
        assert float(r["weight/a"]) == float(r["weight/b"]) == 0.5


# ---- processes: the lock and the signals -----------------------------------------------------


def _start_train(cfg_path, out, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows", "train", "--config", str(cfg_path), "--out", str(out), "--nproc", str(nproc)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _wait_for(lines: queue.Queue, fragment: str, timeout: float = 150.0) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError("process ended before: " + fragment + "\n" + "".join(seen[-40:]))
        seen.append(line)
        if fragment in line:
            return seen


def _trainers(proc) -> list[psutil.Process]:
    """The launcher's descendants: torchrun and its worker processes."""
    return psutil.Process(proc.pid).children(recursive=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signals_to_the_launcher_leave_no_trainer_behind(tmp_path, sig):
    """`depthmine train --nproc 2` is signalled mid-run: torchrun and both workers end (they used
    to train on as orphans, writing the run folder). While it runs, a second run into the same
    folder is refused in one line naming the owner; once it is gone, so is the lock."""
    from training.runlock import RunLock

    cfg = _yaml(tmp_path, SYNTH, max_steps=100000, data={"batch_size": 2})
    out = tmp_path / "run"
    proc, lines = _start_train(cfg, out)
    try:
        _wait_for(lines, "step 2/100000")  # rank 0 logs a step: both workers are training
        family = _trainers(proc)
        cmdlines = [" ".join(p.cmdline()) for p in family]
        assert sum("torch.distributed.run" in c for c in cmdlines) == 1, cmdlines
        assert sum("training.train" in c and "torch.distributed.run" not in c for c in cmdlines) == 2, cmdlines

        if sig == signal.SIGTERM:  # the lock, checked once (a second launcher costs a torch import)
            second = subprocess.run(
                [sys.executable, "-m", "flows", "train", "--config", str(cfg), "--out", str(out)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 2, second.stderr[-2000:]
            err = [ln for ln in second.stderr.splitlines() if ln.strip()]
            assert len(err) == 1 and "another training run is using this folder (pid" in err[0], second.stderr
        else:
            with pytest.raises(Exception, match="another training run is using this folder"):
                RunLock(out).acquire()

        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(family, timeout=60)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in psutil.Process().children(recursive=True):
            if "training.train" in " ".join(p.cmdline()):
                p.kill()
    # the kernel dropped the lock with its holder: the folder is free for the next run
    RunLock(out).acquire().release()
