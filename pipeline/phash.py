"""Perceptual hashes of frames: find a released frame again in someone else's copy of the film.

A labels-only release (:mod:`pipeline.release`) holds no picture, so hydration
(:mod:`pipeline.hydrate`) needs another way to recognise each released frame in the user's copy,
which may be re-encoded, rescaled, letterboxed differently and converted with another YUV matrix.
The DCT hash does that: the frame's picture area as a 32x32 grey thumbnail (area averaging), its
2-D DCT, and one bit per low-frequency coefficient of the top-left 8x8 block (the DC term
excluded) telling whether it is above the block's median. Re-encoding, rescaling and a uniform
brightness or contrast change move these coefficients little and the median test not at all, so
the same frame of two copies hashes within a few bits (measured: 0-6 of 64 on the sample movies
after re-encoding, rescaling to 2/3 and a brightness change), while other pictures differ in about
half of them (32 +- 4 for unrelated pictures; 18 or more between shots of the sample movies, which
all share one composition). 64 bits reveal nothing one could rebuild a picture from.

Hashes are Python ints in ``[0, 2**64)``; arrays of them are ``uint64``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["HASH_BITS", "THUMB_SIZE", "DEFAULT_MAX_DISTANCE", "phash", "phash_gray", "hamming", "to_hex", "from_hex"]

HASH_BITS = 64
THUMB_SIZE = 32  # the grey thumbnail the DCT runs on (never stored)
# Bits two hashes may differ in and still be called the same frame: re-encodes of the sample
# movies stay at or below 6, other shots are 18 or more apart, unrelated pictures about 32 (a
# binomial(64, 1/2) is at or below 10 with probability 1e-8).
DEFAULT_MAX_DISTANCE = 10

_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _dct_rows(n: int = THUMB_SIZE, k: int = 8) -> np.ndarray:
    """The first ``k`` rows of the orthonormal DCT-II matrix of size ``n`` (what ``cv2.dct`` uses)."""
    x = np.arange(n, dtype=np.float64)
    rows = np.cos(np.pi * (2 * x[None, :] + 1) * np.arange(k, dtype=np.float64)[:, None] / (2 * n))
    rows *= np.sqrt(2.0 / n)
    rows[0] /= np.sqrt(2.0)
    return rows.astype(np.float32)


_DCT8 = _dct_rows()


def phash_gray(gray: np.ndarray) -> int:
    """The DCT hash of a grey picture (any size; uint8 or float): a 64-bit int.

    Only the 8x8 low-frequency block is computed (two small matrix products instead of the full
    32x32 transform): hydration hashes every frame of a film, so this runs ~170,000 times.
    """
    g = np.asarray(gray)
    if g.shape != (THUMB_SIZE, THUMB_SIZE):
        if g.dtype != np.uint8 and g.dtype != np.float32:
            g = g.astype(np.float32)
        g = cv2.resize(np.ascontiguousarray(g), (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    block = (_DCT8 @ g.astype(np.float32) @ _DCT8.T).ravel()
    median = np.partition(block[1:], 31)[31]  # the median of the 63 AC terms (an odd count: one value)
    bits = (block > median).astype(np.uint64)
    bits[0] = 0  # the DC term (mean brightness) carries no structure
    return int((bits * _WEIGHTS).sum(dtype=np.uint64))


def phash(image: np.ndarray) -> int:
    """The DCT hash of an ``HxWx3 uint8`` RGB picture (or an ``HxW`` grey one)."""
    img = np.asarray(image)
    if img.ndim == 3:
        # shrink first: the grey conversion of a 32x32 thumbnail costs nothing
        small = cv2.resize(img, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
        return phash_gray(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    return phash_gray(img)


def hamming(a: int | np.ndarray, b: int | np.ndarray) -> np.ndarray | int:
    """Bits in which hashes differ (element-wise for arrays)."""
    if isinstance(a, int) and isinstance(b, int):  # per frame in hydration: no numpy round trip
        return (a ^ b).bit_count()
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    out = np.bitwise_count(x) if hasattr(np, "bitwise_count") else _popcount(x)
    return int(out) if np.ndim(out) == 0 else out.astype(np.int32)


def _popcount(x: np.ndarray) -> np.ndarray:
    arr = np.atleast_1d(x).astype(np.uint64)
    counts = np.unpackbits(arr.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
    return counts.reshape(np.shape(x))


def to_hex(h: int) -> str:
    return f"{int(h):016x}"


def from_hex(s: str) -> int:
    return int(s, 16)
