"""Inference on images and on frames of the synthetic sample movie: PNG16, previews, PLY, batching."""

from __future__ import annotations

import csv
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from flows.cli import main
from pipeline.errors import BadInputError
from training.checkpoint import save_checkpoint
from training.model import ModelConfig, build_model
from training.predict import (
    DepthPredictor,
    PointCloudIntrinsics,
    PredictConfig,
    disparity_to_png16,
    png16_to_disparity,
    predict_paths,
    write_ply,
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt", build_model(ModelConfig(encoder="tiny", features=16))
    )


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    return DepthPredictor.from_checkpoint(tiny_checkpoint, device="cpu", side=128)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_prediction_has_input_resolution_and_batching_is_transparent(predictor):
    images = [_image(50, 70, s) for s in range(3)] + [_image(64, 32)]
    one_by_one = [predictor.predict([im])[0] for im in images]
    batched = predictor.predict(images, batch_size=2)
    assert [p.shape for p in batched] == [(50, 70)] * 3 + [(64, 32)]
    for a, b in zip(one_by_one, batched):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_png16_round_trip():
    d = np.linspace(-3.0, 7.0, 200).reshape(10, 20).astype(np.float32)
    png, lo, hi = disparity_to_png16(d)
    assert png.dtype == np.uint16 and png.min() == 0 and png.max() == 65535 and (lo, hi) == (-3.0, 7.0)
    np.testing.assert_allclose(png16_to_disparity(png, lo, hi), d, atol=10 / 65535)
    assert disparity_to_png16(np.ones((2, 2)))[0].max() == 0  # flat input does not divide by zero


def test_ply_geometry(tmp_path):
    disparity = np.array([[2.0, 1.0], [1.0, 0.5]])
    n = write_ply(
        tmp_path / "c.ply", disparity, np.zeros((2, 2, 3), np.uint8), PointCloudIntrinsics(fx=1.0, cx=0.0, cy=0.0)
    )
    raw = (tmp_path / "c.ply").read_bytes()
    header, body = raw.split(b"end_header\n")
    assert n == 4 and b"element vertex 4" in header and len(body) == 4 * 15
    pts = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "u1", 3)])
    np.testing.assert_allclose(pts["z"], [1.0, 2.0, 2.0, 4.0])  # nearest at 1, depth = 1 / disparity
    np.testing.assert_allclose(pts["x"], [0.0, 2.0, 0.0, 4.0])  # x = (u - cx) / fx * z


@pytest.mark.slow  # encodes the shared sample movie when no other test has yet
def test_predict_images_and_sample_movie_frames(predictor, sample_movie, tmp_path):
    movie = sample_movie()
    img_path = tmp_path / "photo.jpg"
    cv2.imwrite(str(img_path), _image(40, 60))
    config = PredictConfig(batch_size=3, ply=True, ply_stride=4, max_frames=5, every=2)
    rows = predict_paths(predictor, [img_path, movie.path], tmp_path / "out", config, progress=False).rows
    assert len(rows) == 1 + 5
    assert [r["frame_index"] for r in rows[1:]] == [0, 2, 4, 6, 8]
    with (tmp_path / "out" / "predictions.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    frame_png = cv2.imread(str(tmp_path / "out" / rows[3]["disparity_png"]), cv2.IMREAD_UNCHANGED)
    first = cv2.imread(str(tmp_path / "out" / rows[1]["disparity_png"]), cv2.IMREAD_UNCHANGED)
    assert frame_png.dtype == np.uint16 and frame_png.max() == 65535 and frame_png.shape == first.shape
    # inputs in two folders keep their path relative to the folder holding both
    assert rows[3]["disparity_png"].startswith(f"{movie.path.parent.name}/{movie.path.stem}/000004")
    assert rows[0]["disparity_png"] == f"{tmp_path.name}/photo.disparity.png"
    preview = cv2.imread(str(tmp_path / "out" / rows[0]["preview_png"]))
    assert preview.shape[0] == 40 and preview.shape[1] > 2 * 60  # input next to its colouring
    assert (tmp_path / "out" / rows[0]["ply"]).stat().st_size > 150 * 15


def test_missing_input_is_a_bad_input(predictor, tmp_path):
    with pytest.raises(BadInputError, match="no such image"):
        predict_paths(predictor, [tmp_path / "nope.png"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # found before any work
    (tmp_path / "notes.txt").write_text("not a video")
    outcome = predict_paths(predictor, [tmp_path / "notes.txt"], tmp_path / "out", progress=False)
    assert outcome.rows == [] and [f.input for f in outcome.failures] == [str(tmp_path / "notes.txt")]
    assert "neither an image nor a readable video" in outcome.failures[0].problem


def test_cli_predict_keeps_relative_paths_and_skips_unreadable_inputs(tiny_checkpoint, tmp_path):
    """Same stems in two folders and x.png beside x.jpg: every input gets its own outputs; a
    corrupt image and a bogus video are reported and skipped, the rest predicted, exit 1."""
    for d in ("a", "b"):
        (tmp_path / "in" / d).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "in" / d / "x.png"), _image(30, 40, ord(d)))
    cv2.imwrite(str(tmp_path / "in" / "a" / "x.jpg"), _image(30, 40, 7))
    (tmp_path / "in" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "in" / "clip.mp4").write_bytes(b"not a video at all")
    cv2.imwrite(str(tmp_path / "in" / "z.png"), _image(30, 40, 3))
    out = tmp_path / "out"
    # a real CLI process: in-process, a logging handler an earlier test bound to its own captured
    # stream would write to a closed file
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows",
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            str(tmp_path / "in" / "a"),
            str(tmp_path / "in" / "b" / "x.png"),
            str(tmp_path / "in" / "clip.mp4"),
            str(tmp_path / "in" / "z.png"),
            "-o",
            str(out),
            "--side",
            "64",
            "--device",
            "cpu",
            "--no-preview",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "wrote 4 predictions" in proc.stdout
    err = proc.stderr
    assert "2 input(s) could not be read" in err and "broken.png" in err and "clip.mp4" in err
    assert "Traceback" not in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.disparity.png"))
    assert written == ["a/x.jpg.disparity.png", "a/x.png.disparity.png", "b/x.disparity.png", "z.disparity.png"]
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["disparity_png"] for r in rows) == written
    assert len({r["input"] for r in rows}) == 4


def test_predictions_csv_is_written_as_it_goes(predictor, tmp_path):
    """Rows are flushed batch by batch: while the generator is paused mid-run the index already
    lists what has been written (an interrupted run keeps its index)."""
    from training.predict import PredictConfig

    (tmp_path / "pics").mkdir()
    for i in range(5):
        cv2.imwrite(str(tmp_path / "pics" / f"{i}.png"), _image(30, 40, i))
    seen = []

    class Spy:
        device = "cpu"

        def predict_batch(self, images):
            with open(tmp_path / "out" / "predictions.csv") as fh:
                seen.append(len(list(csv.DictReader(fh))))
            return predictor.predict_batch(images)

    outcome = predict_paths(
        Spy(), [tmp_path / "pics"], tmp_path / "out", PredictConfig(batch_size=2, preview=False), progress=False
    )
    assert len(outcome.rows) == 5 and seen == [0, 2, 4]


def test_cli_predict_folder(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "pics" / f"{i}.png"), _image(30, 40, i))
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(tiny_checkpoint),
            str(tmp_path / "pics"),
            "-o",
            str(tmp_path / "out"),
            "--side",
            "64",
            "--device",
            "cpu",
            "--no-preview",
        ]
    )
    assert rc == 0 and "wrote 2 predictions" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out" / "pics").iterdir()) == ["0.disparity.png", "1.disparity.png"]


def test_cli_predict_missing_checkpoint_exits_2(tmp_path, capsys):
    rc = main(["predict", "--checkpoint", str(tmp_path / "no.pt"), str(tmp_path), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no.pt" in capsys.readouterr().err
