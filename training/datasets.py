"""Training data: shard streaming, external-dataset adapters, and the mixed-batch loader.

- :class:`ShardDataset` streams a depthmine dataset (through :mod:`pipeline.shards`' public reader)
  as an ``IterableDataset``: shards are split over DDP ranks and DataLoader workers, shard order
  and a buffer within shards are shuffled deterministically from ``(seed, epoch)``, and a worker
  can skip exactly what was consumed before a checkpoint (mid-epoch resume).
- Map-style adapters (:class:`FolderDataset`, :class:`CsvDataset`, :class:`SyntheticDataset`) are
  read through :class:`GlobalBatchSampler`, whose global batch ``k`` is the same whatever the number
  of processes (each rank takes its slice), which also makes resuming exact.
- :class:`MixedLoader` zips one loader per dataset so every batch holds the same number of samples
  from each (naive mixing in the paper), and records its position for checkpoints.
- :class:`TrainingDataset` is what the trainer asks of any of them (its loader at a batch position,
  its first samples, its shard count), so the loader and the pre-flight never tell kinds apart.

Every target becomes disparity scaled to [0, 1] over its valid pixels (the paper's common space);
every sample is a dict ``image`` (``3xSxS`` uint8 RGB; normalise with
:func:`training.transforms.batch_to_input`), ``target`` (``SxS`` float32), ``mask`` (``SxS`` bool).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from pipeline.errors import BadInputError, ConfigError
from pipeline.registry import Registry
from training.config import DatasetSpec
from training.transforms import AugmentConfig, augment

__all__ = [
    "to_unit_disparity",
    "target_to_disparity",
    "ShardDataset",
    "FolderDataset",
    "CsvDataset",
    "SyntheticDataset",
    "PositionDataset",
    "TrainingDataset",
    "GlobalBatchSampler",
    "MixedLoader",
    "DATASET_KINDS",
    "DatasetKind",
    "OpenOptions",
    "dataset_kind",
    "build_dataset",
    "dist_info",
    "validation_samples",
    "enable_openexr",
    "UncertaintyUse",
]

log = logging.getLogger(__name__)

SHARD_COLUMNS = ("image", "disparity", "valid")


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------------------
# targets


def to_unit_disparity(disparity: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift and scale disparity to [0, 1] over valid pixels; invalid pixels become 0.

    A constant image maps to 0 (still valid: the losses treat it as uninformative, not as bad).
    """
    valid = valid & np.isfinite(disparity)
    out = np.zeros(disparity.shape, np.float32)
    if valid.any():
        v = disparity[valid].astype(np.float64)
        lo, hi = v.min(), v.max()
        if hi > lo:
            out[valid] = ((v - lo) / (hi - lo)).astype(np.float32)
    return out, valid


def target_to_disparity(
    raw: np.ndarray,
    kind: str,
    validity: str = "positive",
    min_value: float | None = None,
    max_value: float | None = None,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a ground-truth map of ``kind`` into (disparity in [0, 1], valid mask).

    Depth kinds are inverted (valid only where depth > 0); disparity kinds are kept; then
    :func:`to_unit_disparity`. ``validity`` and the bounds apply to the raw (scaled) values.
    """
    values = raw.astype(np.float32) * np.float32(scale)
    finite = np.isfinite(values)
    if validity == "positive":
        valid = finite & (values > 0)
    elif validity == "finite":
        valid = finite
    elif validity == "nonzero":
        valid = finite & (values != 0)
    else:
        raise ConfigError(f"validity {validity!r}: valid rules: positive, finite, nonzero")
    if min_value is not None:
        valid &= values >= min_value
    if max_value is not None:
        valid &= values <= max_value
    if kind in ("depth", "depth_up_to_scale"):
        valid &= values > 0
        disp = np.where(valid, 1.0 / np.where(valid, values, 1.0), 0.0).astype(np.float32)
    elif kind in ("inverse_depth", "disparity", "disparity_up_to_scale_shift"):
        disp = np.where(valid, values, 0.0).astype(np.float32)
    else:
        raise ConfigError(
            f"target kind {kind!r}: valid kinds: depth, depth_up_to_scale, inverse_depth, "
            "disparity, disparity_up_to_scale_shift"
        )
    return to_unit_disparity(disp, valid)


@dataclass(frozen=True)
class UncertaintyUse:
    """How a dataset uses the shards' per-pixel ``uncertainty`` (px); see
    :class:`training.config.DataConfig` (``max_uncertainty_px``, ``uncertainty_weighting``).

    ``weighting``: add a ``weight`` map to every sample (ones where nothing is known), so
    batches of several datasets stay stackable.
    """

    max_px: float | None = None
    sigma_px: float = 0.0

    @property
    def weighting(self) -> bool:
        return self.sigma_px > 0

    @property
    def needed(self) -> bool:
        return self.max_px is not None or self.weighting

    def apply(self, valid: np.ndarray, uncertainty: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(valid mask, weight map or None)`` for one label. Unknown (NaN) uncertainty counts as
        infinitely uncertain; a row without an uncertainty map keeps its mask and weighs 1."""
        if uncertainty is None:
            return valid, (np.ones(valid.shape, np.float32) if self.weighting else None)
        u = np.asarray(uncertainty, np.float32)
        if self.max_px is not None:
            valid = valid & (u <= np.float32(self.max_px))  # NaN compares False: dropped
        weight = None
        if self.weighting:
            s2 = np.float32(self.sigma_px) ** 2
            weight = np.where(np.isfinite(u), s2 / (s2 + u * u), 0.0).astype(np.float32)
        return valid, weight


def _finish_sample(
    image: np.ndarray,
    disparity: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    aug: AugmentConfig,
    weight: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    valid = valid & np.isfinite(disparity)
    if weight is None:
        img, disp, msk = augment(image, np.nan_to_num(disparity), valid, rng, aug)
    else:
        img, disp, msk, weight = augment(image, np.nan_to_num(disparity), valid, rng, aug, weight=weight)
    disp, msk = to_unit_disparity(disp, msk)
    # images travel as uint8 (normalised on the device by the trainer: 4x fewer bytes through
    # the workers' shared memory and the host-to-device copy)
    image_t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
    out = {"image": image_t, "target": torch.from_numpy(disp), "mask": torch.from_numpy(msk)}
    if weight is not None:
        out["weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    return out


# ---------------------------------------------------------------------------------------------
# what the trainer asks of a dataset


class TrainingDataset:
    """What the trainer asks of a dataset object, whatever its kind (:meth:`DatasetKind.open` returns one).

    :class:`MixedLoader`, :func:`validation_samples` and :mod:`training.preflight` call these and
    never test a dataset's class, so a new kind plugs in by implementing them: a streaming one as
    :class:`ShardDataset` does, a map-style one by returning a :class:`PositionDataset`.
    """

    @property
    def shard_count(self) -> int | None:
        """How many parts are dealt over the readers (processes x loader workers), each reader needing
        one of its own (pre-flight lowers the workers to fit); None: readers share it by position."""
        return None

    def data_loader(
        self, global_batch: int, rank: int, world_size: int, start_batch: int, **options: Any
    ) -> DataLoader:
        """A DataLoader giving this process its ``global_batch / world_size`` samples of every global
        batch, from global batch ``start_batch`` on (a resumed run); ``options`` go to the DataLoader."""
        raise NotImplementedError

    def first_samples(self, n: int) -> list[dict[str, torch.Tensor]]:
        """Up to ``n`` samples in stored order (validation; pre-flight reads one: empty means no rows)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# shards


class ShardDataset(IterableDataset, TrainingDataset):
    """Stream a depthmine shard dataset, split over ranks and workers, deterministically shuffled.

    For epoch ``e`` the shards are permuted by ``(seed, e)`` and dealt round-robin to the
    ``world_size * num_workers`` global workers; each worker streams its shards through a shuffle
    buffer seeded by ``(seed, e, worker)``; augmentation of the ``i``-th sample of a worker's epoch
    is seeded by ``(seed, e, worker, i)``. Everything is therefore a function of
    ``(seed, epoch, position)``, which is what makes :meth:`load_state_dict` exact.

    With ``infinite=True`` (training) every worker runs through epoch after epoch on its own, so a
    DataLoader never sees a worker end and hands out batches in strict worker round-robin.

    Args:
        path: dataset folder, ``manifest.json`` or URI.
        split: rows of this split only (None: all).
        augment: training augmentation (``enabled=False`` for a centre crop).
        rank, world_size: default to the process group's.
    """

    def __init__(
        self,
        path: str | Path,
        split: str | None = "train",
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 64,
        infinite: bool = True,
        movie_ids: Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        uncertainty: UncertaintyUse | None = None,
    ):
        from pipeline.shards import list_shards  # the public reader

        super().__init__()
        self.path = str(path)
        self.split = split
        self.augment = augment or AugmentConfig()
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.infinite = infinite
        self.movie_ids = list(movie_ids) if movie_ids else None
        self.uncertainty = uncertainty or UncertaintyUse()
        self.shards = list_shards(self.path, split=split, movie_ids=self.movie_ids)
        if not self.shards:
            raise BadInputError(
                self.path,
                f"no shards with rows of split {split!r}",
                "check the split name and the dataset's manifest (depthmine inspect)",
            )
        r, w = dist_info()
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)
        self.epoch = 0
        self._skip_batches = 0
        self._batch_size = 1

    # -- position ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start (the next iteration) at ``epoch``; shard order and shuffles derive from it."""
        self.epoch = int(epoch)

    def state_dict(self, batches_consumed: int = 0, batch_size: int = 1) -> dict[str, int]:
        """Position after ``batches_consumed`` batches of ``batch_size`` taken from a DataLoader
        over this dataset (the trainer counts them; prefetched batches do not count)."""
        return {"epoch": self.epoch, "batches": int(batches_consumed), "batch_size": int(batch_size), "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration skips exactly the samples of the consumed batches."""
        if int(state.get("seed", self.seed)) != self.seed:
            log.warning(
                "resuming %s with seed %s (saved with %s): data order differs", self.path, self.seed, state["seed"]
            )
        self.epoch = int(state["epoch"])
        self._skip_batches = int(state["batches"])
        self._batch_size = int(state["batch_size"])

    # -- what the trainer asks (TrainingDataset) -------------------------------------------
    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def data_loader(
        self, global_batch: int, rank: int, world_size: int, start_batch: int, **options: Any
    ) -> DataLoader:
        """Streams this rank's shards; the position after ``start_batch`` batches is skipped exactly."""
        per_rank = global_batch // world_size
        self.load_state_dict(self.state_dict(start_batch, per_rank))
        return DataLoader(self, batch_size=per_rank, **options)

    def first_samples(self, n: int) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = []
        if n < 1:
            return out
        for sample in self:
            out.append(sample)
            if len(out) >= n:
                break
        return out

    # -- layout --------------------------------------------------------------------------
    def rows_of(self, shard: Any) -> int:
        return int(shard.split_counts.get(self.split, 0)) if self.split else int(shard.rows)

    def worker_shards(self, epoch: int, global_worker: int, n_global: int) -> list[Any]:
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order[global_worker::n_global]]

    def _epoch_rows(self, epoch: int, global_worker: int, n_global: int) -> int:
        return sum(self.rows_of(s) for s in self.worker_shards(epoch, global_worker, n_global))

    def _worker_layout(self) -> tuple[int, int, int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        n_global = self.world_size * nw
        if len(self.shards) < n_global:
            raise ConfigError(
                f"{self.path}: {len(self.shards)} shard(s) for {self.world_size} process(es) x {nw} loader "
                f"worker(s) = {n_global} readers; every reader needs a shard. Lower data.num_workers, use "
                "fewer processes, or rebuild the dataset with smaller shards"
            )
        # A DataLoader always asks worker 0 first. After ``k`` consumed batches the next batch is
        # due from the worker that held role ``k % nw``, so worker ``wid`` takes over role
        # ``(wid + k) % nw`` (its shards, shuffle and skip count) and the round-robin continues.
        role = (wid + self._skip_batches) % nw
        return self.rank * nw + role, n_global, role

    # -- streaming -----------------------------------------------------------------------
    def _stream_epoch(self, epoch: int, global_worker: int, n_global: int) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, epoch, global_worker, 1])
        buffer: list[dict[str, Any]] = []
        for shard in self.worker_shards(epoch, global_worker, n_global):
            for sample in self._items(shard):
                if not self.shuffle:
                    yield sample
                    continue
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(sample)
                    continue
                j = int(rng.integers(len(buffer)))
                out, buffer[j] = buffer[j], sample
                yield out
        for j in rng.permutation(len(buffer)) if buffer else []:
            yield buffer[j]

    def _finish(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One streamed item to a training sample (the clip dataset overrides it)."""
        valid, weight = self.uncertainty.apply(sample["valid"], sample.get("uncertainty"))
        return _finish_sample(sample["image"], sample["disparity"], valid, rng, self.augment, weight)

    def _items(self, shard: Any) -> Iterator[dict[str, Any]]:
        """The items of one shard in stored order: rows here, clips in the clip dataset."""
        from pipeline.shards import iter_samples

        columns = SHARD_COLUMNS + (("uncertainty",) if self.uncertainty.needed else ())
        return iter_samples(shard, columns=columns, split=self.split)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        global_worker, n_global, role = self._worker_layout()
        info = get_worker_info()
        nw = info.num_workers if info is not None else 1
        # batches come round-robin from the workers: batch k from role k % nw
        mine = max(0, (self._skip_batches - role + nw - 1) // nw)
        skip = mine * self._batch_size
        epoch = self.epoch
        if self.infinite:
            while True:
                rows = self._epoch_rows(epoch, global_worker, n_global)
                if rows == 0:
                    raise BadInputError(
                        self.path, f"loader worker {global_worker} got shards without rows of split {self.split!r}"
                    )
                if skip < rows:
                    break
                skip -= rows
                epoch += 1
        while True:
            for i, sample in enumerate(self._stream_epoch(epoch, global_worker, n_global)):
                if i < skip:
                    continue
                rng = np.random.default_rng([self.seed, epoch, global_worker, i, 2])
                yield self._finish(sample, rng)
            skip = 0
            if not self.infinite:
                return
            epoch += 1


# ---------------------------------------------------------------------------------------------
# map-style adapters


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BadInputError(path, "cannot read image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def enable_openexr() -> None:
    """Let OpenCV decode ``.exr`` (its wheels ship the codec but refuse to use it unless
    ``OPENCV_IO_ENABLE_OPENEXR`` is set; the flag is read once, at the first EXR read of the
    process, so it must be set before that). A value the user set is kept."""
    import os

    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")


def _read_target(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BadInputError(path, f"cannot read target ({exc})") from exc
    elif path.suffix == ".pfm":
        arr = _read_pfm(path)
    else:
        if path.suffix.lower() == ".exr":
            enable_openexr()
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        if arr is None:
            raise BadInputError(path, "cannot read target image")
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr.astype(np.float32)


def _read_pfm(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        header = fh.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise BadInputError(path, "not a PFM file")
        w, h = map(int, fh.readline().split())
        scale = float(fh.readline())
        data = np.fromfile(fh, "<f4" if scale < 0 else ">f4")
    channels = 3 if header == b"PF" else 1
    return np.flipud(data.reshape(h, w, channels)[..., 0]).copy()


class _PairDataset(Dataset):
    """(image file, target file) pairs with a declared target kind and validity rule."""

    def __init__(self, pairs: list[tuple[Path, Path]], spec: DatasetSpec, source: Path):
        if not pairs:
            raise BadInputError(source, "no (image, target) pairs found")
        self.pairs = pairs
        self.spec = spec

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img_path, tgt_path = self.pairs[index]
        image = _read_image(img_path)
        raw = _read_target(tgt_path)
        if raw.shape != image.shape[:2]:
            raw = cv2.resize(raw, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        s = self.spec
        disp, valid = target_to_disparity(raw, s.target, s.validity, s.min_value, s.max_value, s.target_scale)
        return image, disp, valid


class FolderDataset(_PairDataset):
    """``path/images/NAME.(png|jpg)`` with ``path/targets/NAME.(npy|png|pfm|tif)``."""

    IMAGE_EXT = (".png", ".jpg", ".jpeg")
    TARGET_EXT = (".npy", ".png", ".pfm", ".tif", ".tiff", ".exr")

    def __init__(self, spec: DatasetSpec):
        root = Path(spec.path)
        img_dir, tgt_dir = root / "images", root / "targets"
        if not img_dir.is_dir() or not tgt_dir.is_dir():
            raise BadInputError(root, "expected sub-folders images/ and targets/")
        targets = {p.stem: p for p in tgt_dir.iterdir() if p.suffix.lower() in self.TARGET_EXT}
        pairs = []
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() in self.IMAGE_EXT:
                if p.stem not in targets:
                    raise BadInputError(p, f"no target targets/{p.stem}.* for this image")
                pairs.append((p, targets[p.stem]))
        super().__init__(pairs, spec, root)


class CsvDataset(_PairDataset):
    """A CSV with columns ``image,target`` (header optional), paths relative to the CSV's folder."""

    def __init__(self, spec: DatasetSpec):
        src = Path(spec.path)
        if not src.is_file():
            raise BadInputError(src, "no such CSV file")
        pairs = []
        with open(src, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or row[0].startswith("#") or (n == 1 and row[:2] == ["image", "target"]):
                    continue
                if len(row) < 2:
                    raise BadInputError(src, f"line {n}: expected image,target")
                img, tgt = (src.parent / row[0].strip(), src.parent / row[1].strip())
                for p in (img, tgt):
                    if not p.is_file():
                        raise BadInputError(src, f"line {n}: {p} does not exist")
                pairs.append((img, tgt))
        super().__init__(pairs, spec, src)


class SyntheticDataset(Dataset):
    """Rendered stereo frames (:func:`pipeline.synthetic.render_stereo_frame`) with true disparity.

    No files: for the demo, tests and benches. Frame ``i`` is scene ``seed + i // 8`` at time
    ``(i % 8) * 0.5`` s, rendered once and cached.
    """

    #: frames kept rendered per dataset object (and per worker process: the cache is not pickled)
    CACHE_FRAMES = 4096

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.n = int(spec.size)
        self._frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frames": {}}  # workers render their own; no frames through the pickle

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``index``, rendered once per object (bounded by :attr:`CACHE_FRAMES`)."""
        cached = self._frames.get(index)
        if cached is None:
            cached = self._render(index)
            if len(self._frames) < self.CACHE_FRAMES:
                self._frames[index] = cached
        return cached

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from pipeline.synthetic import render_stereo_frame

        w, h = self.spec.image_size
        f = render_stereo_frame(
            w, h, (index % 8) * 0.5, seed=self.spec.seed + index // 8, letterbox=False, shot_duration_s=4.0
        )
        valid = np.isfinite(f.disparity)
        disp, valid = to_unit_disparity(f.disparity, valid)
        return f.left, disp, valid


class PositionDataset(Dataset, TrainingDataset):
    """Indexes a map-style dataset by *stream position*: position ``p`` is item
    ``perm(seed, p // n)[p % n]``, augmented with a generator seeded by ``(seed, p)``."""

    def __init__(
        self, base: Any, augment_config: AugmentConfig, seed: int, shuffle: bool = True, weighting: bool = False
    ):
        self.base = base
        self.weighting = weighting  # add all-ones weights (batches mixed with weighted shard data)
        self.n = len(base)
        self.augment = augment_config
        self.seed = int(seed)
        self.shuffle = shuffle
        self._perms: dict[int, np.ndarray] = {}  # the last few epochs' orders, owned by this object

    def __len__(self) -> int:  # positions are unbounded; one epoch for len()
        return self.n

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = (
                np.arange(self.n)
                if not self.shuffle
                else np.random.default_rng([self.seed, epoch, 3]).permutation(self.n)
            )
            if len(self._perms) >= 8:
                self._perms.pop(next(iter(self._perms)))  # the oldest epoch
            self._perms[epoch] = perm
        return perm

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        epoch, i = divmod(int(position), self.n)
        image, disp, valid = self.base.load(int(self._perm(epoch)[i]))
        rng = np.random.default_rng([self.seed, int(position), 4])
        weight = np.ones(valid.shape, np.float32) if self.weighting else None
        return _finish_sample(image, disp, valid, rng, self.augment, weight)

    def data_loader(
        self, global_batch: int, rank: int, world_size: int, start_batch: int, **options: Any
    ) -> DataLoader:
        """Read by stream position through :class:`GlobalBatchSampler` (the same global batches at any
        process count)."""
        sampler = GlobalBatchSampler(global_batch, rank, world_size, start_batch=start_batch)
        return DataLoader(self, batch_sampler=sampler, **options)

    def first_samples(self, n: int) -> list[dict[str, torch.Tensor]]:
        return [self[i] for i in range(min(n, self.n))]


class GlobalBatchSampler(Sampler[list[int]]):
    """Infinite batches of stream positions; global batch ``k`` is positions
    ``[k*G, (k+1)*G)`` and rank ``r`` takes ``[k*G + r*b, k*G + (r+1)*b)`` (``b = G / world``)."""

    def __init__(
        self, global_batch: int, rank: int, world_size: int, start_batch: int = 0, max_batches: int | None = None
    ):
        if global_batch % world_size:
            raise ConfigError(f"data.batch_size={global_batch} is not divisible by {world_size} processes")
        self.g, self.b, self.rank = global_batch, global_batch // world_size, rank
        self.start = int(start_batch)
        self.max_batches = max_batches

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while self.max_batches is None or k < self.max_batches:
            first = k * self.g + self.rank * self.b
            yield list(range(first, first + self.b))
            k += 1

    def __len__(self) -> int:
        return (self.max_batches if self.max_batches is not None else 2**31) - self.start


# ---------------------------------------------------------------------------------------------
# dataset kinds: one registry, one base class


@dataclass(frozen=True)
class OpenOptions:
    """How the trainer opens every dataset of a run (the same for all kinds; a kind uses what it needs).

    ``uncertainty``: how shard labels use their stored uncertainty; with weighting on, samples of the
    other kinds carry all-ones weights. ``clip_frames > 1``: clips instead of frames (kinds with
    :attr:`DatasetKind.clips`).
    """

    augment: AugmentConfig
    seed: int
    infinite: bool = True
    shuffle: bool = True
    uncertainty: UncertaintyUse = UncertaintyUse()
    rank: int | None = None
    world_size: int | None = None
    clip_frames: int = 1
    clip_max_rejected: int | None = None


class DatasetKind:
    """One kind of training dataset (``DatasetSpec.kind``): how a spec of that kind is checked and opened.

    A new kind is one subclass registered in :data:`DATASET_KINDS`; the configuration's validation,
    :func:`build_dataset` and :func:`validation_samples` ask the registry, so there is no other list of
    kinds to keep in step.

    Attributes:
        clips: the kind can feed clips (``data.clip_frames > 1``).
        needs_path: ``DatasetSpec.path`` must be set.
    """

    clips: bool = False
    needs_path: bool = True

    def check(self, spec: DatasetSpec, label: str) -> None:
        """Check the spec's values for this kind without touching files (:meth:`TrainConfig.validate`).

        Raises:
            ConfigError: naming ``label`` and the value.
        """
        if self.needs_path and not spec.path:
            raise ConfigError(f"{label}: path is empty")

    def open(self, spec: DatasetSpec, options: OpenOptions) -> TrainingDataset:
        """The dataset object the trainer reads (a :class:`TrainingDataset`: a streaming
        :class:`ShardDataset`, a :class:`PositionDataset` over a map-style adapter, or a kind's own)."""
        raise NotImplementedError

    def first_samples(self, spec: DatasetSpec, n: int, options: OpenOptions) -> list[dict[str, torch.Tensor]]:
        """Up to ``n`` samples in order (validation)."""
        return self.open(spec, options).first_samples(n)


#: every dataset kind by name (:class:`pipeline.registry.Registry`): ``DATASET_KINDS.create(kind)`` is
#: its :class:`DatasetKind`; an unknown kind lists the valid ones.
DATASET_KINDS: Registry = Registry("dataset kind")


@DATASET_KINDS.register("shards")
class ShardsKind(DatasetKind):
    """A depthmine dataset (folder, ``manifest.json`` or URI): :class:`ShardDataset`, or with
    ``clip_frames > 1`` :class:`training.clips.ClipDataset`."""

    clips = True

    def _streaming(self, spec: DatasetSpec, o: OpenOptions) -> dict[str, Any]:
        return dict(
            augment=o.augment,
            seed=o.seed,
            shuffle=o.shuffle,
            shuffle_buffer=spec.shuffle_buffer,
            infinite=o.infinite,
            movie_ids=spec.movie_ids,
            uncertainty=o.uncertainty,
            rank=o.rank,
            world_size=o.world_size,
        )

    def open(self, spec: DatasetSpec, options: OpenOptions) -> ShardDataset:
        if options.clip_frames > 1:
            from training.clips import ClipDataset

            return ClipDataset(
                spec.path,
                spec.split,
                clip_frames=options.clip_frames,
                max_rejected=options.clip_max_rejected,
                **self._streaming(spec, options),
            )
        return ShardDataset(spec.path, spec.split, **self._streaming(spec, options))


class _MapKind(DatasetKind):
    """A map-style adapter (``adapter(spec)`` with ``len`` and ``load(i)``), read by stream position."""

    adapter: Any = None

    def open(self, spec: DatasetSpec, options: OpenOptions) -> PositionDataset:
        return PositionDataset(
            type(self).adapter(spec),
            options.augment,
            options.seed,
            options.shuffle,
            weighting=options.uncertainty.weighting,
        )


class _PairKind(_MapKind):
    """Folder and CSV adapters: a declared target kind, a validity rule and a scale."""

    def check(self, spec: DatasetSpec, label: str) -> None:
        from training.config import TARGET_KINDS, VALIDITY_RULES

        if spec.target not in TARGET_KINDS:
            raise ConfigError(f"{label}: target {spec.target!r} is not one of {', '.join(TARGET_KINDS)}")
        if spec.validity not in VALIDITY_RULES:
            raise ConfigError(f"{label}: validity {spec.validity!r} is not one of {', '.join(VALIDITY_RULES)}")
        if not spec.target_scale > 0:
            raise ConfigError(f"{label}: target_scale must be > 0 (got {spec.target_scale})")
        super().check(spec, label)


@DATASET_KINDS.register("folder")
class FolderKind(_PairKind):
    """:class:`FolderDataset`."""

    adapter = FolderDataset


@DATASET_KINDS.register("csv")
class CsvKind(_PairKind):
    """:class:`CsvDataset`."""

    adapter = CsvDataset


@DATASET_KINDS.register("synthetic")
class SyntheticKind(_MapKind):
    """:class:`SyntheticDataset` (no files)."""

    adapter = SyntheticDataset
    needs_path = False

    def check(self, spec: DatasetSpec, label: str) -> None:
        if spec.size < 1 or min(spec.image_size) < 8:
            raise ConfigError(f"{label}: synthetic size must be >= 1 and image_size at least 8x8")


def dataset_kind(kind: str) -> DatasetKind:
    """The :class:`DatasetKind` called ``kind``.

    Raises:
        ConfigError: an unknown kind (the message lists :data:`DATASET_KINDS`).
    """
    return DATASET_KINDS.create(kind)


def build_dataset(
    spec: DatasetSpec,
    augment_config: AugmentConfig,
    seed: int,
    *,
    infinite: bool = True,
    shuffle: bool = True,
    uncertainty: UncertaintyUse | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    clip_frames: int = 1,
    clip_max_rejected: int | None = None,
) -> TrainingDataset:
    """The dataset object for one :class:`DatasetSpec`, opened by its kind (:data:`DATASET_KINDS`;
    an unknown kind lists the valid ones). Arguments as :class:`OpenOptions`."""
    options = OpenOptions(
        augment_config,
        seed,
        infinite=infinite,
        shuffle=shuffle,
        uncertainty=uncertainty or UncertaintyUse(),
        rank=rank,
        world_size=world_size,
        clip_frames=clip_frames,
        clip_max_rejected=clip_max_rejected,
    )
    return dataset_kind(spec.kind).open(spec, options)


def _collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class MixedLoader:
    """Every batch: ``batch_size / world_size`` samples of each dataset, concatenated in dataset
    order, plus ``dataset`` (the index of each sample's dataset).

    ``state_dict()`` is the number of batches handed out; a loader built with it as
    ``start_batch`` continues exactly where the saved one stopped.
    """

    def __init__(
        self,
        datasets: list[TrainingDataset],
        global_batch: int,
        num_workers: int,
        start_batch: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        rank, world = dist_info()
        if global_batch % world:
            raise ConfigError(f"data.batch_size={global_batch} is not divisible by {world} processes")
        self.datasets = datasets
        self.per_rank = global_batch // world
        self.batches = int(start_batch)
        self.loaders = []
        for ds in datasets:
            common = dict(num_workers=num_workers, collate_fn=_collate, pin_memory=pin_memory, persistent_workers=False)
            if num_workers > 0:
                common["prefetch_factor"] = 2
            self.loaders.append(ds.data_loader(global_batch, rank, world, self.batches, **common))
        self._iters: list[Iterator] | None = None

    def __iter__(self) -> MixedLoader:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iters is None:
            self._iters = [iter(loader) for loader in self.loaders]
        parts = [next(it) for it in self._iters]
        self.batches += 1
        batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        batch["dataset"] = torch.cat(
            [torch.full((len(p["target"]),), i, dtype=torch.long) for i, p in enumerate(parts)]
        )
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"batches": self.batches, "per_rank_batch": self.per_rank}

    def close(self) -> None:
        self._iters = None  # drops worker processes


def validation_samples(spec: DatasetSpec, n: int, size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Up to ``n`` centre-cropped validation samples of side ``size`` (deterministic, in stored order)."""
    options = OpenOptions(
        AugmentConfig(size=size, enabled=False), seed, infinite=False, shuffle=False, rank=0, world_size=1
    )
    return dataset_kind(spec.kind).first_samples(spec, n, options)
