"""`depthmine serve` takes `build`'s options, checks them before anything is scheduled, and says what it serves.

Every test runs the real CLI in a subprocess with PREFECT_API_URL pointing at a port nothing listens
on: a command that got as far as registering or serving would fail to connect (or hang), so an exit
status of 0 with --dry-run, or of 2 with the one-line error, shows that nothing was scheduled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.prefect import free_port

ROOT = Path(__file__).resolve().parents[1]


def _serve(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api", PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    return subprocess.run(
        [sys.executable, "-m", "flows", "serve", *argv],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def catalog(tmp_path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"movies": [{"path": "films/a.mkv", "movie_id": "a", "split": "train"}]}))
    return path


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthmine: error: "), proc.stderr
    assert "deployment build-dataset/" not in proc.stdout, "a plan was printed before the options were checked"
    return lines[0]


def test_help_lists_builds_options():
    proc = _serve("--help")
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--set",
        "--flow",
        "--ckpt",
        "--device",
        "--keep-versions",
        "--max-failed-share",
        "--runner",
        "--workers",
        "--dry-run",
    ):
        assert option in proc.stdout, f"serve --help does not list {option}"


def test_serve_and_build_share_one_option_definition():
    from flows.cli import build_parser

    def options(command: str) -> dict[str, tuple]:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        return {a.dest: (a.default, a.type, a.choices, a.help) for a in sub._actions if a.option_strings}

    build, serve = options("build"), options("serve")
    shared = {"overrides", "flow", "ckpt", "device", "keep_versions", "max_failed_share", "runner", "workers"}
    assert shared <= set(build) and shared <= set(serve)
    assert {k: serve[k] for k in shared} == {k: build[k] for k in shared}


def test_bad_set_is_one_line_and_nothing_is_scheduled(catalog, tmp_path):
    proc = _serve(
        "--catalog", str(catalog), "--out", str(tmp_path / "ds"), "--cron", "0 3 * * *", "--set", "nope.key=1"
    )
    assert "nope" in _one_line_error(proc)


def test_unknown_flow_and_missing_checkpoint_fail_before_serving(catalog, tmp_path):
    base = ("--catalog", str(catalog), "--out", str(tmp_path / "ds"), "--cron", "0 3 * * *")
    line = _one_line_error(_serve(*base, "--flow", "no-such-flow"))
    assert "no-such-flow" in line and "dis-medium" in line  # names the valid backends
    line = _one_line_error(_serve(*base, "--flow", "ptlflow:raft", "--ckpt", str(tmp_path / "missing.ckpt")))
    assert "missing.ckpt" in line and "not found" in line


def test_bad_schedule_and_keep_versions_fail_before_serving(catalog, tmp_path):
    base = ("--catalog", str(catalog), "--out", str(tmp_path / "ds"))
    assert "cron" in _one_line_error(_serve(*base, "--cron", "every night"))
    assert "--interval" in _one_line_error(_serve(*base, "--interval", "0"))
    assert "--keep-versions" in _one_line_error(_serve(*base, "--cron", "0 3 * * *", "--keep-versions", "0"))
    assert "absent.yaml" in _one_line_error(_serve("--catalog", str(tmp_path / "absent.yaml"), "--cron", "0 3 * * *"))


def test_dry_run_prints_what_would_be_served(catalog, tmp_path):
    ckpt = tmp_path / "raft-things.ckpt"
    ckpt.write_bytes(b"not loaded by a dry run")
    proc = _serve(
        "--catalog",
        "catalog.yaml",
        "--out",
        "ds",
        "--cron",
        "0 3 * * *",
        "--flow",
        "ptlflow:raft",
        "--ckpt",
        ckpt.name,
        "--device",
        "cuda",
        "--keep-versions",
        "3",
        "--set",
        "chunk_frames=4",
        "--name",
        "gpu-rebuild",
        "--dry-run",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "deployment build-dataset/gpu-rebuild" in out
    assert "cron '0 3 * * *' (UTC)" in out
    # relative paths are made absolute: the scheduled runs start elsewhere
    assert f"catalog   {catalog.resolve()}" in out
    assert f"out       {(tmp_path / 'ds').resolve()}" in out
    for item in ("flow=ptlflow:raft", f"ckpt={ckpt.resolve()}", "device=cuda", "keep_versions=3", "runner=threads"):
        assert item in out, f"{item} missing from the plan:\n{out}"
    assert "--set     chunk_frames=4" in out
    import torch

    if not torch.cuda.is_available():  # this machine: the log says the GPU is missing, and nothing else fails
        assert "torch sees no CUDA device" in proc.stderr
