"""Stereo frame layouts: how the two eyes are packed in a decoded frame, and the letterbox crop.

3D Blu-ray rips reach us converted from MVC to side-by-side (SBS) or top-and-bottom (TAB), at full
or half resolution per eye, or as two separate files. This module splits a decoded frame into
``(left, right)`` eyes at the full per-eye aspect, guesses the layout from the content when the
container says nothing, and finds the letterbox bars once per movie.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["Layout", "CropBox"]


class Layout(str, enum.Enum):
    """How the two eyes are stored. Half layouts squeeze each eye to half width (SBS) or height (TAB)."""

    SBS_FULL = "sbs-full"
    SBS_HALF = "sbs-half"
    TAB_FULL = "tab-full"
    TAB_HALF = "tab-half"
    SEPARATE = "separate"

    def __str__(self) -> str:  # "sbs-half", not "Layout.SBS_HALF"
        return self.value


@dataclasses.dataclass(frozen=True)
class CropBox:
    """The letterbox crop of one eye, in source pixels of the full per-eye resolution.

    Attributes:
        x: left column of the picture area.
        y: top row of the picture area.
        w: width of the picture area.
        h: height of the picture area.
    """

    x: int
    y: int
    w: int
    h: int

    def apply(self, image):
        """Crop an ``HxW[xC]`` array (numpy view, no copy)."""
        return image[self.y : self.y + self.h, self.x : self.x + self.w]

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def full(cls, width: int, height: int) -> "CropBox":
        """The crop box that keeps the whole eye (no letterbox)."""
        return cls(0, 0, int(width), int(height))
