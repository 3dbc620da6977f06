"""Zero-shot evaluation end to end: known-answer models, the movie test split, tables, the CLI."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest
import torch

from flows.cli import main
from pipeline.errors import BadInputError
from training.benchmarks import BenchmarkSample, get_protocol
from training.checkpoint import save_checkpoint
from training.evaluation import BenchmarkResult, EvalReport, compare, evaluate, score_sample, write_report
from training.model import ModelConfig, build_model
from training.transforms import IMAGENET_MEAN, IMAGENET_STD


class GrayOracle(torch.nn.Module):
    """Predicts the (un-normalised) grey level: exact disparity up to scale/shift for the images below.

    ``as_depth`` predicts its inverse instead: the classic mistake of outputting depth, which no
    affine alignment in disparity space can repair.
    """

    def __init__(self, as_depth: bool = False):
        super().__init__()
        self.as_depth = as_depth

    def forward(self, x):
        rgb = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        gray = rgb.mean(1)
        return 1.0 / (gray + 0.02) if self.as_depth else gray


@pytest.fixture(scope="module")
def kitti_ramp(tmp_path_factory):
    """A KITTI-format benchmark whose image brightness is linear in the true disparity (2 m to 20 m)."""
    root = tmp_path_factory.mktemp("kitti")
    h, w = 48, 160
    disparity = np.tile(np.linspace(0.05, 0.5, w), (h, 1))
    gray = np.round(20 + 200 * (disparity - 0.05) / 0.45).astype(np.uint8)
    depth_png = np.round(256.0 / disparity).astype(np.uint16)
    depth_png[:8] = 0  # no LiDAR at the top, as in KITTI
    for i in range(2):
        cv2.imwrite(str(root / f"img{i}.png"), np.dstack([gray] * 3))
        cv2.imwrite(str(root / f"gt{i}.png"), depth_png)
    (root / "files.txt").write_text("".join(f"img{i}.png gt{i}.png\n" for i in range(2)))
    return root


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed, name in ((0, "base"), (1, "ours")):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(root / f"{name}.pt", build_model(ModelConfig(encoder="tiny", features=16))))
    return paths


def test_oracle_scores_zero_error_through_resize_and_alignment(kitti_ramp):
    report = evaluate(GrayOracle(), {"kitti": kitti_ramp}, device="cpu", progress=False)
    res = report.results["kitti"]
    assert res.n_images == 2 and res.metric == "delta_1.25"
    assert res.value == 0.0
    assert res.means["abs_rel"] < 0.01


def test_depth_instead_of_disparity_scores_badly(kitti_ramp):
    report = evaluate(GrayOracle(as_depth=True), {"kitti": kitti_ramp}, device="cpu", progress=False)
    assert report.value("kitti") > 40.0 and report.results["kitti"].means["abs_rel"] > 0.3


def test_batching_and_max_images_do_not_change_scores(kitti_ramp):
    model = GrayOracle(as_depth=True)
    one = evaluate(model, {"kitti": kitti_ramp}, device="cpu", batch_size=1, progress=False)
    two = evaluate(model, {"kitti": kitti_ramp}, device="cpu", batch_size=2, progress=False)
    first = evaluate(model, {"kitti": kitti_ramp}, device="cpu", max_images=1, progress=False)
    assert two.value("kitti") == pytest.approx(one.value("kitti"), rel=1e-5)
    assert first.results["kitti"].n_images == 1
    assert first.results["kitti"].per_image[0].metrics == pytest.approx(
        one.results["kitti"].per_image[0].metrics, rel=1e-5
    )


def test_loader_error_surfaces_from_the_reading_thread(tmp_path):
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "gt.png"), np.zeros((8, 8, 3), np.uint8))  # 8-bit: not a KITTI depth PNG
    (tmp_path / "files.txt").write_text("img.png gt.png\n")
    with pytest.raises(BadInputError, match="gt.png.*16-bit"):
        evaluate(GrayOracle(), {"kitti": tmp_path}, device="cpu", progress=False)


def test_score_sample_diw_and_gt_beyond_cap():
    diw = BenchmarkSample("x", np.zeros((2, 2, 3), np.uint8), point_pairs=[(0, 0, 1, 1, "<")])
    assert score_sample(get_protocol("diw"), diw, np.array([[2.0, 0.0], [0.0, 1.0]])) == {"whdr": 0.0}
    # a ground-truth pixel at 500 m (Sintel sky) is beyond the 72 m cap and not scored
    depth = np.array([[1.0, 2.0, 500.0]])
    sample = BenchmarkSample("s", np.zeros((1, 3, 3), np.uint8), depth=depth, valid=np.ones((1, 3), bool))
    out = score_sample(get_protocol("sintel"), sample, np.array([[1.0, 0.5, 0.7]]))
    assert out["abs_rel"] == pytest.approx(0.0, abs=1e-9)


def test_protocol_crop_limits_the_scored_pixels():
    depth = np.array([[1.0, 2.0, 4.0, 8.0]])
    sample = BenchmarkSample("c", np.zeros((1, 4, 3), np.uint8), depth=depth)
    pred = np.array([[1.0, 0.5, 0.25, 5.0]])  # the last pixel is wrong
    assert score_sample(get_protocol("nyu"), sample, pred)["delta_1.25"] > 0
    assert score_sample(get_protocol("nyu", crop=(0, 1, 0, 3)), sample, pred)["delta_1.25"] == 0.0


def _report(label, values):
    results = {k: BenchmarkResult(k, get_protocol(k).metric, v, {}, 1, 0, "") for k, v in values.items()}
    return EvalReport(label, None, results)


def test_compare_relative_improvement_by_hand():
    base = _report("midas", {"nyu": 10.0, "kitti": 20.0})
    ours = _report("ours", {"kitti": 15.0, "nyu": 12.0})
    table = compare([ours], base)
    assert table.columns == ["kitti", "nyu"]  # the paper's order, whatever the input order
    assert table.improvements[1] == pytest.approx([25.0, -20.0])
    text = table.to_text()
    assert "15.00 (+25.0%)" in text and "12.00 (-20.0%)" in text and "+2.5%" in text
    assert table.to_markdown().startswith("| model | KITTI")


def test_eval_on_tiny_dataset_test_split_writes_table(tiny_dataset, tiny_checkpoints, tmp_path):
    ds = tiny_dataset(n_movies=2, frames_per_movie=3, splits=("train", "test"))
    report = evaluate(tiny_checkpoints[0], [f"movies:{ds}"], device="cpu", progress=False)
    res = report.results["movies"]
    assert report.label == "base" and res.n_images == 3 and math.isfinite(res.value) and res.value > 0
    assert set(res.means) == {"rmse_disparity", "rmse_unit_disparity", "ordinal_error"}
    # the table reports the [0, 1] scale training uses: each frame's pixel RMSE over its label range
    assert res.metric == "rmse_unit_disparity" and 0 < res.value < 1
    assert res.means["rmse_disparity"] > res.value
    paths = write_report([report], tmp_path / "eval")
    rows = list(csv.DictReader(paths["table_csv"].open()))
    assert rows[0]["model"] == "base" and float(rows[0]["movies"]) == pytest.approx(res.value)
    assert "| base |" in paths["table_md"].read_text()
    assert paths["plot"].stat().st_size > 1000
    per_image = list(csv.DictReader(paths["per_image_csv"].open()))
    assert len(per_image) == 9  # 3 frames x 3 metrics


def test_cli_eval_compares_checkpoints_against_baseline(tiny_dataset, tiny_checkpoints, kitti_ramp, tmp_path, capsys):
    ds = tiny_dataset(n_movies=2, frames_per_movie=3, splits=("train", "test"))
    base, ours = tiny_checkpoints
    rc = main(
        [
            "eval",
            "--baseline",
            str(base),
            "--checkpoint",
            str(ours),
            "--dataset",
            f"kitti:{kitti_ramp}",
            "--dataset",
            f"movies:{ds}",
            "--out",
            str(tmp_path / "out"),
            "--no-plot",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    header = out.splitlines()[0]
    assert header.index("KITTI") < header.index("Movies") and "mean Δ% vs base" in header
    rows = list(csv.DictReader((tmp_path / "out" / "table.csv").open()))
    assert [r["model"] for r in rows] == ["base", "ours"]
    assert float(rows[0]["kitti_improvement_pct"]) == 0.0 and rows[1]["mean_improvement_pct"] != ""


def test_dataset_without_test_split_is_a_clear_error(tiny_dataset, tiny_checkpoints, capsys):
    ds = tiny_dataset(n_movies=1, frames_per_movie=2, splits=("train",))
    rc = main(["eval", "--checkpoint", str(tiny_checkpoints[0]), "--dataset", f"movies:{ds}"])
    assert rc == 2 and "no Movies test images" in capsys.readouterr().err


def test_cli_eval_bad_dataset_name_exits_2(tiny_checkpoints, capsys):
    rc = main(["eval", "--checkpoint", str(tiny_checkpoints[0]), "--dataset", "kitty:/x"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown benchmark 'kitty'; valid: diw, eth3d, kitti" in err


def test_rows_are_named_after_runs_and_never_share_a_name(tiny_dataset, tiny_checkpoints, tmp_path, capsys):
    """runs/a/checkpoints/final.pt against runs/b/checkpoints/final.pt: two named rows, the Δ%
    cells and the mean column present (both rows used to be called 'final' and the baseline's
    name matched both, so every Δ% vanished)."""
    import shutil

    ds = tiny_dataset(n_movies=2, frames_per_movie=3, splits=("train", "test"))
    paths = []
    for run, src in zip("ab", tiny_checkpoints):
        (tmp_path / "runs" / run / "checkpoints").mkdir(parents=True)
        paths.append(tmp_path / "runs" / run / "checkpoints" / "final.pt")
        shutil.copyfile(src, paths[-1])
    rc = main(
        [
            "eval",
            "--baseline",
            str(paths[0]),
            "--checkpoint",
            str(paths[1]),
            "--dataset",
            f"movies:{ds}",
            "--out",
            str(tmp_path / "out"),
            "--no-plot",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "out" / "table.csv").open()))
    assert [r["model"] for r in rows] == ["a/final", "b/final"]
    md = (tmp_path / "out" / "table.md").read_text()
    assert "mean Δ% vs a/final" in md and "%) |" in md.splitlines()[3]
    assert "[0, 1] scale" in out.splitlines()[0]
    per_image = {r["model"] for r in csv.DictReader((tmp_path / "out" / "per_image.csv").open())}
    assert per_image == {"a/final", "b/final"}

    # the same file twice: still two distinct rows; --label names them
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(paths[0]),
            "--checkpoint",
            str(paths[0]),
            "--dataset",
            f"movies:{ds}",
            "--out",
            str(tmp_path / "twice"),
            "--no-plot",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "twice" / "table.csv").open()))
    assert [r["model"] for r in rows] == ["a/final", "a/final (2)"]
    rc = main(
        [
            "eval",
            "--baseline",
            str(paths[0]),
            "--checkpoint",
            str(paths[1]),
            "--label",
            "before",
            "--label",
            "after",
            "--dataset",
            f"movies:{ds}",
            "--out",
            str(tmp_path / "named"),
            "--no-plot",
        ]
    )
    assert rc == 0
    assert [r["model"] for r in csv.DictReader((tmp_path / "named" / "table.csv").open())] == ["before", "after"]
    capsys.readouterr()
    assert (
        main(["eval", "--checkpoint", str(paths[0]), "--label", "x", "--label", "y", "--dataset", f"movies:{ds}"]) == 2
    )
    assert "2 --label for 1 models" in capsys.readouterr().err
