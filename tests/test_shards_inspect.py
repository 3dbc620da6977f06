"""inspect and ``depthmine inspect``: statistics tables, contact sheet and histogram."""

from __future__ import annotations

import cv2

from flows.cli import main
from pipeline.shards.inspect import contact_sheet, format_summary, sample_frames, summarize


def test_summary_counts_frames_and_rejections(tiny_dataset):
    s = summarize(tiny_dataset(n_movies=3))
    assert s.frames == {"movie-00": {"train": 8}, "movie-01": {"val": 8}, "movie-02": {"train": 8}}
    assert s.total_rejected == 3 and s.rejected["movie-01"] == {"left_right_consistency": 1}
    text = format_summary(s)
    assert "frames per movie and split" in text and "rejections by reason" in text
    total = [line for line in text.splitlines() if line.startswith("TOTAL")][0].split()
    assert total == ["TOTAL", "16", "8", "24", "3"]


def test_sampled_frames_are_distinct_and_seeded(tiny_dataset):
    ds = tiny_dataset()
    a = [(s["movie_id"], s["frame_index"]) for s in sample_frames(ds, n=5, seed=1)]
    assert len(set(a)) == 5 and a == [(s["movie_id"], s["frame_index"]) for s in sample_frames(ds, n=5, seed=1)]
    assert len(sample_frames(ds, n=100)) == 16


def test_contact_sheet_has_a_row_per_frame(tiny_dataset):
    samples = sample_frames(tiny_dataset(), n=3)
    sheet = contact_sheet(samples)
    assert sheet.shape == (3 * 64 + 2 * 4, 3 * 96 + 2 * 4, 3)


def test_cli_writes_sheet_and_histogram(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["inspect", str(tiny_dataset()), "--out", str(out), "--n", "4", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "movie-01" in text and "vertical_disparity" in text and str(out) in text
    sheet = cv2.imread(str(out))
    assert sheet.shape[0] == 4 * 64 + 3 * 4
    hist = cv2.imread(str(tmp_path / "sheet_hist.png"))
    assert hist is not None and hist.shape[1] > 500
