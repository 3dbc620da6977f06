"""Benchmark protocols and loaders, on small files written here in each public format."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from pipeline.errors import BadInputError, ConfigError
from training.benchmarks import LOADERS, PROTOCOLS, get_protocol, inference_size, open_benchmark
from training.benchmarks.sintel import write_dpt

RNG = np.random.default_rng(0)


def _img(h=24, w=32):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _write_rgb(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _write_u16(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array.astype(np.uint16))


# --- protocols -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, expected",
    [
        pytest.param("nyu", (480, 640), (288, 384), id="nyu-longer-384"),
        pytest.param("kitti", (375, 1242), (384, 1280), id="kitti-shorter-384"),
        pytest.param("eth3d", (4032, 6048), (256, 384), id="eth3d-landscape"),
        pytest.param("diw", (500, 375), (384, 288), id="diw-portrait"),
    ],
)
def test_input_size_rule(name, size, expected):
    h, w = get_protocol(name).input_size(*size)
    assert (h, w) == expected and h % 32 == 0 and w % 32 == 0


def test_caps_and_metrics_match_the_paper():
    caps = {n: p.depth_cap for n, p in PROTOCOLS.items()}
    assert caps == {
        "diw": None,
        "eth3d": 72.0,
        "sintel": 72.0,
        "kitti": 80.0,
        "nyu": 10.0,
        "tum": 10.0,
        "movies": None,
        "movies_temporal": None,
    }
    assert [PROTOCOLS[n].metric for n in ("diw", "eth3d", "kitti")] == ["whdr", "abs_rel", "delta_1.25"]
    assert set(LOADERS) == set(PROTOCOLS)


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(ConfigError, match="kitti"):
        get_protocol("kitty")
    assert inference_size(10, 1000)[0] == 32  # never below one multiple


# --- loaders ---------------------------------------------------------------------------------


def test_nyu_v73_mat_with_split_file(tmp_path):
    n, h, w = 4, 12, 16
    images = RNG.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    depths = RNG.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:  # MATLAB v7.3 = HDF5, transposed
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
    scipy.io.savemat(tmp_path / "splits.mat", {"testNdxs": np.array([[2], [4]]), "trainNdxs": np.array([[1], [3]])})
    loader = open_benchmark("nyu", tmp_path)
    samples = list(loader)
    assert len(loader) == 2 and [s.sample_id for s in samples] == ["0002", "0004"]
    np.testing.assert_array_equal(samples[0].image, images[1])
    np.testing.assert_array_equal(samples[1].depth, depths[3])


def test_nyu_without_split_is_a_clear_error(tmp_path):
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = np.zeros((1, 3, 4, 4), np.uint8)
        f["depths"] = np.ones((1, 4, 4), np.float32)
    with pytest.raises(BadInputError, match="splits.mat"):
        open_benchmark("nyu", tmp_path)
    (tmp_path / "nyu_test_indices.txt").write_text("1, 7\n")
    with pytest.raises(BadInputError, match=r"outside 1\.\.1"):
        open_benchmark("nyu", tmp_path / "nyu_depth_v2_labeled.mat")


def test_kitti_png_list(tmp_path):
    depth_m = np.zeros((10, 20), np.float32)
    depth_m[2:5, 3:9] = 12.5
    _write_rgb(tmp_path / "img" / "a.png", _img(10, 20))
    _write_u16(tmp_path / "gt" / "a.png", depth_m * 256)
    (tmp_path / "files.txt").write_text("# eigen\nimg/a.png gt/a.png\n")
    (s,) = list(open_benchmark("kitti", tmp_path))
    assert s.valid.sum() == 18 and np.all(s.depth[s.valid] == 12.5) and not s.valid[0, 0]


def test_kitti_missing_listed_file_names_it(tmp_path):
    (tmp_path / "files.txt").write_text("img/a.png gt/a.png\n")
    with pytest.raises(BadInputError, match="a.png.*missing"):
        open_benchmark("kitti", tmp_path / "files.txt")


def test_kitti_rejects_8bit_depth(tmp_path):
    _write_rgb(tmp_path / "img.png", _img(4, 4))
    _write_rgb(tmp_path / "gt.png", _img(4, 4))
    (tmp_path / "files.txt").write_text("img.png gt.png\n")
    with pytest.raises(BadInputError, match="16-bit"):
        list(open_benchmark("kitti", tmp_path))


def test_eth3d_raw_float_depth(tmp_path):
    scene = tmp_path / "courtyard"
    _write_rgb(scene / "images" / "dslr_images" / "DSC_0001.JPG", _img(6, 8))
    depth = np.full((6, 8), 4.0, "<f4")
    depth[0, 0] = np.inf
    (scene / "ground_truth_depth" / "dslr_images").mkdir(parents=True)
    depth.tofile(scene / "ground_truth_depth" / "dslr_images" / "DSC_0001.JPG")
    (s,) = list(open_benchmark("eth3d", tmp_path))
    assert s.sample_id == "courtyard/DSC_0001.JPG" and s.valid.sum() == 47 and s.depth[1, 1] == 4.0
    depth[:3].tofile(scene / "ground_truth_depth" / "dslr_images" / "DSC_0001.JPG")
    with pytest.raises(BadInputError, match="expected 192"):
        list(open_benchmark("eth3d", scene))


def test_sintel_dpt(tmp_path):
    depth = RNG.uniform(1, 50, (5, 7)).astype(np.float32)
    _write_rgb(tmp_path / "training" / "final" / "alley_1" / "frame_0001.png", _img(5, 7))
    (tmp_path / "training" / "depth" / "alley_1").mkdir(parents=True)
    write_dpt(tmp_path / "training" / "depth" / "alley_1" / "frame_0001.dpt", depth)
    (s,) = list(open_benchmark("sintel", tmp_path))
    assert s.sample_id == "alley_1/frame_0001"
    np.testing.assert_array_equal(s.depth, depth)


def test_sintel_bad_tag_is_named(tmp_path):
    _write_rgb(tmp_path / "final" / "a" / "frame_0001.png", _img(2, 2))
    (tmp_path / "depth" / "a").mkdir(parents=True)
    bad = tmp_path / "depth" / "a" / "frame_0001.dpt"
    bad.write_bytes(np.array([1.0], "<f4").tobytes() + np.array([2, 2], "<i4").tobytes() + bytes(16))
    with pytest.raises(BadInputError, match="frame_0001.dpt.*bad .dpt tag"):
        list(open_benchmark("sintel", tmp_path))


@pytest.mark.parametrize(
    "with_associations", [pytest.param(True, id="associations.txt"), pytest.param(False, id="rgb.txt+depth.txt")]
)
def test_tum_depth_over_5000(tmp_path, with_associations):
    seq = tmp_path / "rgbd_dataset_freiburg2_desk"
    _write_rgb(seq / "rgb" / "1.000.png", _img(4, 6))
    _write_rgb(seq / "rgb" / "2.000.png", _img(4, 6))
    _write_u16(seq / "depth" / "1.010.png", np.full((4, 6), 10000))
    _write_u16(seq / "depth" / "2.015.png", np.full((4, 6), 5000))
    if with_associations:
        (seq / "associations.txt").write_text(
            "1.000 rgb/1.000.png 1.010 depth/1.010.png\n2.000 rgb/2.000.png 2.015 depth/2.015.png\n"
        )
    else:
        (seq / "rgb.txt").write_text("# color images\n1.000 rgb/1.000.png\n2.000 rgb/2.000.png\n")
        (seq / "depth.txt").write_text(
            "# depth maps\n1.010 depth/1.010.png\n2.015 depth/2.015.png\n1.5 depth/none.png\n"
        )
    samples = list(open_benchmark("tum", tmp_path))
    assert [float(s.depth[0, 0]) for s in samples] == [2.0, 1.0]


def test_diw_csv_one_based_pairs(tmp_path):
    _write_rgb(tmp_path / "DIW_test" / "x.thumb.png", _img(20, 30))
    (tmp_path / "DIW_Annotations").mkdir()
    (tmp_path / "DIW_Annotations" / "DIW_test.csv").write_text("./DIW_test/x.thumb.png\n1,2,20,30,>,30,20\n")
    (s,) = list(open_benchmark("diw", tmp_path))
    assert s.point_pairs == [(0, 1, 19, 29, ">")]


@pytest.mark.parametrize(
    "annotation, match",
    [
        pytest.param("1,2,3,4,?", "yA,xA,yB,xB", id="bad-relation"),
        pytest.param("1,2,99,4,<", "outside", id="out-of-image"),
        pytest.param("1,2,3,4,<,31,20", "annotation says 31x20", id="size-mismatch"),
    ],
)
def test_diw_malformed(tmp_path, annotation, match):
    _write_rgb(tmp_path / "x.png", _img(20, 30))
    (tmp_path / "DIW_test.csv").write_text(f"x.png\n{annotation}\n")
    with pytest.raises(BadInputError, match=match):
        list(open_benchmark("diw", tmp_path / "DIW_test.csv"))


def test_movies_test_split_from_shards(tiny_dataset):
    ds = tiny_dataset(n_movies=2, frames_per_movie=3, splits=("train", "test"))
    samples = list(open_benchmark("movies", ds))
    assert len(samples) == 3 and all(s.sample_id.startswith("movie-01/") for s in samples)
    assert samples[0].disparity.shape == samples[0].valid.shape == samples[0].image.shape[:2]


def test_missing_path_is_a_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        open_benchmark("sintel", tmp_path / "nowhere")
