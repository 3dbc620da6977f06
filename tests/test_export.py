"""ONNX export and its parity with PyTorch (ONNX Runtime on the CPU)."""

from __future__ import annotations

import onnx
import pytest
import torch

from flows.cli import main
from training.checkpoint import load_model, save_checkpoint
from training.export import check_onnx_parity, export_onnx
from training.model import ModelConfig, build_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.pt", build_model(ModelConfig(encoder="tiny", features=16))
    )


def test_dynamic_export_matches_pytorch_at_several_sizes(tiny_checkpoint, tmp_path):
    model, _ = load_model(tiny_checkpoint)
    path = export_onnx(model, tmp_path / "m.onnx", 64, 96, dynamic=True)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["disparity"]
    result = check_onnx_parity(model, path, shapes=[(2, 3, 64, 96), (1, 3, 128, 64)])
    assert result.ok and result.max_rel_diff < 1e-4, result.summary()


def test_parity_check_catches_a_different_model(tiny_checkpoint, tmp_path):
    model, _ = load_model(tiny_checkpoint)
    path = export_onnx(model, tmp_path / "m.onnx", 64, 64)
    torch.manual_seed(5)
    other = build_model(ModelConfig(encoder="tiny", features=16))
    result = check_onnx_parity(other, path)
    assert result.shapes == [(2, 3, 64, 64)] and not result.ok and "MISMATCH" in result.summary()


def test_cli_export_prints_parity(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--height", "64", "--width", "64"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file() and "ONNX parity OK" in text and "2x3x64x64" in text


def test_dynamic_export_runs_at_sizes_that_are_not_multiples_of_32(tiny_checkpoint, tmp_path):
    """onnxruntime used to fail with a broadcast error at 120x160 (the decoder's realignment size
    was frozen by the tracer). The graph pads to multiples of 32 inside and crops back."""
    import numpy as np
    import onnxruntime as ort

    from training.export import PadToMultiple

    model, _ = load_model(tiny_checkpoint)
    path = export_onnx(model, tmp_path / "m.onnx", 64, 96, dynamic=True)
    result = check_onnx_parity(model, path, shapes=[(1, 3, 120, 160), (2, 3, 75, 101), (1, 3, 64, 96)])
    assert result.ok and result.max_rel_diff < 1e-4, result.summary()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 75, 101)
    got = session.run(["disparity"], {"image": x.numpy()})[0]
    assert got.shape == (1, 75, 101)
    # the wrapper is the plain model at multiples of 32
    x32 = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(PadToMultiple(model)(x32), model(x32))
        ref = PadToMultiple(model)(x).numpy()
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_cli_dynamic_export_checks_a_non_square_odd_size(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    rc = main(
        ["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--height", "64", "--width", "96", "--dynamic"]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "ONNX parity OK" in text, text
    sizes = text.split(" on ")[-1]
    odd = [s for s in sizes.strip().split(", ") if any(int(v) % 32 for v in s.split("x")[2:])]
    assert odd and all(s.split("x")[2] != s.split("x")[3] for s in odd), sizes
