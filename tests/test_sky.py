"""pipeline.sky: the heuristic masker on rendered frames, and model maskers from local files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.errors import BadInputError, ConfigError
from pipeline.sky import (
    HeuristicSkyConfig,
    HeuristicSkyMasker,
    ModelSkyMasker,
    NoSkyMasker,
    available_sky_maskers,
    get_sky_masker,
)
from pipeline.synthetic import render_stereo_frame


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def rendered():
    return render_stereo_frame(480, 270, 1.0, 0, letterbox=False)


def test_heuristic_finds_the_rendered_sky(rendered):
    mask = HeuristicSkyMasker().mask(rendered.left, disparity=rendered.disparity)
    assert iou(mask, rendered.sky) > 0.85


def test_heuristic_without_disparity_still_finds_it(rendered):
    mask = HeuristicSkyMasker(use_disparity=False).mask(rendered.left)
    assert iou(mask, rendered.sky) > 0.8


def test_sky_coloured_but_near_is_not_sky(rendered):
    near = np.where(rendered.sky, 20.0, rendered.disparity).astype(np.float32)  # the "sky" is nearest
    mask = HeuristicSkyMasker().mask(rendered.left, disparity=near)
    assert mask.sum() < 0.1 * rendered.sky.sum()


def test_blue_region_not_touching_the_top_is_not_sky():
    img = np.full((120, 200, 3), (90, 70, 40), np.uint8)  # brown, textured below
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)
    img[60:110, 40:160] = (90, 140, 220)  # a smooth blue pool in the lower half
    assert not HeuristicSkyMasker().mask(img).any()
    img[:30] = (90, 140, 220)  # a blue band at the top is sky
    mask = HeuristicSkyMasker().mask(img)
    assert mask[:25].mean() > 0.9 and not mask[60:110].any()


def test_textured_frame_has_no_sky():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (100, 160, 3), dtype=np.uint8)
    assert not HeuristicSkyMasker().mask(img).any()


def test_registry_names_and_errors(tmp_path):
    assert {"heuristic", "none"} <= set(available_sky_maskers())
    assert isinstance(get_sky_masker("none"), NoSkyMasker)
    assert isinstance(get_sky_masker(None), NoSkyMasker)
    with pytest.raises(ConfigError, match="valid: heuristic"):
        get_sky_masker("segformer")
    with pytest.raises(BadInputError, match="sky model file not found"):
        get_sky_masker(f"model:{tmp_path / 'missing.onnx'}")
    with pytest.raises(ConfigError, match="needs a file"):
        get_sky_masker("model:")


def blue_minus_red_torchscript(path):
    """A real TorchScript file: one-channel logits = blue - red of the normalised input."""
    import warnings

    import torch

    class BlueSky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, 2:3] - x[:, 0:1]) * 4.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # jit is deprecated, users still have such files
        torch.jit.script(BlueSky()).save(str(path))
    return path


def blue_minus_red_onnx(path):
    """A real ONNX file (onnx.helper): a 1x1 convolution to two classes, background and sky."""
    onnx = pytest.importorskip("onnx", reason="the onnx package is needed to write an ONNX test model")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((2, 3, 1, 1), np.float32)
    weights[1, 2, 0, 0], weights[1, 0, 0, 0] = 1.0, -1.0  # class 1 (sky) score = blue - red
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["scores"])],
        "bluesky",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 128])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 64, 128])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def sky_over_red_ground():
    img = np.zeros((90, 160, 3), np.uint8)
    img[:40] = (60, 120, 230)
    img[40:] = (200, 60, 40)
    truth = np.zeros((90, 160), bool)
    truth[:40] = True
    return img, truth


def test_torchscript_sky_model(tmp_path):
    path = blue_minus_red_torchscript(tmp_path / "sky.pt")
    masker = get_sky_masker(f"model:{path}")
    img, truth = sky_over_red_ground()
    assert iou(masker.mask(img), truth) > 0.95
    clone = pickle.loads(pickle.dumps(masker))  # loaded lazily again after pickling
    assert iou(clone.mask(img), truth) > 0.95


@pytest.mark.slow
def test_torch_export_sky_model(tmp_path):
    import torch

    class BlueSky(torch.nn.Module):
        def forward(self, x):
            return (x[:, 2:3] - x[:, 0:1]) * 4.0

    path = tmp_path / "sky.pt2"
    torch.export.save(torch.export.export(BlueSky(), (torch.zeros(1, 3, 256, 512),)), str(path))
    img, truth = sky_over_red_ground()
    assert iou(get_sky_masker(f"model:{path}").mask(img), truth) > 0.95


def test_onnx_sky_model_through_cv2_dnn(tmp_path):
    path = blue_minus_red_onnx(tmp_path / "sky.onnx")
    masker = ModelSkyMasker(path, input_size=(128, 64), sky_class=1)
    img, truth = sky_over_red_ground()
    assert iou(masker.mask(img), truth) > 0.95


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".pt"], ids=["onnx", "torch-export", "torchscript"])
def test_garbage_model_file_is_a_clear_error(tmp_path, suffix):
    bad = tmp_path / f"sky{suffix}"
    bad.write_bytes(b"definitely not a network")
    with pytest.raises(BadInputError, match=str(bad)):
        get_sky_masker(f"model:{bad}")


@pytest.mark.parametrize(
    "name, low, high",
    [("rocket", 0.5, 0.85), ("coffee", 0.0, 0.01), ("chelsea", 0.0, 0.01)],
    ids=["dusk-sky-photo", "no-sky-coffee", "no-sky-cat"],
)
def test_heuristic_on_real_photographs(name, low, high):
    """Real photos shipped by scikit-image: a launch pad under a dusk sky, and two without sky."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photographs")
    img = getattr(skdata, name)()
    fraction = HeuristicSkyMasker(use_disparity=False).mask(img).mean()
    assert low <= fraction <= high


def test_heuristic_is_resolution_independent():
    """A full-HD frame's texture is smooth at the pixel scale; judged at the working width it is not sky."""
    truth = render_stereo_frame(1920, 1080, 1.0, 0, letterbox=False)
    mask = HeuristicSkyMasker().mask(truth.left, disparity=truth.disparity)
    assert iou(mask, truth.sky) > 0.85
    full_size = HeuristicSkyMasker(HeuristicSkyConfig(working_width=None)).mask(truth.left, disparity=truth.disparity)
    assert iou(mask, truth.sky) > iou(full_size, truth.sky)


def test_white_wall_touching_the_top_is_not_sky():
    """Middlebury's motorcycle: an indoor scene whose bright, smooth, far wall touches the top."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the Middlebury pair")
    left, _, disparity = skdata.stereo_motorcycle()
    d = np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)
    assert HeuristicSkyMasker().mask(left, disparity=d).mean() < 0.005


def test_sky_below_a_black_bar_is_found(rendered):
    """In a narrower shot of a film that changes aspect ratio the picture starts below a bar."""
    img = rendered.left.copy()
    img[:27] = 0
    truth = rendered.sky.copy()
    truth[:27] = False
    mask = HeuristicSkyMasker().mask(img, disparity=rendered.disparity)
    assert not mask[:27].any() and iou(mask, truth) > 0.85
