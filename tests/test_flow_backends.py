"""Flow backends: registry, the disparity sign convention, working resolution, pickling."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.flow import (
    DEFAULT_BACKEND,
    FlowBackend,
    available_backends,
    disparity_to_flow,
    flow_to_disparity,
    get_backend,
    resize_flow,
)

CPU_BACKENDS = ["dis-medium", "dis-fast", "dis-ultrafast", "deepflow", "sgbm", "dis-medium+sgbm"]


def textured_pair(disparity_px: float, width: int = 192, height: int = 128, seed: int = 0):
    """A right view such that the left pixel at x matches the right pixel at x - d (constant d)."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(
        rng.integers(0, 256, (height // 4, (width + 64) // 4, 3), dtype=np.uint8),
        (width + 64, height),
        interpolation=cv2.INTER_CUBIC,
    )
    big = cv2.addWeighted(big, 0.7, rng.integers(0, 256, big.shape, dtype=np.uint8), 0.3, 0)
    xs = np.arange(width, dtype=np.float32)[None, :] + 32
    ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], (height, width))
    left = cv2.remap(
        big, np.broadcast_to(xs, (height, width)).astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR
    )
    # right(x') = left(x' + d): the left pixel at x shows up at x' = x - d
    right = cv2.remap(
        big,
        np.broadcast_to(xs + disparity_px, (height, width)).astype(np.float32),
        ys.astype(np.float32),
        cv2.INTER_LINEAR,
    )
    return left, right


def test_registry_lists_every_backend():
    names = available_backends()
    for name in CPU_BACKENDS + ["ptlflow:<model>"]:
        assert name in names
    assert DEFAULT_BACKEND == "dis-medium"


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: .*dis-medium.*sgbm"):
        get_backend("raft-but-misspelled")


def test_checkpoint_for_a_backend_without_weights_is_an_error():
    with pytest.raises(ConfigError, match="takes no checkpoint"):
        get_backend("dis-medium", ckpt="weights.ckpt")


def test_convention_round_trip_and_sign():
    d = np.array([[3.0, -2.5]], np.float32)
    flow = disparity_to_flow(d)
    assert flow[0, 0, 0] == -3.0, "left x matches right x - d, so the left-to-right flow is -d"
    np.testing.assert_array_equal(flow_to_disparity(flow), d)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("disparity_px", [5.0, -5.0], ids=["in-front", "behind"])
def test_backend_recovers_sign_and_size_of_disparity(name, disparity_px):
    left, right = textured_pair(disparity_px)
    (pair,) = get_backend(name).compute([left], [right])
    assert pair.lr.shape == left.shape[:2] + (2,) and pair.lr.dtype == np.float32
    inner = (slice(16, -16), slice(24, -24))
    d = flow_to_disparity(pair.lr)[inner]
    d_back = pair.rl[..., 0][inner]  # the right pixel at x matches the left pixel at x + d
    assert np.nanmedian(d) == pytest.approx(disparity_px, abs=0.25)
    assert np.nanmedian(d_back) == pytest.approx(disparity_px, abs=0.25)


def test_working_width_rescales_flow_to_input_pixels():
    left, right = textured_pair(8.0, width=256, height=128)
    backend = get_backend("dis-medium", working_width=128)
    assert backend.working_size(256, 128) == (128, 64)
    (pair,) = backend.compute([left], [right])
    assert pair.lr.shape == (128, 256, 2)
    assert np.median(flow_to_disparity(pair.lr)[16:-16, 32:-32]) == pytest.approx(8.0, abs=0.5)


def test_resize_flow_scales_vectors():
    flow = np.zeros((10, 20, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -1.0
    out = resize_flow(flow, 40, 30)
    assert out.shape == (30, 40, 2)
    assert np.allclose(out[..., 0], 6.0) and np.allclose(out[..., 1], -3.0)


def test_sgbm_has_no_vertical_flow_and_marks_holes_nan():
    left, right = textured_pair(4.0)
    right[:, 60:100] = 128  # a blank band: nothing to match
    (pair,) = get_backend("sgbm").compute([left], [right])
    finite = np.isfinite(pair.lr[..., 0])
    assert np.all(pair.lr[..., 1][finite] == 0)
    assert (~finite).any(), "unmatched pixels come back as NaN"


def test_batch_with_different_sizes_keeps_order():
    a = textured_pair(3.0, 128, 96)
    b = textured_pair(-6.0, 160, 112, seed=1)
    pairs = get_backend("dis-fast").compute([a[0], b[0]], [a[1], b[1]])
    assert pairs[0].lr.shape[:2] == (96, 128) and pairs[1].lr.shape[:2] == (112, 160)
    assert np.median(flow_to_disparity(pairs[0].lr)) > 0 > np.median(flow_to_disparity(pairs[1].lr))


def test_mismatched_pair_sizes_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        get_backend("dis-fast").compute([np.zeros((32, 32, 3), np.uint8)], [np.zeros((32, 40, 3), np.uint8)])


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_backends_pickle_after_use(name):
    left, right = textured_pair(2.0, 64, 48)
    backend = get_backend(name, working_width=48)
    backend.compute([left], [right])  # builds the lazy engine
    clone = pickle.loads(pickle.dumps(backend))
    assert isinstance(clone, FlowBackend) and clone.name == backend.name and clone.working_width == 48
    (pair,) = clone.compute([left], [right])
    assert pair.lr.shape == (48, 64, 2)


def test_dis_results_do_not_depend_on_earlier_image_sizes():
    # OpenCV's DIS keeps a finest scale clamped by the first small image; one engine per size
    left, right = textured_pair(4.0, 256, 160)
    fresh = get_backend("dis-fast").compute([left], [right])[0].lr
    used = get_backend("dis-fast")
    used.compute([left[:24, :40]], [right[:24, :40]])
    np.testing.assert_array_equal(used.compute([left], [right])[0].lr, fresh)


def test_fused_backend_takes_horizontal_from_the_matcher_and_vertical_from_flow():
    left, right = textured_pair(-4.0)
    right[:, 60:100] = 128  # SGBM leaves this unmatched; DIS fills it
    fused = get_backend("dis-medium+sgbm")
    assert fused.name == "dis-medium+sgbm"
    (pair,) = fused.compute([left], [right])
    (flow,) = get_backend("dis-medium").compute([left], [right])
    (stereo,) = get_backend("sgbm").compute([left], [right])
    matched = np.isfinite(stereo.lr[..., 0])
    assert matched.any() and (~matched).any()
    np.testing.assert_array_equal(pair.lr[..., 0][matched], stereo.lr[..., 0][matched])
    np.testing.assert_array_equal(pair.lr[..., 0][~matched], flow.lr[..., 0][~matched])
    np.testing.assert_array_equal(pair.lr[..., 1], flow.lr[..., 1])
    assert np.isfinite(pair.lr).all()
    assert pickle.loads(pickle.dumps(fused)).name == "dis-medium+sgbm"


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(8, 8), (1, 50), (16, 24)], ids=["8x8", "1x50", "16x24"])
def test_tiny_images_do_not_crash(name, shape):
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    right = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    (pair,) = get_backend(name).compute([left], [right])
    assert pair.lr.shape == shape + (2,) and pair.rl.shape == shape + (2,)


def test_user_options_reach_the_backend_and_keep_the_named_defaults():
    from pipeline.disparity import DisparityConfig, backend_from_config, matcher_from_config

    config = DisparityConfig(flow_options={"patch_stride": 2}, matcher_options={"block_size": 7})
    from pipeline.flow.opencv import DisOptions
    from pipeline.flow.sgbm import SgbmOptions

    flow, matcher = backend_from_config(config), matcher_from_config(config)
    # the backends hold their options dataclass: dis-medium's other values kept, SGBM's defaults
    assert flow.options == DisOptions(finest_scale=0, patch_size=6, patch_stride=2)
    assert matcher.options == SgbmOptions(block_size=7)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"flow_options": {"patch_strid": 2}}, "unknown key(s) ['patch_strid']"),
        ({"flow_options": {"patch_stride": "two"}}, "patch_stride: 'two' does not fit"),
        ({"matcher_options": {"block_size": 4}}, "block_size must be odd"),
        ({"flow": "deepflow", "flow_options": {"patch_stride": 2}}, "takes no options"),
    ],
)
def test_bad_user_options_are_a_config_error_naming_the_key(options, message):
    from pipeline.disparity import DisparityConfig

    with pytest.raises(ConfigError) as err:
        DisparityConfig(**options)
    assert message in str(err.value)


def test_options_are_settable_from_overrides():
    from pipeline.ingest import ingest_config

    config = ingest_config(["disparity.matcher_options.block_size=3", "disparity.flow_options.finest_scale=1"])
    assert config.disparity.matcher_options == {"block_size": 3}
    assert config.disparity.flow_options == {"finest_scale": 1}
    with pytest.raises(ConfigError, match="disparity.matcher_options"):
        ingest_config(["disparity.matcher_options.blocksize=3"])
