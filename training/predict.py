"""Inference: a trained model on images and videos, to 16-bit inverse-depth PNGs, previews and PLY.

:class:`DepthPredictor` wraps a :class:`training.model.DepthModel` with the method's input rule
(longer side 384, sides multiples of 32, ImageNet normalisation) and resizes the prediction back to
the input's resolution (bicubic, as MiDaS does). It batches images of equal size and runs on the
GPU when one is present. :func:`predict_paths` is what ``depthmine predict`` calls: it walks image
files, folders of images and videos (decoded frame by frame with PyAV, in bounded memory) and
writes, per image or frame:

* ``<name>.disparity.png``: 16-bit inverse depth (relative disparity, larger = nearer), linearly
  scaled per image so that its minimum is 0 and its maximum 65535. The two numbers that undo the
  scaling (``disparity = min + png / 65535 * (max - min)``) are listed in ``predictions.csv``.
* ``<name>.preview.png``: the input next to the coloured disparity (:func:`pipeline.viz.colorize_disparity`).
* ``<name>.ply`` (optional): a coloured point cloud for given pinhole intrinsics. The model's
  disparity is only known up to scale and shift, so the cloud's depth ``1 / disparity`` is a
  relative shape (nearest point at depth 1), not metres.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.atomic import atomic_open
from pipeline.errors import BadInputError
from pipeline.video import frame_to_rgb
from pipeline.viz import colorize_disparity, hstack_tiles, save_png
from training.benchmarks.protocols import inference_size

__all__ = [
    "DepthPredictor",
    "PredictConfig",
    "PointCloudIntrinsics",
    "resolve_device",
    "disparity_to_png16",
    "png16_to_disparity",
    "write_ply",
    "iter_inputs",
    "plan_inputs",
    "predict_paths",
    "PredictOutcome",
    "PredictFailure",
    "InputFile",
    "IMAGE_SUFFIXES",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: the first CUDA device when present, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class DepthPredictor:
    """A depth model plus the preprocessing the method prescribes.

    Args:
        model: maps ``Bx3xHxW`` ImageNet-normalised images to ``BxHxW`` disparity.
        device: ``"auto"`` (GPU when present), ``"cpu"``, ``"cuda:1"``...
        side, multiple, size_rule: the input size rule (see :func:`training.benchmarks.inference_size`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device | None = "auto",
        side: int = 384,
        multiple: int = 32,
        size_rule: str = "longer",
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.side = side
        self.multiple = multiple
        self.size_rule = size_rule

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = "auto", **kwargs) -> DepthPredictor:
        """Load a depthmine (or MiDaS) checkpoint with :func:`training.checkpoint.load_model`."""
        from training.checkpoint import load_model

        model, _ = load_model(path, map_location="cpu")
        return cls(model, device, **kwargs)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return inference_size(height, width, self.side, self.multiple, self.size_rule)  # type: ignore[arg-type]

    @torch.inference_mode()
    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        input_size: tuple[int, int] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Disparity for images of one size: ``B x H x W`` float32.

        Args:
            images: HxWx3 uint8 RGB, all the same size.
            input_size: the network's ``(h, w)``; defaults to this predictor's size rule.
            output_size: ``(H, W)`` to resize the prediction to; defaults to the images' size.
        """
        from training.transforms import normalize, to_tensor

        if not images:
            return np.zeros((0, 0, 0), np.float32)
        h, w = images[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in images):
            raise ValueError("predict_batch needs images of one size; use predict() for mixed sizes")
        ih, iw = input_size or self.input_size(h, w)
        interp = cv2.INTER_AREA if ih * iw < h * w else cv2.INTER_CUBIC
        batch = torch.stack(
            [to_tensor(cv2.resize(im, (iw, ih), interpolation=interp) if (ih, iw) != (h, w) else im) for im in images]
        )
        x = normalize(batch).to(self.device, non_blocking=True)
        out = self.model(x)
        if out.dim() == 4:
            out = out.squeeze(1)
        oh, ow = output_size or (h, w)
        if out.shape[-2:] != (oh, ow):
            out = F.interpolate(out.unsqueeze(1), size=(oh, ow), mode="bicubic", align_corners=False).squeeze(1)
        return out.float().cpu().numpy()

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        """Disparity at each image's own resolution; consecutive equal-size images share a batch."""
        results: list[np.ndarray] = []
        for group in _batches(images, batch_size):
            results.extend(self.predict_batch(group))
        return results


def _batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    group: list[np.ndarray] = []
    for im in images:
        if group and (len(group) >= batch_size or im.shape[:2] != group[0].shape[:2]):
            yield group
            group = []
        group.append(im)
    if group:
        yield group


# ---------------------------------------------------------------------------------------------
# output encodings


def disparity_to_png16(disparity: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Scale disparity linearly to the full uint16 range; returns ``(png, min, max)``."""
    d = np.nan_to_num(np.asarray(disparity, np.float64))
    lo, hi = float(d.min()), float(d.max())
    span = hi - lo
    if span <= 0:
        return np.zeros(d.shape, np.uint16), lo, hi
    return np.round((d - lo) / span * 65535.0).astype(np.uint16), lo, hi


def png16_to_disparity(png: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Undo :func:`disparity_to_png16` (to within 1/65535 of the range)."""
    return (lo + png.astype(np.float64) / 65535.0 * (hi - lo)).astype(np.float32)


@dataclass
class PointCloudIntrinsics:
    """Pinhole intrinsics in pixels of the input image; ``None`` fields take defaults.

    Defaults: ``fx = width`` (a 53° horizontal field of view), ``fy = fx``, the principal point at
    the image centre.
    """

    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None

    def resolve(self, height: int, width: int) -> tuple[float, float, float, float]:
        fx = self.fx or float(width)
        fy = self.fy or fx
        cx = self.cx if self.cx is not None else (width - 1) / 2.0
        cy = self.cy if self.cy is not None else (height - 1) / 2.0
        return fx, fy, cx, cy


def write_ply(
    path: str | Path,
    disparity: np.ndarray,
    image: np.ndarray,
    intrinsics: PointCloudIntrinsics | None = None,
    max_depth_ratio: float = 20.0,
    stride: int = 1,
) -> int:
    """Write a binary little-endian PLY (x, y, z float32; red, green, blue uint8); returns the point count.

    Depth is ``1 / disparity`` with disparity clamped to ``>= max(disparity) / max_depth_ratio``
    (so the background stays at a finite distance), then scaled so the nearest point is at 1.
    """
    d = np.asarray(disparity, np.float64)[::stride, ::stride]
    rgb = np.asarray(image)[::stride, ::stride]
    h, w = np.asarray(disparity).shape
    fx, fy, cx, cy = (intrinsics or PointCloudIntrinsics()).resolve(h, w)
    dmax = float(np.nanmax(d)) if d.size else 0.0
    if not dmax > 0:
        dmax = 1.0
    z = dmax / np.maximum(np.nan_to_num(d), dmax / max_depth_ratio)
    ys, xs = np.mgrid[0:h:stride, 0:w:stride].astype(np.float64)
    pts = np.empty(
        z.size, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    pts["x"] = ((xs - cx) / fx * z).ravel()
    pts["y"] = ((ys - cy) / fy * z).ravel()
    pts["z"] = z.ravel()
    pts["red"], pts["green"], pts["blue"] = (rgb[..., c].ravel() for c in range(3))
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment depthmine predict: relative depth, nearest point at 1\n"
        f"element vertex {z.size}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with atomic_open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(pts.tobytes())
    return int(z.size)


# ---------------------------------------------------------------------------------------------
# files in, files out


@dataclass
class PredictConfig:
    """Options of :func:`predict_paths` (``depthmine predict`` maps its flags onto these).

    Attributes:
        batch_size: images (or video frames) per forward pass.
        ply: also write a point cloud per image/frame.
        intrinsics: for the point cloud.
        ply_stride: keep every n-th pixel in each direction in the point cloud.
        preview: write ``<name>.preview.png``.
        every: for videos, predict every n-th decoded frame.
        max_frames: for videos, stop after this many predicted frames (``None``: all).
        temporal: for videos, align each frame's prediction (least-squares scale and shift) to
            its predecessor's along the optical flow between the frames (``temporal_flow``
            backend, forward-backward consistent pixels only), so a per-frame model's output stops
            flickering (:func:`training.temporal.align_to_previous`; docs/METHOD.md §5).
        temporal_flow: the flow backend for ``temporal`` (a :mod:`pipeline.flow` name).
    """

    batch_size: int = 8
    ply: bool = False
    intrinsics: PointCloudIntrinsics = field(default_factory=PointCloudIntrinsics)
    ply_stride: int = 1
    preview: bool = True
    every: int = 1
    max_frames: int | None = None
    temporal: bool = False
    temporal_flow: str = "dis-medium"


@dataclass
class _Item:
    source: Path
    name: str  # output name relative to the output folder, without suffix
    frame_index: int | None
    image: np.ndarray


@dataclass
class InputFile:
    """One input file and the output name its results take (relative to the output folder,
    without suffix; video frames go below it as ``<name>/<frame>``)."""

    path: Path
    name: str
    video: bool


@dataclass
class PredictFailure:
    """An input that could not be read (or a video whose decoding stopped), and why."""

    input: str
    problem: str


@dataclass
class PredictOutcome:
    """What :func:`predict_paths` did: the rows of ``predictions.csv`` and the failed inputs."""

    rows: list[dict[str, object]] = field(default_factory=list)
    failures: list[PredictFailure] = field(default_factory=list)


def plan_inputs(paths: Sequence[str | Path]) -> list[InputFile]:
    """The input files of ``paths`` (files, or folders of images) with unique output names.

    Names keep the path relative to the deepest folder holding every input (a single file keeps
    its stem, a folder ``pics`` gives ``pics/<stem>``), so ``a/x.jpg`` and ``b/x.jpg`` become
    ``a/x`` and ``b/x``; files that would still share a name (``x.jpg`` and ``x.png``) keep their
    suffix (``x.jpg``, ``x.png``). The same file given twice is predicted once.

    Raises:
        BadInputError: a path that does not exist, or a folder without images (nothing is
            predicted: a mistake on the command line, found before any work).
    """
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise BadInputError(p, "no such image, video or folder")
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise BadInputError(p, "folder holds no images", f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}")
            files.extend(found)
        else:
            files.append(p)
    unique: dict[Path, Path] = {}
    for f in files:
        key = f.resolve()
        if key in unique:
            log.warning("%s is given twice; predicting it once", f)
            continue
        unique[key] = f
    if not unique:
        return []
    import os

    root = Path(os.path.commonpath([k.parent for k in unique]))
    # a folder argument keeps its own name: its files are named from the folder's parent
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            root = Path(os.path.commonpath([root, p.resolve().parent]))
    rel = {k: k.relative_to(root) for k in unique}
    names = {k: r.with_suffix("").as_posix() for k, r in rel.items()}
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    out = []
    for k, f in unique.items():
        name = names[k] if counts[names[k]] == 1 else rel[k].as_posix()
        out.append(InputFile(f, name, f.suffix.lower() not in IMAGE_SUFFIXES))
    return out


def iter_inputs(paths: Sequence[str | Path], config: PredictConfig | None = None) -> Iterator[_Item]:
    """Images (files, or folders of images) and video frames, in the order given; raises on the
    first unreadable input (:func:`predict_paths` skips them instead)."""
    config = config or PredictConfig()
    for entry in plan_inputs(paths):
        yield from _iter_entry(entry, config)


def _iter_entry(entry: InputFile, config: PredictConfig) -> Iterator[_Item]:
    if entry.video:
        yield from _iter_video(entry.path, entry.name, config)
    else:
        yield _Item(entry.path, entry.name, None, _read_image(entry.path))


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BadInputError(path, "not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _iter_video(path: Path, name: str, config: PredictConfig) -> Iterator[_Item]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises several error types for unreadable files
        raise BadInputError(path, f"neither an image nor a readable video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise BadInputError(path, "has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        kept = 0
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % max(1, config.every):
                    continue
                yield _Item(path, f"{name}/{index:06d}", index, frame_to_rgb(frame))
                kept += 1
                if config.max_frames is not None and kept >= config.max_frames:
                    break
        except av.FFmpegError as exc:
            raise BadInputError(path, f"decoding stopped after frame {index} ({exc})") from exc


PREDICTION_FIELDS = ["input", "frame_index", "disparity_png", "preview_png", "ply", "disparity_min", "disparity_max"]


def predict_paths(
    predictor: DepthPredictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PredictConfig | None = None,
    progress: bool = True,
) -> PredictOutcome:
    """Predict every image/frame of ``inputs`` and write the outputs under ``out_dir``.

    ``out_dir/predictions.csv`` (input, frame, files, disparity min/max) is written as the
    predictions are: a row appears (and is flushed) once that image's files exist, so an
    interrupted run leaves an index of everything it wrote. An input that cannot be read (or a
    video whose decoding fails part-way) is logged and skipped, and the others are still
    predicted; the outcome lists it.

    Raises:
        BadInputError: a path that does not exist or a folder without images, before any work.
    """
    from tqdm import tqdm

    config = config or PredictConfig()
    entries = plan_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcome = PredictOutcome()
    bar = tqdm(desc="predict", unit="img", disable=not progress)
    pending: list[_Item] = []
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=PREDICTION_FIELDS)
        writer.writeheader()
        fh.flush()

        previous: dict[str, Any] = {}  # --temporal: the last video frame (source, image, aligned disparity)

        def flush() -> None:
            if not pending:
                return
            disparities = predictor.predict_batch([it.image for it in pending])
            if config.temporal:
                disparities = _align_video_frames(pending, list(disparities), previous, config.temporal_flow)
            for it, disp in zip(pending, disparities):
                row = _write_outputs(out, it, disp, config)
                writer.writerow(row)
                outcome.rows.append(row)
            fh.flush()
            bar.update(len(pending))
            pending.clear()

        for entry in entries:
            try:
                for item in _iter_entry(entry, config):
                    if pending and (len(pending) >= config.batch_size or item.image.shape != pending[0].image.shape):
                        flush()
                    pending.append(item)
            except BadInputError as exc:
                log.warning("skipped: %s", exc)
                outcome.failures.append(PredictFailure(str(entry.path), exc.problem))
        flush()
    bar.close()
    return outcome


def _align_video_frames(items: list[_Item], preds: list[np.ndarray], previous: dict[str, Any], flow: str):
    """``--temporal``: each video frame's prediction aligned to the previous frame's (same video),
    across batches (``previous`` carries the last frame over)."""
    from pipeline.flow import get_backend
    from pipeline.temporal import temporal_flows
    from training.temporal import align_to_previous

    backend = previous.setdefault("backend", get_backend(flow))
    out = []
    for it, pred in zip(items, preds):
        last = previous.get("frame")
        if it.frame_index is not None and last is not None and last[0] == it.source and last[1].shape == it.image.shape:
            ((f, fv),) = temporal_flows([last[1], it.image], backend)
            pred = align_to_previous(pred, last[2], f, fv)[0]
        previous["frame"] = (it.source, it.image, pred) if it.frame_index is not None else None
        out.append(pred)
    return out


def _write_outputs(out: Path, item: _Item, disparity: np.ndarray, config: PredictConfig) -> dict[str, object]:
    png, lo, hi = disparity_to_png16(disparity)
    base = out / item.name
    disp_path = base.with_name(base.name + ".disparity.png")
    save_png(disp_path, png)
    row: dict[str, object] = {
        "input": str(item.source),
        "frame_index": "" if item.frame_index is None else item.frame_index,
        "disparity_png": str(disp_path.relative_to(out)),
        "preview_png": "",
        "ply": "",
        "disparity_min": f"{lo:.9g}",
        "disparity_max": f"{hi:.9g}",
    }
    if config.preview:
        prev_path = base.with_name(base.name + ".preview.png")
        save_png(prev_path, hstack_tiles([item.image, colorize_disparity(disparity)]))
        row["preview_png"] = str(prev_path.relative_to(out))
    if config.ply:
        ply_path = base.with_name(base.name + ".ply")
        write_ply(ply_path, disparity, item.image, config.intrinsics, stride=max(1, config.ply_stride))
        row["ply"] = str(ply_path.relative_to(out))
    return row
