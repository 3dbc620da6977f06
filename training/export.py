"""ONNX export of a trained depth model, with a parity check against PyTorch.

The exported graph has one input ``image`` (``B x 3 x H x W`` float32, RGB in [0, 1] normalised
with the ImageNet mean and std, exactly what :func:`training.transforms.normalize` produces) and one
output ``disparity`` (``B x H x W``, relative inverse depth). The batch is always symbolic. With
``dynamic=True`` height and width are symbolic too; otherwise the file is specialised to the export
size, which some runtimes (TensorRT, mobile) run faster.

The encoder halves the resolution five times, so the decoder's skip connections only line up for
sides that are multiples of 32. PyTorch realigns odd sizes with an interpolation whose target size
the ONNX tracer freezes as a constant, so a dynamic file failed at, say, 120 x 160 with a broadcast
error. The exported graph is therefore :class:`PadToMultiple`: the input is padded (edge pixels
repeated) on the bottom and right to the next multiple of 32, the network runs, and the output is
cropped back to ``H x W``. For multiples of 32 this is the plain model. The parity check runs the
same wrapper in PyTorch.

The legacy TorchScript-based exporter is used (``dynamo=False``): the torch.export-based one
needs ``onnxscript``, which this project does not install.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.errors import DepthmineError

__all__ = ["ParityResult", "PadToMultiple", "export_onnx", "check_onnx_parity", "DEFAULT_OPSET"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class PadToMultiple(torch.nn.Module):
    """``model`` on the input padded (replicated edges, bottom and right) to multiples of
    ``multiple``, with the output cropped back to the input's height and width.

    The pad amounts are computed from the input's shape inside ``forward``, so the ONNX tracer
    records them as shape arithmetic and a dynamic file works at any size.
    """

    def __init__(self, model: torch.nn.Module, multiple: int = 32):
        super().__init__()
        self.model = model
        self.multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        pad_h = (m - h % m) % m
        pad_w = (m - w % m) % m
        padded = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.model(padded)
        return out[:, :h, :w]


def _padded(model: torch.nn.Module) -> torch.nn.Module:
    return model if isinstance(model, PadToMultiple) else PadToMultiple(model)


@dataclass
class ParityResult:
    """How closely ONNX Runtime reproduces PyTorch on random inputs.

    ``max_abs_diff`` is the largest absolute difference over all outputs; ``max_rel_diff`` divides
    it by the largest absolute PyTorch output (disparity has an arbitrary scale, so a relative
    number is the meaningful one). ``ok`` is ``max_rel_diff <= tolerance``.
    """

    shapes: list[tuple[int, int, int, int]]
    max_abs_diff: float
    max_rel_diff: float
    tolerance: float
    ok: bool

    def summary(self) -> str:
        sizes = ", ".join(f"{b}x{c}x{h}x{w}" for b, c, h, w in self.shapes)
        verdict = "OK" if self.ok else "MISMATCH"
        return (
            f"ONNX parity {verdict}: max |onnx - torch| = {self.max_abs_diff:.3g} "
            f"({self.max_rel_diff:.3g} of the output range; tolerance {self.tolerance:g}) on {sizes}"
        )


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    height: int = 384,
    width: int = 384,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` (CPU, eval mode) wrapped in :class:`PadToMultiple` to ONNX at ``path``,
    atomically; returns the path. ``height`` and ``width`` may be any size >= 1."""
    model = _padded(model.to("cpu").eval()).eval()
    dummy = torch.zeros(1, 3, height, width)
    if dynamic:
        dynamic_axes = {
            "image": {0: "batch", 2: "height", 3: "width"},
            "disparity": {0: "batch", 1: "height", 2: "width"},
        }
    else:
        dynamic_axes = {"image": {0: "batch"}, "disparity": {0: "batch"}}
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces itself
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants are fine
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=["image"],
            output_names=["disparity"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return path


def check_onnx_parity(
    model: torch.nn.Module,
    path: str | Path,
    shapes: list[tuple[int, int, int, int]] | None = None,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> ParityResult:
    """Run the ONNX file with ONNX Runtime (CPU) and PyTorch on the same random inputs and compare.

    Args:
        shapes: input shapes ``(B, 3, H, W)`` to test; default: a batch of 2 at the file's own
            height and width, or ``(2, 3, 384, 384)`` and ``(1, 3, 120, 166)`` when those are symbolic.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - installed with the 'export' extra
        raise DepthmineError("onnxruntime is not installed: pip install 'depthmine[export]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if shapes is None:
        dims = session.get_inputs()[0].shape
        if all(isinstance(d, int) for d in dims[1:]):
            shapes = [(2, *dims[1:])]  # type: ignore[list-item]
        else:
            shapes = [(2, 3, 384, 384), (1, 3, 120, 166)]
    model = _padded(model.to("cpu").eval()).eval()
    gen = torch.Generator().manual_seed(seed)
    max_abs, max_ref = 0.0, 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.inference_mode():
            ref = model(x).numpy()
        got = session.run(["disparity"], {"image": x.numpy()})[0]
        if got.shape != ref.shape:
            raise DepthmineError(
                f"{path}: ONNX output shape {got.shape} differs from PyTorch's {ref.shape} for input {shape}"
            )
        max_abs = max(max_abs, float(np.max(np.abs(got - ref))))
        max_ref = max(max_ref, float(np.max(np.abs(ref))))
    rel = max_abs / max(max_ref, 1e-12)
    return ParityResult([tuple(s) for s in shapes], max_abs, rel, tolerance, rel <= tolerance)
