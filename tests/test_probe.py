"""probe(): size, rate, frame count, chapters and stereo metadata of real encoded movies."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.probe import probe
from pipeline.synthetic import ffmpeg_exe

LAYOUTS = {  # layout: (packed frame size for a 320x180 eye, MKV StereoMode tag)
    "sbs-full": ((640, 180), "left_right"),
    "sbs-half": ((320, 180), "left_right"),
    "tab-full": ((320, 360), "top_bottom"),
    "tab-half": ((320, 180), "top_bottom"),
    "separate": ((320, 180), None),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_probe_every_layout(sample_movie, layout):
    movie = sample_movie(layout=layout, seconds=4.0)
    info = probe(movie.path)
    (w, h), tag = LAYOUTS[layout]
    assert (info.width, info.height) == (w, h)
    assert info.fps == pytest.approx(24.0)
    assert info.frame_count == movie.frame_count == 96
    assert info.duration_s == pytest.approx(4.0, abs=0.05)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and not info.variable_frame_rate
    assert info.stereo_mode == tag
    if tag:
        assert info.stereo3d == ("side_by_side" if tag == "left_right" else "top_bottom")


def test_chapters_are_read(sample_movie):
    movie = sample_movie(layout="sbs-half", seconds=4.0)
    info = probe(movie.path)
    assert [c.title for c in info.chapters] == [t for _, _, t in movie.chapters]
    for got, (start, end, _) in zip(info.chapters, movie.chapters):
        assert got.start_s == pytest.approx(start, abs=1e-3) and got.end_s == pytest.approx(end, abs=1e-3)


def test_mp4_frame_count_is_exact(sample_movie, tmp_path):
    movie = sample_movie(layout="sbs-half", seconds=4.0)
    mp4 = tmp_path / "movie.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(movie.path), "-c", "copy", str(mp4)], check=True)
    info = probe(mp4)
    assert info.frame_count_exact and info.frame_count == 96
    assert info.stereo_mode is None  # MP4 carries no StereoMode tag


def test_variable_frame_rate_is_detected(tmp_path):
    vfr = tmp_path / "vfr.mkv"
    # 24 frames at 24 fps, then 24 at 12 fps
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=64x36:r=24:d=2",
            "-vf",
            "setpts='if(lt(N,24),N/24,1+(N-24)/12)/TB'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(vfr),
        ],
        check=True,
    )
    info = probe(vfr)
    assert info.variable_frame_rate
    assert 12.0 < info.fps < 24.0


def test_h264_frame_packing_sei_gives_the_layout(sample_movie, tmp_path):
    from pipeline.layouts import Layout, layout_from_metadata

    movie = sample_movie(layout="sbs-half", seconds=4.0)
    mp4 = tmp_path / "packed.mp4"  # no MKV tag: only the H.264 frame-packing SEI says side-by-side
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-i",
            str(movie.path),
            "-map",
            "0:v",
            "-c:v",
            "libx264",
            "-x264-params",
            "frame-packing=3",
            "-pix_fmt",
            "yuv420p",
            str(mp4),
        ],
        check=True,
    )
    info = probe(mp4)
    assert info.stereo_mode is None and info.stereo3d == "side_by_side"
    decision = layout_from_metadata(info)
    assert decision.layout is Layout.SBS_HALF and "stereo3d" in decision.reason
