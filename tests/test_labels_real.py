"""Label quality on real rectified stereo with ground truth (issue floors, not speed).

The default labeller over the shared pairs (Middlebury 2001-2006 and a KITTI 2015 frame): at least
75% of the ground-truth pixels kept with at most 2.5% of them off by more than 2 px pooled, no pair
above 8%, no pair rejected; its uncertainty ranks errors (bad-2 among the more certain half at most
a third of bad-2 among all kept). Measured numbers: bench/RESULTS.md (``python -m bench.bench_labels``).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.disparity import DisparityConfig, compute_disparity, decide_swapped_eyes, preset_config
from pipeline.errors import BadInputError
from pipeline.labelbench import SPARSIFICATION_LEVELS, label_pairs, load_pairs, pool_scores


@pytest.fixture(scope="module")
def default_labels(stereo_gt_pairs):
    return label_pairs(stereo_gt_pairs, DisparityConfig())


def test_default_meets_the_floors_pooled_and_per_pair(default_labels):
    scores = [s for s, _ in default_labels]
    pooled = pool_scores(scores)
    for s in scores:
        print(f"{s.name}: kept {s.kept_share:.3f} bad-2 {s.bad_share(2):.4f} {s.rejected_reason or ''}")
    print(f"pooled: kept {pooled.kept_share:.4f} bad-2 {pooled.bad_share(2):.4f}")
    assert [s.name for s in scores if s.rejected_reason] == []
    assert pooled.kept_share >= 0.75
    assert pooled.bad_share(2) <= 0.025
    assert max(s.bad_share(2) for s in scores) <= 0.08


def test_no_rectified_pair_is_rejected_for_vertical_disparity(default_labels):
    for score, result in default_labels:
        assert result.stats.vertical_fail_fraction == 0.0, score.name
        assert abs(result.rig.offset_px) < 0.5 and abs(result.rig.roll_degrees) < 0.1, (score.name, result.rig)


def test_uncertainty_ranks_errors(default_labels):
    pooled = pool_scores([s for s, _ in default_labels])
    half = SPARSIFICATION_LEVELS.index(0.5)
    assert pooled.sparse_bad2_share(half) <= pooled.bad_share(2) / 3
    assert pooled.sparse_bad2_share(0) <= pooled.sparse_bad2_share(2) + 1e-9


def test_precise_preset_trades_labels_for_fewer_errors(stereo_gt_pairs, default_labels):
    precise = pool_scores([s for s, _ in label_pairs(stereo_gt_pairs, preset_config("precise"))])
    default = pool_scores([s for s, _ in default_labels])
    assert precise.bad_share(2) < 0.75 * default.bad_share(2)
    assert default.kept_share > precise.kept_share > 0.65


def _shift_down(img: np.ndarray, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, 0], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.slow
@pytest.mark.parametrize("misalignment", ["shift-3px", "roll-1deg"])
def test_a_misaligned_rig_is_rejected_for_vertical_disparity(stereo_gt_pairs, misalignment):
    for pair in stereo_gt_pairs:
        right = _shift_down(pair.right, 3.0) if misalignment == "shift-3px" else _rotate(pair.right, 1.0)
        res = compute_disparity(pair.left, right)
        assert res.rejected_reason == "vertical_disparity", (pair.name, res.rig)


def test_a_small_offset_is_rectified_not_rejected(stereo_gt_pairs):
    """1 px vertical offset: accepted, and the matcher runs on the rectified pair (labels as good)."""
    from pipeline.labelbench import score_label

    pair = next(p for p in stereo_gt_pairs if p.name == "cones")
    aligned = score_label(pair.name, compute_disparity(pair.left, pair.right), pair.disparity)
    res = compute_disparity(pair.left, _shift_down(pair.right, 1.0))
    shifted = score_label(pair.name, res, pair.disparity)
    assert res.rejected_reason is None and res.rig.offset_px == pytest.approx(1.0, abs=0.2)
    assert shifted.kept_share > aligned.kept_share - 0.02
    assert shifted.bad_share(2) < aligned.bad_share(2) + 0.005
    unrectified = score_label(
        pair.name,
        compute_disparity(pair.left, _shift_down(pair.right, 1.0), DisparityConfig(rectify=False)),
        pair.disparity,
    )
    assert shifted.kept_share > unrectified.kept_share


def _pan(pair, n: int = 3):
    """``n`` frames of a slow pan over the pair: overlapping crops, as a shot would show it."""
    h, w = pair.left.shape[:2]
    cw = int(w * 0.8)
    for x in np.linspace(0, w - cw, n).astype(int):
        yield np.ascontiguousarray(pair.left[:, x : x + cw]), np.ascontiguousarray(pair.right[:, x : x + cw])


@pytest.mark.slow
def test_swapped_eyes_are_flagged_and_normal_eyes_are_not(stereo_gt_pairs):
    from pipeline.ingest import IngestConfig

    threshold = IngestConfig().swap_min_confidence
    for pair in stereo_gt_pairs:
        normal = [compute_disparity(l, r).swap_evidence for l, r in _pan(pair)]
        swapped = [compute_disparity(r, l).swap_evidence for l, r in _pan(pair)]
        ok, rev = decide_swapped_eyes(normal), decide_swapped_eyes(swapped)
        assert not (ok.swapped and ok.confidence >= threshold), (pair.name, ok)
        assert rev.swapped and rev.confidence >= threshold, (pair.name, rev)


# -- the benchmark's input checks ------------------------------------------------------------


def _write_pair(folder, name="p", size=(64, 48), right_size=None, depth=np.uint8, grey=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    img = rng.integers(0, 255, (h, w) if grey else (h, w, 3)).astype(depth)
    cv2.imwrite(str(folder / f"{name}_left.png"), img)
    rw, rh = right_size or size
    cv2.imwrite(str(folder / f"{name}_right.png"), img[:rh, :rw])
    np.savez(folder / f"{name}_disp.npz", disparity=np.full((h, w), 3.0, np.float32))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-right", "p_right.png: missing"),
        ("sizes-differ", "p_right.png: 60x40 but the left view is 64x48"),
        ("16-bit", "p_left.png: uint16 image"),
        ("grey", "p_left.png: grey image"),
        ("no-pairs", "no NAME_disp.npz files"),
    ],
)
def test_benchmark_refuses_bad_pairs_with_one_line(tmp_path, case, message):
    folder = tmp_path / "pairs"
    if case == "missing-right":
        _write_pair(folder)
        (folder / "p_right.png").unlink()
    elif case == "sizes-differ":
        _write_pair(folder, right_size=(60, 40))
    elif case == "16-bit":
        _write_pair(folder, depth=np.uint16)
    elif case == "grey":
        _write_pair(folder, grey=True)
    else:
        folder.mkdir()
    with pytest.raises(BadInputError, match=message.replace(".", r"\.")) as err:
        load_pairs(folder)
    assert "\n" not in str(err.value)


def test_benchmark_script_prints_tables_and_pictures(stereo_gt_dir, tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_labels",
            "--pairs",
            str(stereo_gt_dir),
            "--only",
            "balanced",
            "--pictures",
            str(tmp_path / "pics"),
            "--json",
            str(tmp_path / "labels.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "| balanced |" in out.stdout and "Sparsification" in out.stdout and "| venus |" in out.stdout
    assert len(list((tmp_path / "pics").glob("*.png"))) == 8
    data = json.loads((tmp_path / "labels.json").read_text())
    assert set(data) == {"balanced", "flow-only"} and len(data["balanced"]["pairs"]) == 8
    bad = subprocess.run(
        [sys.executable, "-m", "bench.bench_labels", "--pairs", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such folder" in bad.stderr


def test_natural_view_differences_are_below_the_tone_tolerance(stereo_gt_pairs):
    from pipeline.disparity import tone_difference

    tolerance = DisparityConfig().photometric_tolerance
    diffs = {p.name: tone_difference(p.left, p.right) for p in stereo_gt_pairs}
    assert max(diffs.values()) < tolerance, diffs
    brighter = {p.name: tone_difference(p.left, _gamma_gain(p.right)) for p in stereo_gt_pairs}
    assert min(brighter.values()) > tolerance, brighter


def _gamma_gain(img: np.ndarray, gamma: float = 1.3, gain: float = 0.9) -> np.ndarray:
    x = (img.astype(np.float32) / 255.0) ** gamma * gain
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_a_tone_difference_between_the_eyes_costs_few_labels(stereo_gt_pairs, default_labels):
    """A gamma and gain between the eyes (grading, beam-splitter rigs): the right view is matched
    to the left's tones first. Without that, measured: 68% kept; with it: within 2 points of the
    untouched pairs."""
    from pipeline.labelbench import GroundTruthPair

    toned = [GroundTruthPair(p.name, p.left, _gamma_gain(p.right), p.disparity) for p in stereo_gt_pairs]
    pooled = pool_scores([s for s, _ in label_pairs(toned, DisparityConfig())])
    untouched = pool_scores([s for s, _ in default_labels])
    assert pooled.kept_share > untouched.kept_share - 0.03
    assert pooled.bad_share(2) <= 0.025
    raw = pool_scores([s for s, _ in label_pairs(toned[:3], DisparityConfig(photometric_tolerance=None))])
    fixed = pool_scores([s for s, _ in label_pairs(toned[:3], DisparityConfig())])
    assert fixed.kept_share > raw.kept_share + 0.03
