"""Sky masks: a weight-free heuristic by default, a segmentation model from a local file on demand.

Flow is meaningless on a blank sky, yet "farthest" is the right label for it, so
:mod:`pipeline.disparity` gives sky pixels the frame's minimum disparity. Maskers by name
(:func:`get_sky_masker`):

* ``heuristic`` (default, no weights): a pixel is sky when it is sky-coloured (blue, or bright
  and unsaturated: overcast, haze), smooth (low image gradient), far (disparity, when given, in
  the far part of the frame's consistent matches; judged per region, since flow on a blank sky is
  unreliable), and belongs to a region connected to the top border of the frame. Morphology cleans the mask; small regions are dropped.
* ``model:PATH``: a segmentation network from a local file: ``.onnx`` through ``cv2.dnn``,
  ``.pt2`` through ``torch.export.load``, any other suffix as TorchScript (``torch.jit.load``). It must map a 1x3xHxW float image (RGB,
  ImageNet-normalised) to 1xCxhxw scores; with C == 1 the sky probability is ``sigmoid``, else
  the arg-max class equals ``sky_class``.
* ``none``: no sky.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from pipeline.errors import BadInputError, ConfigError
from pipeline.layouts import frame_bars
from pipeline.registry import Registry

__all__ = [
    "SkyMasker",
    "HeuristicSkyMasker",
    "HeuristicSkyConfig",
    "ModelSkyMasker",
    "NoSkyMasker",
    "get_sky_masker",
    "available_sky_maskers",
    "register_sky_masker",
    "MASKERS",
]

log = logging.getLogger(__name__)


class SkyMasker:
    """Base class: one required method, :meth:`mask`. Subclasses must be picklable."""

    name = "base"

    def mask(
        self, image: np.ndarray, disparity: np.ndarray | None = None, valid: np.ndarray | None = None
    ) -> np.ndarray:
        """The sky mask of ``image`` (HxWx3 uint8 RGB) as HxW bool.

        Args:
            image: the left view.
            disparity: the left view's disparity (same size), when known; maskers may use it.
            valid: which disparities passed the checks.
        """
        raise NotImplementedError

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_impl")}


class NoSkyMasker(SkyMasker):
    """Never sky."""

    name = "none"

    def mask(self, image, disparity=None, valid=None):
        return np.zeros(image.shape[:2], bool)


@dataclass
class HeuristicSkyConfig:
    """Thresholds of the heuristic sky masker (image values are 0-255).

    Attributes:
        blue_hue: OpenCV hue range (0-180) counted as blue sky.
        min_blue_saturation, min_blue_value: a blue pixel must be at least this saturated/bright.
        max_grey_saturation, min_grey_value: overcast/hazy sky: unsaturated and at least this bright.
        max_gradient: the mean gray-level gradient (Sobel, per pixel) allowed in a 9x9 window.
        region_far_quantile: with a disparity, a sky region is dropped when the median of its
            consistent (valid) matches lies above this quantile of the frame's valid disparities.
            Consistent matches in the nearer half of the frame are never sky.
        min_area_fraction: sky regions smaller than this fraction of the frame are dropped.
        skyline_growth_px: grow the sky by up to this many pixels over sky-coloured pixels.
        min_top_contact_fraction: a (mostly blue) sky region must touch the top of the picture
            over at least this fraction of the width.
        min_top_contact_fraction_grey: the same for grey/white regions (walls and ceilings look
            like an overcast sky; they rarely span the top of the frame).
        working_width: wider frames are judged at this width (the pixel-sized thresholds above
            are meant for it) and the mask is scaled back; None judges at full size.
    """

    blue_hue: tuple[int, int] = (85, 135)
    min_blue_saturation: int = 40
    min_blue_value: int = 35
    max_grey_saturation: int = 45
    min_grey_value: int = 150
    max_gradient: float = 6.0
    region_far_quantile: float = 0.4
    working_width: int | None = 480
    min_top_contact_fraction: float = 0.05
    min_top_contact_fraction_grey: float = 0.25
    min_area_fraction: float = 0.005
    skyline_growth_px: int = 6


class HeuristicSkyMasker(SkyMasker):
    """Colour, smoothness, far and uniform disparity, connected to the top border."""

    name = "heuristic"

    def __init__(self, config: HeuristicSkyConfig | None = None, use_disparity: bool = True):
        self.config = config or HeuristicSkyConfig()
        self.use_disparity = use_disparity

    def mask(self, image, disparity=None, valid=None):
        img = np.asarray(image)
        h, w = img.shape[:2]
        work_w = self.config.working_width
        if not work_w or w <= work_w:
            return self._mask(img, disparity, valid)
        # Smoothness and morphology are measured in pixels: judge every frame at one working
        # size, so a 1920 px frame's upscaled texture does not pass for a smooth sky.
        size = (int(work_w), max(1, round(h * work_w / w)))
        small_img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        small_d = small_v = None
        if disparity is not None:
            small_d = cv2.resize(np.asarray(disparity, np.float32), size, interpolation=cv2.INTER_NEAREST)
            if valid is not None:
                small_v = cv2.resize(np.asarray(valid, np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        small = self._mask(small_img, small_d, small_v)
        up = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
        # the upsampled edge is blocky; keep it to sky-coloured pixels
        blue, grey = self._colours(img)
        return up & (blue | grey)

    def _colours(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky-coloured pixels, in one HSV pass: (blue, bright unsaturated = overcast, haze)."""
        c = self.config
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        blue = (
            (hue >= c.blue_hue[0]) & (hue <= c.blue_hue[1]) & (sat >= c.min_blue_saturation) & (val >= c.min_blue_value)
        )
        return blue, (sat <= c.max_grey_saturation) & (val >= c.min_grey_value)

    def _mask(self, img: np.ndarray, disparity, valid) -> np.ndarray:
        c = self.config
        h, w = img.shape[:2]
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
        smooth = cv2.blur(grad / 8.0, (9, 9)) <= c.max_gradient  # Sobel 3x3 gain is 8 for a unit step
        blue, grey = self._colours(img)
        colour = blue | grey
        candidate = colour & smooth
        d = ok = None
        if self.use_disparity and disparity is not None:
            d, ok = self._reliable_disparity(np.asarray(disparity, np.float32), valid)
            if ok is not None:
                # Pixel veto: a consistent match in the nearer half of the frame is never sky.
                candidate &= ~(ok & (d > np.median(d[ok])))
        top_bar = frame_bars(img).top  # a narrower shot's bars: the picture starts below them
        sky = self._connected_to_top(candidate, h, w, blue=blue, top_bar=top_bar)
        if ok is not None and sky.any():
            sky = self._far_regions(sky, d, ok)
        # The smoothness window stops short of the skyline; grow the sky back over sky-coloured
        # pixels there, where flow smears the horizon's disparity into the sky.
        reach = c.skyline_growth_px
        if reach > 0 and sky.any():
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
            sky |= cv2.dilate(sky.astype(np.uint8), kernel).astype(bool) & colour
        return sky

    @staticmethod
    def _reliable_disparity(disparity: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        finite = np.isfinite(disparity)
        ok = finite if valid is None else (finite & np.asarray(valid, bool))
        if ok.sum() < 16:
            return disparity, None
        return disparity, ok

    def _far_regions(self, sky: np.ndarray, d: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Keep the sky regions whose consistent disparities sit at the far end of the frame.

        Flow on a blank sky is unreliable (it smears the skyline's disparity upwards and often
        still passes the left-right check), so the test is per region, on the median of its
        consistent pixels, against a generous quantile of the frame: a region is dropped only
        when its matches say it is clearly not far. Regions with too few matches are kept.
        """
        c = self.config
        far_limit = float(np.quantile(d[ok], c.region_far_quantile))
        n, labels = cv2.connectedComponents(sky.astype(np.uint8), connectivity=4)
        out = np.zeros_like(sky)
        for lab in range(1, n):
            region = labels == lab
            matched = region & ok
            if matched.sum() >= max(50, 0.05 * region.sum()) and np.median(d[matched]) > far_limit:
                continue
            out |= region
        return out

    def _connected_to_top(
        self, candidate: np.ndarray, h: int, w: int, blue: np.ndarray | None = None, top_bar: int = 0
    ) -> np.ndarray:
        k = max(3, (min(h, w) // 100) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        m = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN, kernel)
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
        # the first non-black row is the top of the picture (letterbox bars are not sky)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
        top_rows = top_bar + max(1, h // 50)
        out = np.zeros((h, w), bool)
        min_area = self.config.min_area_fraction * h * w
        c = self.config
        top_band = labels[top_bar:top_rows]
        for lab in range(1, n):
            if stats[lab, cv2.CC_STAT_AREA] < min_area or stats[lab, cv2.CC_STAT_TOP] > top_rows:
                continue
            region = labels == lab
            # Sky spans the top of the picture; a bright unsaturated patch touching it over a few
            # columns is far more often a wall, a ceiling or a window than an overcast sky.
            contact = float((top_band == lab).any(axis=0).mean())
            is_blue = blue is not None and float(blue[region].mean()) >= 0.5
            if contact < (c.min_top_contact_fraction if is_blue else c.min_top_contact_fraction_grey):
                continue
            out |= region
        return out


class ModelSkyMasker(SkyMasker):
    """A sky segmentation network from a local ONNX (cv2.dnn), torch.export or TorchScript file.

    Args:
        path: the model file.
        input_size: (width, height) the image is resized to before the network.
        sky_class: index of the sky class for multi-class outputs.
        threshold: probability threshold for single-channel outputs.
    """

    name = "model"

    def __init__(
        self, path: str | Path, input_size: tuple[int, int] = (512, 256), sky_class: int = 1, threshold: float = 0.5
    ):
        self.path = str(path)
        self.input_size = tuple(input_size)
        self.sky_class = sky_class
        self.threshold = threshold
        if not Path(self.path).is_file():
            raise BadInputError(
                self.path, "sky model file not found", "give an .onnx or TorchScript file: --sky model:FILE"
            )
        self._load()  # fail now, not in a worker

    def _load(self) -> Any:
        net = getattr(self, "_impl_net", None)
        if net is not None:
            return net
        if self.path.lower().endswith(".onnx"):
            try:
                net = cv2.dnn.readNetFromONNX(self.path)
            except cv2.error as exc:
                raise BadInputError(self.path, "not a readable ONNX model", str(exc).strip().splitlines()[-1]) from exc
        elif self.path.lower().endswith(".pt2"):
            import torch

            try:
                net = torch.export.load(self.path).module()
            except Exception as exc:
                raise BadInputError(self.path, "not a torch.export program (.pt2)", f"{type(exc).__name__}") from exc
        else:
            import torch

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # jit is deprecated, still supported
                    net = torch.jit.load(self.path, map_location="cpu").eval()
            except Exception as exc:
                raise BadInputError(
                    self.path, "not a TorchScript model", "export with torch.jit.script/trace, or use .onnx/.pt2"
                ) from exc
        self._impl_net = net
        return net

    def _scores(self, blob: np.ndarray) -> np.ndarray:
        net = self._load()
        if isinstance(net, cv2.dnn.Net):
            net.setInput(blob)
            return np.asarray(net.forward())
        import torch

        with torch.inference_mode():
            out = net(torch.from_numpy(blob))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.float().numpy()

    def mask(self, image, disparity=None, valid=None):
        h, w = image.shape[:2]
        x = cv2.resize(image, self.input_size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
        blob = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        scores = self._scores(blob)
        if scores.ndim != 4 or scores.shape[0] != 1:
            raise BadInputError(self.path, f"sky model output has shape {scores.shape}; expected 1xCxHxW")
        if scores.shape[1] == 1:
            prob = 1.0 / (1.0 + np.exp(-scores[0, 0]))
            small = prob >= self.threshold
        else:
            small = np.argmax(scores[0], axis=0) == self.sky_class
        return cv2.resize(small.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


#: every sky masker by name (:class:`pipeline.registry.Registry`); ``model:<file>`` is a family
MASKERS: Registry[SkyMasker] = Registry("sky masker")
MASKERS.register("heuristic", HeuristicSkyMasker)
MASKERS.register("none", NoSkyMasker)
MASKERS.register_prefix("model", ModelSkyMasker, argument="<file.onnx|file.pt2|file.pt>")


def register_sky_masker(name: str, factory: Callable[[], SkyMasker]) -> None:
    """Register a masker factory under a plain name."""
    MASKERS.register(name, factory)


def available_sky_maskers() -> list[str]:
    return MASKERS.names()


def get_sky_masker(name: str | None) -> SkyMasker:
    """Build a sky masker by name: ``heuristic``, ``none`` (or ``None``), ``model:PATH``."""
    if name is None:
        return NoSkyMasker()
    if name == "model:":
        raise ConfigError("sky masker 'model:' needs a file: model:/path/to/sky.onnx")
    return MASKERS.create(name)
