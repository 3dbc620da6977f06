"""Issue 10: ids, inputs and output folders are checked before any work; nothing escapes or is lost.

Movie ids are refused before the disk is touched; automatic ids keep non-ASCII names and a movie
from another file is only replaced with ``--replace``; a movie that keeps no frame is a failure;
an unreadable movie says "permission denied"; a read-only or full dataset disk and ``--out`` on a
file fail in one line before any decoding; the temporary Prefect server dies with its CLI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flows.cli import main
from flows.runners import RunnerSpec
from pipeline.errors import BadInputError, ConfigError
from pipeline.ingest import LabelSettings
from tests.fixtures.prefect import wait_until

ROOT = Path(__file__).resolve().parents[1]
FAST = ["chunk_frames=4", "sampling.eval_fps=4"]
FAST_LABELS = LabelSettings("dis-ultrafast", overrides=FAST)
TWO = RunnerSpec(workers=2)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------- movie ids


@pytest.mark.parametrize(
    "movie_id, message",
    [
        pytest.param("../../escape", "holds '/'", id="parent-escape"),
        pytest.param("ABS", "holds '/'", id="absolute-path"),
        pytest.param("a/b", "holds '/'", id="separator"),
        pytest.param("..", "does not start with a letter or digit", id="dot-dot"),
        pytest.param(".hidden", "does not start with a letter or digit", id="hidden"),
        pytest.param("", "movie id is empty", id="empty"),
        pytest.param("x" * 300, "300 characters long; the limit is 100", id="300-chars"),
        pytest.param("a\nb", "holds", id="newline"),
    ],
)
def test_a_bad_movie_id_is_refused_before_anything_touches_the_disk(tmp_path, capsys, sample_movie, movie_id, message):
    movie = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=31)
    work = tmp_path / "work"
    work.mkdir()
    if movie_id == "ABS":
        movie_id = str(tmp_path / "abs-escape")
    out = work / "ds"
    before = _tree(tmp_path)
    rc = main(["ingest", str(movie.path), "--out", str(out), "--movie-id", movie_id, "--flow", "dis-ultrafast"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert _tree(tmp_path) == before  # no dataset folder, no .work, nothing outside --out either


def test_the_catalog_and_ingest_share_one_id_rule(tmp_path):
    import yaml

    from flows.catalog import load_catalog, slugify
    from pipeline.shards.manifest import check_movie_id

    for ok in ("日本", "Amélie", "movie-2009_v2.1", "a+b"):
        assert check_movie_id(ok) == ok
    cat = tmp_path / "c.yaml"
    cat.write_text(yaml.safe_dump({"movies": [{"path": "a.mkv", "movie_id": "../x"}]}))
    with pytest.raises(ConfigError, match=r"c.yaml:2: movie id '../x' holds '/'"):
        load_catalog(cat)
    # automatic ids: unique for distinct names, stable, never empty
    assert slugify("日本") == "日本" and slugify("中国") == "中国"
    assert slugify("!!!") == slugify("!!!") != slugify("???")
    assert slugify("!!!").startswith("movie-")
    long_a, long_b = slugify("a" * 250 + "1"), slugify("a" * 250 + "2")
    assert long_a != long_b and len(long_a) <= 100
    for name in ("日本", "!!!", "a" * 250, "A Movie (2009)", "e\u0301t\u00e9"):
        assert check_movie_id(slugify(name)) == slugify(name)


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
@pytest.mark.slow
def test_non_ascii_names_get_distinct_ids_and_another_source_needs_replace(
    prefect_harness, sample_movie, tmp_path, capsys
):
    from flows.ingest import ingest_movie
    from pipeline.shards import read_manifest, verify

    one = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=31)
    two = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=32)
    films = tmp_path / "films"
    films.mkdir()
    shutil.copy2(one.path, films / "日本.mkv")
    shutil.copy2(two.path, films / "中国.mkv")
    out = tmp_path / "ds"
    for name in ("日本", "中国"):
        result = ingest_movie(movie=str(films / f"{name}.mkv"), out=str(out), labelling=FAST_LABELS, runner=TWO)
        assert result["movie_id"] == name
    v = read_manifest(out)
    assert set(v.movies) == {"日本", "中国"} and v.version == 2

    # another file under the same automatic id: refused before any work, nothing changed
    other = tmp_path / "elsewhere" / "日本.mkv"
    other.parent.mkdir()
    shutil.copy2(two.path, other)
    before = _tree(out)
    rc = main(["ingest", str(other), "--out", str(out), "--flow", "dis-ultrafast", "--set", FAST[0], "--set", FAST[1]])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds another source" in err and "--replace" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="--replace"):
        ingest_movie(movie=str(other), out=str(out), labelling=FAST_LABELS, runner=TWO)
    assert _tree(out) == before and read_manifest(out).version == 2
    # with --replace it is replaced, the other movie stays
    result = ingest_movie(movie=str(other), out=str(out), labelling=FAST_LABELS, runner=TWO, replace=True)
    v = read_manifest(out)
    assert set(v.movies) == {"日本", "中国"} and v.movies["日本"].key == result["key"]
    assert v.movies["日本"].meta["source"]["path"] == str(other)
    assert [p for p in verify(str(out)) if p.severity == "error"] == [] and not (out / ".work").exists()


@pytest.mark.logs_errors  # the flow fails on purpose; Prefect logs the failure
@pytest.mark.slow
def test_a_movie_that_keeps_no_frame_is_a_failure_with_the_reasons(prefect_harness, tmp_path):
    """A 2D file forced into a stereo layout: every frame is rejected; nothing is committed."""
    from flows.ingest import ingest_movie
    from pipeline.synthetic import ffmpeg_exe, render_stereo_frame

    flat = tmp_path / "flat.mkv"
    frames = b"".join(render_stereo_frame(320, 96, t / 24, seed=9).left.tobytes() for t in range(48))
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            "320x96",
            "-r",
            "24",
            "-i",
            "pipe:0",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(flat),
        ],
        input=frames,
        check=True,
    )
    out = tmp_path / "ds"
    with pytest.raises(
        BadInputError, match=r"flat.mkv: no frame kept: all \d+ sampled frames were rejected \(\w+: \d+"
    ):
        ingest_movie(
            movie=str(flat),
            out=str(out),
            layout="sbs-half",
            labelling=LabelSettings(
                "dis-ultrafast",
                overrides=["chunk_frames=8", "sampling.drop_first_chapters=0", "sampling.drop_last_chapters=0"],
            ),
            runner=TWO,
        )
    assert not (out / "manifest.json").exists() and not (out / "movies").exists() and not (out / ".work").exists()


# ---------------------------------------------------------------------------- inputs and output folders


def _unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` without the capabilities that let root ignore file permissions."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("capsh"):
        pytest.skip("root without capsh: file permissions cannot be made to apply")
    import shlex

    return ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", "exec " + shlex.join(cmd)]


def test_unreadable_movie_and_unwritable_dataset_say_permission_denied(sample_movie):
    """In a subprocess whose file permissions apply (root's override dropped); fails before Prefect starts."""
    movie = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=31)
    root = Path(tempfile.mkdtemp(prefix="depthmine-perm-"))
    try:
        os.chmod(root, 0o755)
        secret = root / "secret.mkv"
        shutil.copy2(movie.path, secret)
        os.chmod(secret, 0o000)
        readable = root / "open.mkv"
        shutil.copy2(movie.path, readable)
        os.chmod(readable, 0o644)
        locked = root / "locked-ds"
        locked.mkdir()
        os.chmod(locked, 0o555)
        env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(root), PYTHONDONTWRITEBYTECODE="1")
        env.pop("PREFECT_API_URL", None)
        run = dict(cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        cli = [sys.executable, "-m", "flows", "ingest"]
        denied = subprocess.run(_unprivileged([*cli, str(secret), "--out", str(root / "ds")]), **run)
        assert denied.returncode == 2, denied.stderr[-2000:]
        assert "secret.mkv: permission denied" in denied.stderr and "truncated" not in denied.stderr
        assert denied.stderr.count("\n") == 1 and not (root / "ds").exists()
        unwritable = subprocess.run(_unprivileged([*cli, str(readable), "--out", str(locked / "ds")]), **run)
        assert unwritable.returncode == 2, unwritable.stderr[-2000:]
        assert "permission denied: the dataset folder is not writable" in unwritable.stderr
        assert unwritable.stderr.count("\n") == 1 and list(locked.iterdir()) == []
    finally:
        os.chmod(root / "secret.mkv", 0o644)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a small file system")
def test_read_only_and_full_disks_fail_before_any_work(tmp_path, capsys, sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=31)
    with _tmpfs(tmp_path / "ro", "ro,size=4m") as ro:
        assert main(["ingest", str(movie.path), "--out", str(ro / "ds")]) == 2
        err = capsys.readouterr().err
        assert "read-only file system" in err and err.count("\n") == 1
        assert list(ro.iterdir()) == []
    with _tmpfs(tmp_path / "small", "size=1m") as small:
        (small / "ds").mkdir()
        assert main(["ingest", str(movie.path), "--out", str(small / "ds")]) == 2
        err = capsys.readouterr().err
        assert "MiB free on its disk" in err and err.count("\n") == 1
        # a disk that is really full, whatever the threshold: the probe write fails
        with open(small / "filler", "wb") as fh:
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
        from pipeline.shards.manifest import check_dataset_writable

        with pytest.raises(BadInputError, match="no space left"):
            check_dataset_writable(small / "ds", min_free_bytes=0)
        (small / "filler").unlink()
        assert list((small / "ds").iterdir()) == []
    catalog = tmp_path / "cat.yaml"
    catalog.write_text(f"movies:\n  - {{path: {movie.path}}}\n")
    with _tmpfs(tmp_path / "ro2", "ro,size=4m") as ro:
        assert main(["build", "--catalog", str(catalog), "--out", str(ro / "ds")]) == 2
        assert "read-only file system" in capsys.readouterr().err


def test_out_pointing_at_a_file_fails_in_one_line(tmp_path, capsys, sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=31)
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert main(["ingest", str(movie.path), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: is a file, not a dataset folder" in err and err.count("\n") == 1
    assert main(["ingest", str(movie.path), "--out", str(target / "ds")]) == 2
    assert "which is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me" and _tree(tmp_path) == ["notes.txt"]


# ---------------------------------------------------------------------------- the temporary server


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_temporary_prefect_server_dies_with_its_cli(tmp_path, sample_movie, how):
    movie = sample_movie(layout="sbs-half", seconds=3.0, size=(160, 96), seed=31)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows",
            "ingest",
            str(movie.path),
            "--out",
            str(tmp_path / "ds"),
            "--flow",
            "dis-ultrafast",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def server() -> int | None:
            assert proc.poll() is None, "the CLI ended before its server was seen"
            return next((c for c in _children(proc.pid) if "prefect.server.api.server:create_app" in _cmdline(c)), None)

        pid = wait_until(server, timeout_s=120, interval_s=0.05, what="the temporary server process")
        proc.send_signal(how)
        proc.wait(timeout=60)
        wait_until(lambda: not _alive(pid), timeout_s=30, interval_s=0.1, what=f"the server (pid {pid}) to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
