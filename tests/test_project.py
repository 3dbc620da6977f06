"""The project stands on its own: it names no file outside itself, and what it needs ships with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from training.config import SHIPPED_CONFIGS, load_train_config, resolve_config_path, shipped_configs

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so this file does not name them itself.
FORBIDDEN = ("../" + "shared", "MIDAS" + "_NOTES")
# CI lays the real stereo pairs beside the checkout; this fixture finds them there on purpose.
ALLOWED = {"tests/fixtures/stereo_gt.py"}


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_no_tracked_file_names_files_outside_the_project():
    offenders = []
    for name in _tracked_files():
        path = ROOT / name
        if name in ALLOWED or path.is_symlink() or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        offenders += [f"{name}: {word}" for word in FORBIDDEN if word in text]
    assert not offenders, offenders


def test_method_notes_are_in_the_project():
    text = (ROOT / "docs" / "METHOD.md").read_text()
    for section in ("§1", "§2", "§3", "§4"):
        assert f"## {section}" in text


def test_shipped_configs_are_package_data_found_from_any_folder(tmp_path, monkeypatch):
    assert SHIPPED_CONFIGS.parent == Path(__import__("training").__file__).resolve().parent
    assert {"train_demo", "train_demo_dataset", "train_midas"} <= set(shipped_configs())
    monkeypatch.chdir(tmp_path)  # no repo-relative path can work from here
    assert Path(resolve_config_path("train_demo")) == SHIPPED_CONFIGS / "train_demo.yaml"
    cfg = load_train_config("train_demo.yaml")
    assert cfg.model.encoder != "resnet50"  # the demo's tiny model, not the recipe's default
    with pytest.raises(ConfigError, match="shipped configurations: .*train_demo"):
        resolve_config_path("train_dmeo")


def test_pyproject_ships_the_configs_and_no_unused_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "configs/*.yaml" in project["tool"]["setuptools"]["package-data"]["training"]
    assert not any(dep.startswith("ffmpeg-python") for dep in project["project"]["dependencies"])


def test_benches_run_as_modules_without_path_edits_or_test_helpers():
    offenders = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        text = path.read_text()
        for word in ("sys" + ".path", "from " + "tests", "import " + "tests"):
            if word in text:
                offenders.append(f"{path.name}: {word}")
    assert not offenders, offenders
    proc = subprocess.run(
        [__import__("sys").executable, "-m", "bench.bench_shards", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage" in proc.stdout, proc.stderr[-2000:]
