"""Image/target transforms shared by training, evaluation and inference.

Inference: :func:`resize_for_inference` (longer side 384, sides multiples of 32, aspect kept, as the
paper evaluates), :func:`to_tensor`, :func:`normalize` (ImageNet mean/std, what the encoders were
pretrained with). Training: :func:`augment` applies the method's augmentations - horizontal flip
with probability 0.5, a random crop resized to ``size x size`` - alike to the image, the disparity
target and its validity mask. Targets are resized with nearest neighbour so that an invalid pixel
never leaks into a valid one by interpolation.

Disparity values are *not* rescaled when the image is resized or flipped: every loss here is
invariant to scale and shift, and the trainer's targets are normalised to [0, 1] anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "to_tensor",
    "normalize",
    "resize_for_inference",
    "inference_size",
    "prepare_input",
    "crop_params",
    "augment",
    "batch_to_input",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    """Training augmentations.

    Attributes:
        size: output side in pixels (384 in the paper; small in tests).
        flip_prob: probability of a horizontal flip.
        min_crop_scale: the random square crop's side is ``U[min_crop_scale, 1] * min(H, W)``;
            1.0 keeps the largest square.
        enabled: False gives a deterministic centre crop (validation).
    """

    size: int = 384
    flip_prob: float = 0.5
    min_crop_scale: float = 0.5
    enabled: bool = True


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``HxWx3 uint8`` RGB -> ``3xHxW`` float32 in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return t.float().div_(255.0) if image.dtype == np.uint8 else t.float()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of ``3xHxW`` or ``Bx3xHxW`` float images in [0, 1]."""
    shape = (3, 1, 1) if x.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(shape)
    return (x - mean) / std


def inference_size(height: int, width: int, longer_side: int = 384, multiple: int = 32) -> tuple[int, int]:
    """(H, W) with the longer side ``longer_side`` and both sides multiples of ``multiple``."""
    scale = longer_side / max(height, width)

    def fit(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return fit(height * scale), fit(width * scale)


def resize_for_inference(image_rgb_uint8: np.ndarray, longer_side: int = 384, multiple: int = 32) -> np.ndarray:
    """Resize an RGB image for the network: longer side ``longer_side``, sides multiples of 32."""
    h, w = image_rgb_uint8.shape[:2]
    nh, nw = inference_size(h, w, longer_side, multiple)
    if (nh, nw) == (h, w):
        return image_rgb_uint8
    interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_CUBIC
    return cv2.resize(image_rgb_uint8, (nw, nh), interpolation=interp)


def prepare_input(image_rgb_uint8: np.ndarray, longer_side: int = 384, multiple: int = 32) -> torch.Tensor:
    """One image -> ``1x3xHxW`` normalised tensor ready for ``DepthModel``."""
    return normalize(to_tensor(resize_for_inference(image_rgb_uint8, longer_side, multiple))).unsqueeze(0)


def crop_params(h: int, w: int, rng: np.random.Generator, config: AugmentConfig) -> tuple[int, int, int, bool]:
    """The square crop ``(side, y0, x0, flip)`` :func:`augment` draws from ``rng`` for an HxW image
    (a generator seeded alike gives the same crop: every frame of a clip is cropped alike)."""
    side_max = min(h, w)
    if config.enabled:
        side = int(round(side_max * rng.uniform(config.min_crop_scale, 1.0)))
        side = max(1, min(side, side_max))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        flip = bool(rng.random() < config.flip_prob)
    else:
        side = side_max
        y0, x0 = (h - side) // 2, (w - side) // 2
        flip = False
    return side, y0, x0, flip


def augment(
    image: np.ndarray,
    disparity: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Flip and random-crop-and-resize ``image``, ``disparity`` and ``valid`` alike.

    Returns ``(image uint8 SxSx3, disparity float32 SxS, valid bool SxS)`` with ``S = config.size``;
    with a per-pixel ``weight`` map (HxW float), also that map, cropped, flipped and resized like
    the disparity (nearest neighbour), as a fourth element.
    """
    h, w = disparity.shape
    side, y0, x0, flip = crop_params(h, w, rng, config)
    img = image[y0 : y0 + side, x0 : x0 + side]
    disp = disparity[y0 : y0 + side, x0 : x0 + side]
    msk = valid[y0 : y0 + side, x0 : x0 + side]
    wgt = None if weight is None else weight[y0 : y0 + side, x0 : x0 + side]
    if flip:
        img, disp, msk = img[:, ::-1], disp[:, ::-1], msk[:, ::-1]
        wgt = None if wgt is None else wgt[:, ::-1]
    s = config.size
    if side != s:
        interp = cv2.INTER_AREA if side > s else cv2.INTER_LINEAR
        img = cv2.resize(np.ascontiguousarray(img), (s, s), interpolation=interp)
        disp = cv2.resize(np.ascontiguousarray(disp, dtype=np.float32), (s, s), interpolation=cv2.INTER_NEAREST)
        msk = cv2.resize(np.ascontiguousarray(msk, dtype=np.uint8), (s, s), interpolation=cv2.INTER_NEAREST) > 0
        if wgt is not None:
            wgt = cv2.resize(np.ascontiguousarray(wgt, dtype=np.float32), (s, s), interpolation=cv2.INTER_NEAREST)
    disp = np.ascontiguousarray(disp, dtype=np.float32)
    msk = np.ascontiguousarray(msk, dtype=bool) & np.isfinite(disp)
    out = (np.ascontiguousarray(img), np.where(msk, disp, 0.0).astype(np.float32), msk)
    if wgt is None:
        return out
    return (*out, np.where(msk, np.ascontiguousarray(wgt, dtype=np.float32), 0.0).astype(np.float32))


def batch_to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """``Bx3xHxW`` (or ``3xHxW``) uint8 images -> normalised float network input.

    Loaders ship images as uint8 (a quarter of the bytes through worker shared memory and the
    host-to-device copy); the trainer normalises them on the device with this.
    """
    return normalize(images_uint8.float().div_(255.0))
