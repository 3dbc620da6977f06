"""Atomic writes leave either the old or the new file, with a normal mode."""

import os
import stat

import pytest

from pipeline.atomic import atomic_open, write_json_atomic


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write("{half")
            raise RuntimeError("killed mid-write")
    assert target.read_text().strip().startswith("{") and '"version": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_written_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
