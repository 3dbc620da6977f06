"""Everything a training run can get wrong, checked once before anything starts.

``depthmine train`` calls :func:`preflight` in the launching process, before it builds a model or
spawns torchrun, so a mistake is one line and exit 2 instead of a traceback from inside a data
worker or from every torchrun rank. :func:`training.train.run_training` calls it again (cheap: a
manifest read and one sample per dataset), so library and ``torchrun -m training.train`` users
get the same checks.

Checked: every configuration value (:meth:`TrainConfig.validate`), the batch size against the
process count, that every dataset opens and yields a first sample (so a missing folder, an empty
split or an unreadable target file names itself here), the shard counts against processes x
loader workers, the resume checkpoint and the pretrained weights exist, and that no live run holds
the run folder. The one thing it changes: ``data.num_workers`` is lowered when a shard dataset has
fewer shards than processes x workers (every reader needs a shard of its own), with a notice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import BadInputError, ConfigError
from training.config import TrainConfig

__all__ = ["Preflight", "preflight"]


@dataclass
class Preflight:
    """The checked configuration (possibly with fewer loader workers) and notices for the user."""

    config: TrainConfig
    notices: list[str] = field(default_factory=list)
    shard_counts: dict[str, int] = field(default_factory=dict)


def preflight(config: TrainConfig, world_size: int = 1, *, check_lock: bool = True) -> Preflight:
    """Check ``config`` for a run of ``world_size`` processes; returns a checked copy.

    Raises:
        ConfigError / BadInputError / DepthmineError: the first problem found, in one line.
    """
    cfg = copy.deepcopy(config).validate()
    result = Preflight(cfg)
    d = cfg.data
    if world_size < 1:
        raise ConfigError(f"{world_size} processes: need at least 1")
    if d.batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={d.batch_size} is not divisible by {world_size} processes "
            f"(every process takes an equal slice of each dataset's global batch)"
        )
    if cfg.model.pretrained_path and not Path(cfg.model.pretrained_path).is_file():
        raise BadInputError(cfg.model.pretrained_path, "no such weights file (model.pretrained_path)")
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).is_file():
        raise BadInputError(
            cfg.resume, "no such checkpoint to resume from", "pass --resume auto to continue in out_dir"
        )
    _check_out_dir(cfg.out_dir)
    if check_lock:
        from training.runlock import check_unlocked

        check_unlocked(cfg.out_dir)

    for spec in d.datasets:
        n = _open_and_sample(spec, cfg, world_size)
        if n is not None:
            result.shard_counts[spec.name] = n
    if d.val is not None:
        _open_and_sample(d.val, cfg, 1, validation=True)

    if result.shard_counts:
        fewest_name, fewest = min(result.shard_counts.items(), key=lambda kv: kv[1])
        if fewest < world_size:
            raise ConfigError(
                f"dataset {fewest_name!r} has {fewest} shard(s) for {world_size} processes: every process needs "
                "a shard of its own; use fewer processes (--nproc) or rebuild the dataset with smaller shards "
                "(shards.target_shard_bytes)"
            )
        allowed = fewest // world_size
        readers = max(1, d.num_workers)
        if readers > allowed:
            lowered = allowed if allowed > 1 else 0
            result.notices.append(
                f"data.num_workers={d.num_workers} lowered to {lowered}: dataset {fewest_name!r} has {fewest} "
                f"shard(s) for {world_size} process(es) x {d.num_workers} loader worker(s), and every reader "
                f"needs a shard of its own" + (" (0: read in the training process)" if lowered == 0 else "")
            )
            d.num_workers = lowered
    return result


def _check_out_dir(out_dir: str) -> None:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInputError(out, "is a file, not a run folder (out_dir / --out)")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise BadInputError(out, "cannot be created (out_dir / --out)")
    import os

    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(parent, "is not writable (out_dir / --out)")


def _open_and_sample(spec, cfg: TrainConfig, world_size: int, validation: bool = False) -> int | None:
    """Open the dataset as the trainer will and read one sample; returns its shard count (None: the
    dataset's readers share it by position, :attr:`training.datasets.TrainingDataset.shard_count`)."""
    from training.datasets import UncertaintyUse, build_dataset
    from training.transforms import AugmentConfig

    where = "data.val" if validation else f"dataset {spec.name!r}"
    aug = AugmentConfig(size=cfg.data.val_size, enabled=False) if validation else cfg.data.augment
    use = (
        UncertaintyUse() if validation else UncertaintyUse(cfg.data.max_uncertainty_px, cfg.data.uncertainty_weighting)
    )
    try:
        clips = (
            {} if validation else {"clip_frames": cfg.data.clip_frames, "clip_max_rejected": cfg.data.clip_max_rejected}
        )
        ds = build_dataset(
            spec, aug, cfg.seed, infinite=False, shuffle=False, uncertainty=use, rank=0, world_size=1, **clips
        )
        first = ds.first_samples(1)
    except BadInputError as exc:
        raise BadInputError(exc.path, f"{where}: {exc.problem}", exc.hint) from exc
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise BadInputError(
            spec.path, f"{where}: cannot read the first sample ({exc.__class__.__name__}: {exc})"
        ) from exc
    if not first:
        raise BadInputError(spec.path, f"{where}: no rows of split {spec.split!r}")
    return ds.shard_count
