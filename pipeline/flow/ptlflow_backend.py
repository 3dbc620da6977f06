"""Any ptlflow network (RAFT, SEA-RAFT, PWC-Net, ...) as a flow backend: ``ptlflow:<model>``.

ptlflow's ``get_model(name, ckpt_path="things")`` downloads named weights; this tool never
downloads at run time, so pretrained weights come from a local checkpoint file (``--ckpt FILE``),
loaded with ``torch.load(..., weights_only=True)``. A model without weights is noise, so it is
only built when the caller explicitly allows random weights (tests, timing).

Both directions of every pair go through the network in the same batch ([L, R] and [R, L]);
images are padded (edge replication) to the model's ``output_stride`` and the flow is cropped
back. On CUDA the forward pass runs under ``torch.autocast`` (bfloat16 where supported, else
float16); on the CPU in float32. ptlflow's input convention is BGR in [0, 1], B x 2 x 3 x H x W;
its output is ``{"flows": B x 1 x 2 x H x W}``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.errors import BadInputError, ConfigError
from pipeline.flow.base import FlowBackend, FlowPair

__all__ = ["PtlflowBackend", "PtlflowOptions", "pad_to_multiple", "images_to_batch"]

log = logging.getLogger(__name__)


def pad_to_multiple(batch: Any, multiple: int) -> tuple[Any, tuple[int, int]]:
    """Pad a ... x H x W tensor at the bottom/right (edge replication) to multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) to crop back to. Padding at the bottom and
    right keeps pixel coordinates unchanged, so the flow needs no offset correction.
    """
    import torch.nn.functional as F

    h, w = batch.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        lead = batch.shape[:-3]
        flat = batch.reshape(-1, *batch.shape[-3:])
        flat = F.pad(flat, (0, pw, 0, ph), mode="replicate")
        batch = flat.reshape(*lead, *flat.shape[-3:])
    return batch, (h, w)


def images_to_batch(lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> Any:
    """Stack pairs as a 2N x 2 x 3 x H x W float tensor: ``[L_i, R_i]`` then ``[R_i, L_i]``.

    RGB uint8 becomes BGR float in [0, 1] (ptlflow's convention, its models were trained on
    OpenCV-read frames). All pairs must share one size (callers group them by size).
    """
    import torch

    def to_t(img: np.ndarray) -> torch.Tensor:
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        bgr = np.ascontiguousarray(img[..., ::-1])
        return torch.from_numpy(bgr).permute(2, 0, 1).float() / 255.0

    fwd = [torch.stack([to_t(l), to_t(r)]) for l, r in zip(lefts, rights)]
    bwd = [torch.stack([p[1], p[0]]) for p in fwd]
    return torch.stack(fwd + bwd)


@dataclass
class PtlflowOptions:
    """What a user may tune of a ``ptlflow:<model>`` backend (``--set disparity.flow_options.batch_size=16``).

    ``batch_size``: pairs per forward pass (both directions of each go in one batch); ``amp``:
    half-precision autocast on CUDA.
    """

    batch_size: int = 8
    amp: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"ptlflow option batch_size must be >= 1, got {self.batch_size}")


class PtlflowBackend(FlowBackend):
    """A ptlflow model, built lazily in each process that uses it.

    Args:
        model_name: a ptlflow model name (``raft``, ``sea_raft_s``, ``raft_small`` ...).
        ckpt: a local checkpoint file (ptlflow's ``.ckpt`` with a ``state_dict``, or a bare
            state dict). Required unless ``allow_random_weights``.
        device: ``cuda``, ``cuda:1``, ``cpu``; ``None`` picks CUDA when present.
        allow_random_weights: build the model without weights (tests and timing only).
        options: :class:`PtlflowOptions` (``batch_size``: image pairs, both directions, per forward
            pass; ``amp``: autocast on CUDA), as a user sets them in ``disparity.flow_options``.
        model: an already built ``torch.nn.Module`` honouring ptlflow's forward contract (tests
            pass a stand-in here); skips building and loading.
        working_width: see :class:`FlowBackend`.
    """

    options_type = PtlflowOptions

    def __init__(
        self,
        model_name: str,
        ckpt: str | Path | None = None,
        device: str | None = None,
        allow_random_weights: bool = False,
        model: Any = None,
        working_width: int | None = None,
        **options: Any,
    ):
        super().__init__(working_width)
        self.model_name = model_name
        self.name = f"ptlflow:{model_name}"
        self.ckpt = None if ckpt is None else str(ckpt)
        self.device = device
        self.allow_random_weights = allow_random_weights
        self.options = PtlflowOptions(**options)
        if model is not None:
            self._impl_model = model
        self._validate()

    def _validate(self) -> None:
        """Fail at construction, not in a worker an hour later, on a missing checkpoint."""
        if getattr(self, "_impl_model", None) is not None:
            return
        if self.ckpt is None and not self.allow_random_weights:
            raise ConfigError(
                f"flow backend {self.name!r} needs pretrained weights: pass a local checkpoint with "
                f"--ckpt FILE (for example ptlflow's {self.model_name}-things.ckpt, downloaded beforehand; "
                "nothing is downloaded at run time)"
            )
        if self.ckpt is not None and not Path(self.ckpt).is_file():
            raise BadInputError(self.ckpt, "checkpoint file not found", f"for flow backend {self.name!r}")

    def _torch_device(self) -> Any:
        import torch

        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def read_checkpoint(self) -> tuple[dict, dict]:
        """Load ``ckpt`` safely (``weights_only=True``): returns (state dict, hyper-parameters)."""
        import torch

        try:
            raw = torch.load(self.ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BadInputError(
                self.ckpt,
                f"not loadable with torch.load(weights_only=True) ({exc.__class__.__name__})",
                "if you trust the file, load it once in your own session and re-save only its "
                "tensors: torch.save({'state_dict': model_state_dict}, NEW_FILE)",
            ) from exc
        if not isinstance(raw, dict):
            raise BadInputError(self.ckpt, "checkpoint holds no state dict")
        hyper = raw.get("hyper_parameters", {})
        state = raw.get("state_dict", raw)
        return state, hyper if isinstance(hyper, dict) else {}

    def _model(self) -> Any:
        model = getattr(self, "_impl_model", None)
        if model is not None:
            return model
        # read the weights first: a bad file fails fast, before the slow ptlflow import
        state, hyper = self.read_checkpoint() if self.ckpt is not None else (None, {})
        try:
            import ptlflow
        except ImportError as exc:  # pragma: no cover - ptlflow is a dependency
            raise ConfigError(f"flow backend {self.name!r} needs the ptlflow package") from exc
        names = ptlflow.get_model_names()
        if self.model_name not in names:
            raise ConfigError(f"unknown ptlflow model {self.model_name!r}; valid: {', '.join(sorted(names))}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ptlflow's own deprecation noise (jsonargparse)
            model = ptlflow.get_model(self.model_name)  # architecture only; weights below
        if state is not None:
            # as ptlflow.restore_model does: some models adapt their inference to these
            for key in ("train_size", "train_avg_length"):
                if key in hyper:
                    setattr(model, key, hyper[key])
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise BadInputError(
                    self.ckpt, f"weights do not fit ptlflow model {self.model_name!r}", str(exc).splitlines()[0]
                ) from exc
        else:
            log.warning("flow backend %s runs with RANDOM weights (allowed explicitly)", self.name)
        model = model.eval().to(self._torch_device())
        self._impl_model = model
        return model

    def stride(self) -> int:
        """The multiple the model needs its input sizes to be (ptlflow's ``output_stride``)."""
        return int(getattr(self._model(), "output_stride", None) or 8)

    def compute_flow(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> list[FlowPair]:
        # group by size so that each forward pass has one shape
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, l in enumerate(lefts):
            groups.setdefault(tuple(l.shape[:2]), []).append(i)
        out: list[FlowPair | None] = [None] * len(lefts)
        for idx in groups.values():
            # a chunk of k pairs is 2k network inputs (both directions)
            k = max(1, self.options.batch_size // 2)
            for s in range(0, len(idx), k):
                chunk = idx[s : s + k]
                flows = self._run(self._batch([lefts[i] for i in chunk], [rights[i] for i in chunk]))
                n = len(chunk)
                for j, i in enumerate(chunk):
                    out[i] = FlowPair(flows[j], flows[n + j])
        return out  # type: ignore[return-value]

    def _batch(self, lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray]) -> Any:
        return images_to_batch(lefts, rights)

    def _run(self, batch: Any) -> list[np.ndarray]:
        """Forward a 2N x 2 x 3 x H x W batch; returns 2N HxWx2 float32 flows."""
        import torch

        model = self._model()
        device = self._torch_device()
        padded, (h, w) = pad_to_multiple(batch, self.stride())
        padded = padded.to(device)
        use_amp = self.options.amp and device.type == "cuda"
        dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=dtype, enabled=use_amp):
            result = model({"images": padded})
        flows = result["flows"]
        if flows.dim() == 5:
            flows = flows[:, 0]
        flows = flows[..., :h, :w].float().permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(f, dtype=np.float32) for f in flows]
