"""Evaluation protocols: per benchmark, the metric, the depth cap and the input size rule.

The numbers are the method's (docs/METHOD.md §4): the prediction is aligned to the ground truth by
least squares in disparity space, converted to depth and capped (ETH3D 72 m, Sintel 72 m, KITTI
80 m, NYU 10 m, TUM 10 m); the network sees the image with its longer side at 384 px and the
shorter side a multiple of 32 (KITTI: the *shorter* side at 384, its images are very wide), and the
prediction is resized back to the ground truth's resolution. Each is a frozen dataclass, so a user
can derive a variant with :func:`dataclasses.replace` instead of editing constants. Each
benchmark's protocol lives on its loader (``KITTILoader.PROTOCOL``); :data:`training.benchmarks.PROTOCOLS`
gathers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Protocol", "inference_size"]


def inference_size(
    height: int, width: int, side: int = 384, multiple: int = 32, rule: Literal["longer", "shorter"] = "longer"
) -> tuple[int, int]:
    """The network input size ``(h, w)`` for an image of ``height x width``.

    ``rule="longer"`` sets the longer side to ``side``; ``"shorter"`` sets the shorter one. The
    other side keeps the aspect ratio, rounded to the nearest multiple of ``multiple`` (at least one
    multiple). ``side`` itself is rounded to a multiple too.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    side = max(multiple, int(round(side / multiple)) * multiple)
    long_is_h = height >= width
    pick_h = long_is_h if rule == "longer" else not long_is_h
    scale = side / (height if pick_h else width)
    other = (width if pick_h else height) * scale
    other = max(multiple, int(round(other / multiple)) * multiple)
    return (side, other) if pick_h else (other, side)


@dataclass(frozen=True)
class Protocol:
    """How one benchmark is scored.

    Attributes:
        name: registry key (``kitti``), also the ``NAME`` in ``--dataset NAME:PATH``.
        title: column title in the tables (``KITTI``).
        metric: the metric reported in the table (a key of :data:`training.metrics.METRIC_NAMES`,
            or ``ordinal_error`` for movies); all are errors, lower is better.
        depth_cap: the cap in metres applied to the aligned prediction after conversion to depth;
            ``None`` when the ground truth is not depth.
        max_gt_depth: ground-truth pixels deeper than this are not scored (defaults to the cap:
            Sintel's sky, for instance, sits at enormous depths no capped prediction can match).
        size_rule: which image side is set to ``side`` for the network input.
        side: that side's length in pixels.
        multiple: the other side is rounded to a multiple of this.
        ground_truth: ``depth`` (metres or up to scale), ``disparity`` (up to scale and shift), or
            ``ordinal`` (point pairs).
        clips: scored on clips of consecutive frames (``movies_temporal``: the temporal error of
            :func:`training.temporal.temporal_consistency`), not frame by frame.
        crop: ``(top, bottom, left, right)`` of the scored region in ground-truth pixels (rows
            ``top:bottom``, columns ``left:right``), or ``None`` to score every valid pixel. The
            paper states none; a common choice for NYU is the Eigen crop ``(45, 471, 41, 601)``:
            ``get_protocol("nyu", crop=(45, 471, 41, 601))``.
    """

    name: str
    title: str
    metric: str
    depth_cap: float | None = None
    max_gt_depth: float | None = None
    size_rule: Literal["longer", "shorter"] = "longer"
    side: int = 384
    multiple: int = 32
    ground_truth: Literal["depth", "disparity", "ordinal"] = "depth"
    crop: tuple[int, int, int, int] | None = None
    clips: bool = False

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input ``(h, w)`` for a ``height x width`` image under this protocol."""
        return inference_size(height, width, self.side, self.multiple, self.size_rule)
