"""Every bad input gets a one-line message naming the file and what to do, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import main
from pipeline.synthetic import ffmpeg_exe, render_stereo_frame


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _not_a_video(tmp_path, sample_movie):
    p = tmp_path / "notes.mkv"
    p.write_text("these are not the frames you are looking for\n" * 50)
    return p


def _truncated(tmp_path, sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=4.0)
    data = movie.path.read_bytes()
    p = tmp_path / "cut.mkv"
    p.write_bytes(data[: len(data) // 2])
    return p


def _audio_only(tmp_path, sample_movie):
    p = tmp_path / "sound.mka"
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", str(p))
    return p


def _flat_2d(tmp_path, sample_movie):
    # a 2D movie: one view only, as wide as an SBS frame, no stereo metadata
    p = tmp_path / "flat.mkv"
    frames = b"".join(render_stereo_frame(320, 180, t / 24, seed=9).left.tobytes() for t in range(24))
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
            "320x180",
            "-r",
            "24",
            "-i",
            "pipe:0",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(p),
        ],
        input=frames,
        check=True,
    )
    return p


def _mvc(tmp_path, sample_movie):
    # FFmpeg cannot write MVC; an MKV that declares it (StereoMode block_lr) is what a 3D rip gives
    p = tmp_path / "mvc.mkv"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=320x180:d=1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-metadata:s:v:0",
        "stereo_mode=block_lr",
        str(p),
    )
    return p


def _odd_width(tmp_path, sample_movie):
    movie = sample_movie(layout="sbs-full", seconds=4.0)
    p = tmp_path / "odd.mkv"
    _ffmpeg(
        "-i",
        str(movie.path),
        "-vf",
        "format=yuv444p,crop=iw-1:ih:0:0",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-metadata:s:v:0",
        "stereo_mode=left_right",
        str(p),
    )
    return p


CASES = [
    pytest.param(_not_a_video, "not a video file", id="not-a-video"),
    pytest.param(_truncated, "truncated", id="truncated"),
    pytest.param(_audio_only, "audio-only", id="audio-only"),
    pytest.param(_flat_2d, "not a stereo pair", id="2d-not-a-stereo-pair"),
    pytest.param(_mvc, "MVC", id="mvc-stream"),
    pytest.param(_odd_width, "odd width", id="odd-resolution"),
]


@pytest.mark.parametrize("make,problem", CASES)
@pytest.mark.parametrize("command", ["probe", "shots"])
def test_bad_input_message(tmp_path, sample_movie, capsys, make, problem, command):
    path = make(tmp_path, sample_movie)
    rc = main([command, str(path)] + (["--no-progress"] if command == "shots" else []))
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert str(path) in err and problem in err
    assert "(" in err and ")" in err, "the message says what to do"


def test_missing_file(tmp_path, capsys):
    rc = main(["probe", str(tmp_path / "nope.mkv")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_cli_exits_nonzero_in_a_subprocess(tmp_path):
    p = tmp_path / "notes.mkv"
    p.write_text("not a movie")
    proc = subprocess.run(
        [sys.executable, "-m", "flows", "shots", str(p)], capture_output=True, text=True, cwd=str(_repo())
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a video file" in proc.stderr


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
