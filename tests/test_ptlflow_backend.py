"""The ptlflow backend on the CPU: input preparation, batching, padding, flow to disparity.

No pretrained weights exist here, so most tests drive the backend with a stand-in network that
honours ptlflow's forward contract and returns a known flow; one test runs a real ptlflow
architecture (raft_small) with random weights saved to and loaded from a local checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.disparity import DisparityConfig, compute_disparity
from pipeline.errors import BadInputError, ConfigError
from pipeline.flow import get_backend
from pipeline.flow.ptlflow_backend import PtlflowBackend, PtlflowOptions, images_to_batch, pad_to_multiple


class KnownFlow(torch.nn.Module):
    """ptlflow's contract: ``{"images": B x 2 x 3 x H x W}`` -> ``{"flows": B x 1 x 2 x H x W}``.

    The horizontal flow is ``gain * (mean(second) - mean(first)) + x / 1000`` (x = column of the
    padded input) and the vertical flow is 0, so both directions of a pair of flat images with
    different brightness give opposite flows, and the column term reveals any misplaced padding.
    """

    output_stride = 16

    def __init__(self, gain: float = 10.0):
        super().__init__()
        self.gain = gain
        self.calls: list[tuple[int, ...]] = []

    def forward(self, inputs):
        images = inputs["images"]
        self.calls.append(tuple(images.shape))
        b, _, _, h, w = images.shape
        delta = (images[:, 1].mean(dim=(1, 2, 3)) - images[:, 0].mean(dim=(1, 2, 3))) * self.gain
        cols = torch.arange(w, dtype=torch.float32).view(1, 1, w) / 1000.0
        u = delta.view(b, 1, 1) + cols.expand(b, h, w)
        flows = torch.stack([u, torch.zeros_like(u)], dim=1)
        return {"flows": flows[:, None]}


def flat(value: int, h: int = 50, w: int = 70) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_images_to_batch_layout_channels_and_range():
    left = np.zeros((4, 6, 3), np.uint8)
    left[..., 0] = 255  # pure red, RGB
    right = np.full((4, 6, 3), 51, np.uint8)
    batch = images_to_batch([left], [right])
    assert tuple(batch.shape) == (2, 2, 3, 4, 6) and batch.dtype == torch.float32
    # forward [L, R]: channel order is BGR (ptlflow's), values in [0, 1]
    assert torch.all(batch[0, 0, 2] == 1.0) and torch.all(batch[0, 0, 0] == 0.0)
    assert torch.allclose(batch[0, 1], torch.full((3, 4, 6), 0.2))
    # backward [R, L] follows all forward entries
    assert torch.equal(batch[1, 0], batch[0, 1]) and torch.equal(batch[1, 1], batch[0, 0])


def test_pad_to_multiple_replicates_bottom_right_only():
    x = torch.arange(2 * 2 * 3 * 5 * 7, dtype=torch.float32).view(2, 2, 3, 5, 7)
    padded, (h, w) = pad_to_multiple(x, 8)
    assert (h, w) == (5, 7) and tuple(padded.shape) == (2, 2, 3, 8, 8)
    assert torch.equal(padded[..., :5, :7], x), "original pixels keep their coordinates"
    assert torch.equal(padded[..., 7, :7], x[..., 4, :]) and torch.equal(padded[..., :5, 7], x[..., :, 6])
    same, _ = pad_to_multiple(x[..., :4, :4], 4)
    assert tuple(same.shape[-2:]) == (4, 4)


def test_padding_to_the_model_stride_and_cropping_back():
    net = KnownFlow()
    backend = PtlflowBackend("stand-in", model=net)
    (pair,) = backend.compute([flat(40)], [flat(40)])
    assert net.calls == [(2, 2, 3, 64, 80)], "50x70 padded to multiples of the stride 16"
    assert pair.lr.shape == (50, 70, 2) and pair.lr.dtype == np.float32
    np.testing.assert_allclose(pair.lr[0, :, 0], np.arange(70) / 1000.0, atol=1e-6)


def test_batches_hold_both_directions_and_keep_order():
    net = KnownFlow()
    backend = PtlflowBackend("stand-in", model=net, batch_size=4)
    assert backend.options == PtlflowOptions(batch_size=4)  # the backend holds its options object
    values = [(20, 60), (100, 80), (30, 30), (200, 50), (10, 250)]
    pairs = backend.compute([flat(a) for a, _ in values], [flat(b) for _, b in values])
    assert [c[0] for c in net.calls] == [4, 4, 2], "2 pairs (4 inputs) per pass, then the rest"
    for (a, b), pair in zip(values, pairs):
        expected = (b - a) / 255.0 * 10.0
        assert pair.lr[0, 0, 0] == pytest.approx(expected, abs=1e-4)
        assert pair.rl[0, 0, 0] == pytest.approx(-expected, abs=1e-4)


def test_pairs_of_different_sizes_go_in_separate_passes():
    net = KnownFlow()
    backend = PtlflowBackend("stand-in", model=net)
    pairs = backend.compute([flat(10, 32, 32), flat(10, 40, 60)], [flat(90, 32, 32), flat(90, 40, 60)])
    assert sorted(c[-2:] for c in net.calls) == [(32, 32), (48, 64)]
    assert pairs[0].lr.shape == (32, 32, 2) and pairs[1].lr.shape == (40, 60, 2)


def test_flow_to_disparity_through_compute_disparity():
    # the right view is brighter: forward flow u = +2 px (+ tiny column term) -> disparity -2
    # (the stand-in network reads brightness as motion, so the tone matching stays off here)
    backend = PtlflowBackend("stand-in", model=KnownFlow(gain=2.0 * 255.0 / 100.0))
    config = DisparityConfig(sky="none", edge_threshold_px=None, matcher=None, photometric_tolerance=None)
    res = compute_disparity(flat(50), flat(150), config, backend=backend)
    expected = -(2.0 + np.arange(70) / 1000.0)
    np.testing.assert_allclose(res.disparity[10], expected, atol=1e-4)
    assert res.valid[:, :60].all(), "forward and backward flows agree within 2 px"
    assert res.stats.vertical_fail_fraction == 0.0


def test_working_width_with_a_network_backend():
    net = KnownFlow(gain=4.0 * 255.0 / 100.0)  # 4 px at working resolution
    backend = PtlflowBackend("stand-in", model=net, working_width=35)
    (pair,) = backend.compute([flat(50)], [flat(150)])
    assert net.calls[0][-1] == 48  # 35 columns padded to 48
    assert pair.lr.shape == (50, 70, 2)
    assert np.median(pair.lr[..., 0]) == pytest.approx(8.0, abs=0.1), "4 px at half width is 8 px"


def test_a_model_without_checkpoint_is_refused():
    with pytest.raises(ConfigError, match="needs pretrained weights.*--ckpt"):
        get_backend("ptlflow:raft")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BadInputError, match="checkpoint file not found"):
        get_backend("ptlflow:raft", ckpt=tmp_path / "raft-things.ckpt")


@pytest.mark.slow  # imports ptlflow (~6 s)
def test_unknown_ptlflow_model_lists_valid_ones():
    backend = get_backend("ptlflow:not_a_model", allow_random_weights=True)
    with pytest.raises(ConfigError, match="valid: .*raft_small"):
        backend.compute([flat(1)], [flat(2)])


@pytest.mark.slow
def test_real_ptlflow_model_end_to_end_from_a_local_checkpoint(tmp_path):
    """raft_small with random weights: saved, loaded with weights_only, run on small pairs.

    (Below ~128x192 raft_small's correlation pyramid degenerates and random weights give NaN.)
    """
    import ptlflow

    torch.manual_seed(0)
    ckpt = tmp_path / "raft_small-random.ckpt"
    torch.save(
        {"state_dict": ptlflow.get_model("raft_small").state_dict(), "hyper_parameters": {"train_size": [368, 496]}},
        ckpt,
    )
    backend = get_backend("ptlflow:raft_small", ckpt=ckpt, device="cpu", batch_size=4)
    rng = np.random.default_rng(0)
    lefts = [rng.integers(0, 256, (125, 190, 3), dtype=np.uint8) for _ in range(3)]
    rights = [np.roll(l, -3, axis=1) for l in lefts]
    pairs = backend.compute(lefts, rights)
    assert len(pairs) == 3
    for pair in pairs:
        assert pair.lr.shape == (125, 190, 2) and np.isfinite(pair.lr).all() and np.isfinite(pair.rl).all()
    res = compute_disparity(lefts[0], rights[0], DisparityConfig(sky="none"), backend=backend)
    assert res.disparity.shape == (125, 190) and res.stats.valid_fraction >= 0.0

    assert list(backend._model().train_size) == [368, 496], "ptlflow's hyper-parameters are restored"
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {"not.a.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(BadInputError, match="do not fit"):
        get_backend("ptlflow:raft_small", ckpt=wrong).compute(lefts[:1], rights[:1])


def test_checkpoint_that_is_not_weights_only_is_refused(tmp_path):
    import argparse

    unsafe = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1.0)}, unsafe)
    backend = get_backend("ptlflow:raft_small", ckpt=unsafe)
    with pytest.raises(BadInputError, match="weights_only=True"):
        backend.compute([flat(1)], [flat(2)])


def test_get_backend_accepts_a_prebuilt_model():
    """``get_backend("ptlflow:NAME", model=...)`` hands a built network to the backend (no weights needed)."""
    from pipeline.flow import get_backend

    sentinel = object()
    backend = get_backend("ptlflow:raft_small", model=sentinel)
    assert backend._model() is sentinel and backend.name == "ptlflow:raft_small"
