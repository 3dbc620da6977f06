"""Clips for temporal training: :class:`ClipDataset` streams a clips-mode shard dataset.

It is a :class:`training.datasets.ShardDataset` whose items are clips (:func:`pipeline.shards.iter_clips`)
instead of rows, so it keeps every guarantee of the frame dataset: shards dealt over ranks and
loader workers, the shuffle buffer and augmentation as pure functions of ``(seed, epoch,
position)``, and exact mid-epoch resume (positions count clips). Every frame of a clip gets the
same crop and flip; the targets of a clip are scaled to [0, 1] *together* (one offset and scale
over the clip's valid pixels), so a frame-to-frame change of the label survives for the temporal
losses (:mod:`training.temporal`). A frame stored without a label (rejected by the per-frame
checks) keeps its image and has an empty mask.

A clip sample: ``image`` (T x 3 x S x S uint8), ``target`` and ``mask`` (T x S x S), ``flow``
(T x S x S x 2: frame ``t``'s flow to ``t+1`` in pixels of the crop; zeros for the last frame or
without stored flow) and ``flow_valid`` (T x S x S bool), plus ``weight`` (T x S x S) with
uncertainty weighting.
"""

from __future__ import annotations

from typing import Any, Iterator

import cv2
import numpy as np
import torch

from pipeline.errors import BadInputError
from training.datasets import SHARD_COLUMNS, ShardDataset, to_unit_disparity
from training.transforms import AugmentConfig, augment, crop_params

__all__ = ["ClipDataset", "clip_sample", "augment_flow"]


def augment_flow(flow: np.ndarray, valid: np.ndarray, params: tuple[int, int, int, bool], size: int):
    """Crop, flip and resize a flow field (px) and its mask as :func:`training.transforms.augment`
    does the frame: values scale with the resize, and a flip negates the x component."""
    side, y0, x0, flip = params
    f = np.nan_to_num(np.asarray(flow, np.float32)[y0 : y0 + side, x0 : x0 + side])
    m = np.asarray(valid, bool)[y0 : y0 + side, x0 : x0 + side] & np.isfinite(flow[y0 : y0 + side, x0 : x0 + side]).all(
        -1
    )
    if flip:
        f = f[:, ::-1].copy()
        f[..., 0] *= -1
        m = m[:, ::-1]
    if side != size:
        f = cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=cv2.INTER_NEAREST) * (size / side)
        m = cv2.resize(np.ascontiguousarray(m, dtype=np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    return np.ascontiguousarray(f, dtype=np.float32), np.ascontiguousarray(m, dtype=bool)


def clip_sample(
    clip: dict[str, Any], rng: np.random.Generator, aug: AugmentConfig, uncertainty: Any = None
) -> dict[str, torch.Tensor]:
    """One clip (from :func:`pipeline.shards.iter_clips`) to a training sample (module docstring)."""
    images, disps, valids = clip["image"], clip["disparity"], clip["valid"]
    t, h, w = disps.shape
    seed = int(rng.integers(2**62))
    params = crop_params(h, w, np.random.default_rng(seed), aug)
    out_img, out_disp, out_mask, out_weight = [], [], [], []
    unc = clip.get("uncertainty")
    for k in range(t):
        valid = valids[k] & np.isfinite(disps[k])
        weight = None
        if uncertainty is not None and uncertainty.needed:
            valid, weight = uncertainty.apply(valid, None if unc is None else unc[k])
        # a generator seeded alike draws the same crop for every frame
        res = augment(images[k], np.nan_to_num(disps[k]), valid, np.random.default_rng(seed), aug, weight=weight)
        out_img.append(res[0])
        out_disp.append(res[1])
        out_mask.append(res[2])
        if weight is not None:
            out_weight.append(res[3])
    target, mask = to_unit_disparity(np.stack(out_disp), np.stack(out_mask))  # one scale for the clip
    s = aug.size
    flow = np.zeros((t, s, s, 2), np.float32)
    flow_valid = np.zeros((t, s, s), bool)
    if clip.get("temporal_flow") is not None:
        for k in range(t - 1):
            flow[k], flow_valid[k] = augment_flow(clip["temporal_flow"][k], clip["temporal_flow_valid"][k], params, s)
    sample = {
        "image": torch.from_numpy(np.ascontiguousarray(np.stack(out_img))).permute(0, 3, 1, 2).contiguous(),
        "target": torch.from_numpy(target),
        "mask": torch.from_numpy(mask),
        "flow": torch.from_numpy(flow),
        "flow_valid": torch.from_numpy(flow_valid),
    }
    if out_weight:
        sample["weight"] = torch.from_numpy(np.stack(out_weight).astype(np.float32))
    return sample


class ClipDataset(ShardDataset):
    """Clips of ``clip_frames`` frames from a clips-mode dataset (see the module docstring).

    Args:
        clip_frames: T (stored clips are cut into consecutive windows of T frames).
        max_rejected: skip clips with more frames without a label (None: keep all).
        Others: as :class:`training.datasets.ShardDataset`.
    """

    def __init__(self, path, split="train", *, clip_frames: int = 8, max_rejected: int | None = None, **kwargs):
        from pipeline.shards import count_clips

        super().__init__(path, split, **kwargs)
        self.clip_frames = int(clip_frames)
        self.max_rejected = max_rejected
        self._counts = {s.path: count_clips(s, self.clip_frames, split, max_rejected) for s in self.shards}
        self.shards = [s for s in self.shards if self._counts[s.path] > 0]
        if not self.shards:
            raise BadInputError(
                self.path,
                f"no clips of {self.clip_frames} frames in split {split!r}",
                "ingest with sampling.mode=clips and sampling.clip_frames >= data.clip_frames",
            )

    def rows_of(self, shard: Any) -> int:
        return self._counts.get(shard.path, 0)

    def _items(self, shard: Any) -> Iterator[dict[str, Any]]:
        from pipeline.shards import iter_clips

        columns = SHARD_COLUMNS + (("uncertainty",) if self.uncertainty.needed else ())
        return iter_clips(
            shard, self.clip_frames, self.split, columns=columns, max_rejected=self.max_rejected, temporal_flow=True
        )

    def _finish(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return clip_sample(sample, rng, self.augment, self.uncertainty)
