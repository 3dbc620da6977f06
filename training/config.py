"""The trainer's configuration: one dataclass per part, YAML plus ``key=value`` overrides.

``load_train_config("train_demo", ["optim.lr_new=3e-4", "max_steps=200"])`` reads the
YAML, applies dotted overrides (values parsed as YAML scalars), and maps the result onto
:class:`TrainConfig` with :func:`pipeline.config.config_from_dict`, so an unknown key or a badly
typed value is a :class:`~pipeline.errors.ConfigError` naming it. The resolved configuration and its
hash are stored in every checkpoint. Defaults are the paper's recipe (docs/METHOD.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pipeline.config import apply_overrides, config_from_dict, config_hash, config_to_dict, load_yaml, merge_dicts
from pipeline.errors import ConfigError
from training.mixing import MixingConfig
from training.model import ModelConfig
from training.transforms import AugmentConfig

__all__ = [
    "DatasetSpec",
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "load_train_config",
    "recipe_hash",
    "RUN_SETTINGS",
    "resolve_config_path",
    "shipped_configs",
    "train_config_from_dict",
    "demo_train_config",
]

VALIDITY_RULES = ("positive", "finite", "nonzero")
TARGET_KINDS = ("depth", "depth_up_to_scale", "inverse_depth", "disparity", "disparity_up_to_scale_shift")


@dataclass
class DatasetSpec:
    """One training (or validation) dataset.

    Attributes:
        name: label in the logs.
        kind: ``shards`` (a depthmine dataset: folder, manifest.json or URI), ``folder``
            (``images/`` + ``targets/`` with matching stems), ``csv`` (rows ``image,target``,
            relative to the CSV's folder) or ``synthetic`` (rendered stereo frames in memory: demos,
            tests and benches without any data).
        path: where the data is (unused for ``synthetic``).
        split: shards only: the split to read (``train``, ``val``, ``test``).
        movie_ids: shards only: restrict to these movies.
        target: folder/csv: what the ground-truth files hold (``depth``, ``depth_up_to_scale``,
            ``inverse_depth``, ``disparity``, ``disparity_up_to_scale_shift``).
        validity: folder/csv: which target pixels are valid: ``positive`` (> 0 and finite),
            ``finite`` or ``nonzero``; plus ``min_value``/``max_value`` bounds when set.
        target_scale: folder/csv: multiply raw target values (e.g. 1/256 for KITTI PNGs).
        size: synthetic only: number of frames. seed: synthetic only: which frames.
        image_size: synthetic only: (width, height) of the rendered frames.
        shuffle_buffer: shards only: samples held for shuffling within shards.
    """

    name: str = "movies"
    kind: str = "shards"
    path: str = ""
    split: str | None = "train"
    movie_ids: list[str] | None = None
    target: str = "disparity_up_to_scale_shift"
    validity: str = "positive"
    min_value: float | None = None
    max_value: float | None = None
    target_scale: float = 1.0
    size: int = 256
    seed: int = 0
    image_size: tuple[int, int] = (96, 64)
    shuffle_buffer: int = 64


@dataclass
class DataConfig:
    """Batches and augmentation.

    Attributes:
        datasets: the training datasets; every batch has ``batch_size`` samples of each.
        batch_size: samples per dataset in a *global* batch (all ranks together; 8 in the paper),
            divisible by the number of processes.
        num_workers: DataLoader workers per dataset and rank. Every reader of a shard dataset
            needs a shard of its own, so with fewer than ranks x workers shards the launcher
            lowers it (with a notice) to ``shards // ranks``; 0 reads in the training process.
        augment: flip / random crop / resize (``augment.size``: 384 in the paper).
        val: held-out dataset for validation (aligned disparity error), or None.
        val_samples: how many validation samples to score.
        val_size: longer side of validation images (multiple of 32).
        max_uncertainty_px: shard datasets only: drop label pixels whose stored ``uncertainty``
            (an error scale in pixels of the stored image, see :mod:`pipeline.disparity`; 1.0
            keeps about 80% of the labels with a quarter of the bad ones on real stereo)
            exceeds this from the valid mask; a pixel whose uncertainty is unknown (NaN) is
            dropped too. Rows stored without uncertainty keep their mask. None (default): off.
        uncertainty_weighting: shard datasets only: ``sigma`` in pixels; each valid pixel's loss
            terms are weighted by ``sigma^2 / (sigma^2 + u^2)`` (1 for a perfectly consistent
            label, 1/2 at ``u = sigma``, 0 for unknown ``u``) and each image's sums are divided by
            its sum of weights instead of its pixel count (see :mod:`training.losses`). Samples
            of other datasets, and rows without uncertainty, weigh 1. 0 (default): off.
            Validation is always unweighted.
        clip_frames: 1 (default) trains on single frames; T > 1 feeds clips of T consecutive
            frames from clips-mode shard datasets (``sampling.mode=clips`` at ingest;
            :class:`training.clips.ClipDataset`): every frame gets the per-frame loss and the
            clip the temporal term of ``loss.temporal``. Every training dataset must then be a
            ``shards`` dataset ingested in clips mode; ``batch_size`` counts clips.
        clip_max_rejected: clips mode: skip clips with more frames that the per-frame checks
            rejected (stored without a label) than this; None (default) keeps every clip, the
            unlabelled frames only losing their loss terms.
    """

    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    batch_size: int = 8
    num_workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val: DatasetSpec | None = None
    val_samples: int = 64
    val_size: int = 384
    max_uncertainty_px: float | None = None
    uncertainty_weighting: float = 0.0
    clip_frames: int = 1
    clip_max_rejected: int | None = None


@dataclass
class LossConfig:
    """``kind``: trim | mae | mse | silog; ``alpha``: gradient-matching weight; ``scales``: K.

    Clips (``data.clip_frames > 1``; docs/METHOD.md §5): ``temporal`` is the temporal term,
    ``tgm`` (temporal gradient matching, no flow needed), ``warp`` (along the stored temporal
    flow) or ``both``; ``temporal_weight`` its weight beside the per-frame loss (0: off);
    ``temporal_threshold`` the ground-truth change (on the clip's [0, 1] scale) above which ``tgm``
    leaves a pixel out.
    """

    kind: str = "trim"
    alpha: float = 0.5
    scales: int = 4
    trim: float = 0.2
    temporal: str = "tgm"
    temporal_weight: float = 1.0
    temporal_threshold: float = 0.05


@dataclass
class OptimConfig:
    """Adam with two learning-rate groups.

    Attributes:
        lr_pretrained: for the encoder when it starts from pretrained weights (1e-5).
        lr_new: for the decoder, and for a randomly initialised encoder (1e-4).
        betas: Adam betas. weight_decay: L2 penalty (0 in the paper).
        grad_clip: max global gradient norm; 0 disables (not part of the paper: a guard against
            the odd broken frame).
        warmup_steps: linear learning-rate warm-up (0 = none, as the paper).
    """

    lr_pretrained: float = 1e-5
    lr_new: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0


@dataclass
class TrainConfig:
    """Everything a training run needs.

    Attributes:
        out_dir: checkpoints (``checkpoints/step-XXXXXXXX.pt``, ``last.pt``, ``final.pt``),
            ``metrics.csv``, TensorBoard events and ``config.yaml`` go here.
        max_steps: optimisation steps (the paper: 60 epochs of 72,000 images = 540,000 / (8 L)).
        seed: data order, augmentation and initialisation.
        log_every, checkpoint_every, val_every: in steps (0 disables the latter two; a final
            checkpoint is always written).
        keep_checkpoints: how many step checkpoints to keep (``last.pt`` always).
        resume: a checkpoint to continue from, or ``auto`` (``out_dir``'s ``last.pt`` if present).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16`` (with a grad scaler),
            ``fp32``.
        compile: wrap the model in ``torch.compile``.
        sync_batchnorm: under multi-GPU DDP, convert the encoder's BatchNorm to SyncBatchNorm so
            its statistics cover the global batch (a few images per GPU otherwise).
        tensorboard: also write TensorBoard events (a CSV is always written).
        progress: a tqdm bar on rank 0.

    The fields in :data:`RUN_SETTINGS` say how this run goes, not what it learns: :func:`recipe_hash`
    leaves them out, so resuming with another ``out_dir``, ``max_steps`` or ``--resume`` is the same
    recipe.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    out_dir: str = "runs/train"
    max_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    val_every: int = 0
    resume: str | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    sync_batchnorm: bool = True
    tensorboard: bool = True
    progress: bool = True

    def validate(self) -> TrainConfig:
        """Check every value the dataclass types cannot, without touching files; returns self.

        Files, shard counts and the process count are checked by
        :func:`training.preflight.preflight`, which calls this first.
        """
        from training.losses import LOSS_KINDS
        from training.mixing import MIXERS, NORMALIZATIONS

        d = self.data
        if not d.datasets:
            raise ConfigError("data.datasets is empty: give at least one training dataset")
        names = [s.name for s in d.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.datasets: names must differ (they label the logs): {', '.join(names)}")
        for where, spec in [
            *((f"data.datasets[{i}]", s) for i, s in enumerate(d.datasets)),
            *([("data.val", d.val)] if d.val else []),
        ]:
            label = f"{where} ({spec.name!r})"
            dataset_kind(spec.kind, label).check(spec, label)
            if spec.shuffle_buffer < 1:
                raise ConfigError(f"{label}: shuffle_buffer must be >= 1")
        if d.batch_size < 1:
            raise ConfigError(f"data.batch_size={d.batch_size}: must be >= 1")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps={self.max_steps}: must be >= 0")
        if d.num_workers < 0:
            raise ConfigError(f"data.num_workers={d.num_workers}: must be >= 0")
        if d.augment.size < 8 or not 0 < d.augment.min_crop_scale <= 1 or not 0 <= d.augment.flip_prob <= 1:
            raise ConfigError("data.augment: size must be >= 8, min_crop_scale in (0, 1], flip_prob in [0, 1]")
        if d.val is not None and (d.val_samples < 1 or d.val_size < 32 or d.val_size % 32):
            raise ConfigError(f"data.val_samples must be >= 1 and data.val_size a multiple of 32 (got {d.val_size})")
        if d.max_uncertainty_px is not None and not d.max_uncertainty_px > 0:
            raise ConfigError(f"data.max_uncertainty_px={d.max_uncertainty_px}: must be > 0 (or null: off)")
        if not d.uncertainty_weighting >= 0:
            raise ConfigError(f"data.uncertainty_weighting={d.uncertainty_weighting}: must be >= 0 px (0: off)")
        if self.loss.kind not in LOSS_KINDS:
            raise ConfigError(f"loss.kind={self.loss.kind!r}: valid kinds: {', '.join(LOSS_KINDS)}")
        if d.uncertainty_weighting > 0 and self.loss.kind == "silog":
            raise ConfigError(
                "data.uncertainty_weighting needs a loss.kind that takes weights (trim, mae, mse), not silog"
            )
        if d.clip_frames < 1:
            raise ConfigError(f"data.clip_frames={d.clip_frames}: must be >= 1 (1: single frames)")
        if d.clip_frames > 1:
            from training.temporal import TEMPORAL_KINDS

            others = [s.name for s in d.datasets if not dataset_kind(s.kind, "").clips]
            if others:
                raise ConfigError(
                    f"data.clip_frames={d.clip_frames} trains on clips of shard datasets; "
                    f"not clips: {', '.join(others)}"
                )
            if self.loss.temporal not in TEMPORAL_KINDS:
                raise ConfigError(f"loss.temporal={self.loss.temporal!r}: valid: {', '.join(TEMPORAL_KINDS)}")
            if self.loss.temporal_weight < 0 or not self.loss.temporal_threshold > 0:
                raise ConfigError("loss: temporal_weight must be >= 0 and temporal_threshold > 0")
        if d.clip_max_rejected is not None and d.clip_max_rejected < 0:
            raise ConfigError(f"data.clip_max_rejected={d.clip_max_rejected}: must be >= 0 (or null)")
        if not 0 <= self.loss.trim < 1 or self.loss.alpha < 0 or self.loss.scales < 1:
            raise ConfigError("loss: trim must be in [0, 1), alpha >= 0, scales >= 1")
        if self.mixing.strategy not in MIXERS:
            raise ConfigError(f"mixing.strategy={self.mixing.strategy!r}: valid: {', '.join(MIXERS)}")
        if self.mixing.normalize not in NORMALIZATIONS:
            raise ConfigError(f"mixing.normalize={self.mixing.normalize!r}: valid: {', '.join(NORMALIZATIONS)}")
        o = self.optim
        if not (o.lr_new > 0 and o.lr_pretrained > 0) or o.grad_clip < 0 or o.warmup_steps < 0:
            raise ConfigError("optim: learning rates must be > 0, grad_clip >= 0, warmup_steps >= 0")
        if self.log_every < 1 or self.checkpoint_every < 0 or self.val_every < 0 or self.keep_checkpoints < 0:
            raise ConfigError("log_every must be >= 1; checkpoint_every, val_every and keep_checkpoints >= 0")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"precision {self.precision!r}: valid: auto, bf16, fp16, fp32")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device {self.device!r}: valid: auto, cpu, cuda")
        return self

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def dataset_kind(kind: str, label: str):
    """The :class:`training.datasets.DatasetKind` called ``kind``, from the one registry of kinds
    (:data:`training.datasets.DATASET_KINDS`; imported on use: the datasets module imports this one).

    Raises:
        ConfigError: an unknown kind, naming ``label`` and the valid kinds.
    """
    from training.datasets import DATASET_KINDS

    if kind not in DATASET_KINDS:
        raise ConfigError(f"{label}: kind {kind!r} is not one of {', '.join(DATASET_KINDS.names())}")
    return DATASET_KINDS.create(kind)


def train_config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Map a plain dict (YAML content) onto :class:`TrainConfig` and validate it."""
    return config_from_dict(TrainConfig, data, where).validate()


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the configurations installed with the package (``training/configs/*.yaml``)."""
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str) -> str:
    """A YAML path as given, or a shipped configuration's name (``train_demo``, ``train_demo.yaml``).

    The configurations ship as package data, so ``--config train_demo`` works from any folder and from
    an installed wheel; an existing file of the same name in the working folder wins.

    Raises:
        ConfigError: neither a file nor a shipped name (the message lists the shipped names).
    """
    if Path(path).is_file():
        return path
    name = path[:-5] if path.endswith(".yaml") else path
    if "/" not in name and (SHIPPED_CONFIGS / f"{name}.yaml").is_file():
        return str(SHIPPED_CONFIGS / f"{name}.yaml")
    raise ConfigError(f"{path}: no such configuration file (shipped configurations: {', '.join(shipped_configs())})")


# How a run goes, not what it learns: left out of the recipe's hash.
RUN_SETTINGS: tuple[str, ...] = (
    "out_dir",
    "resume",
    "progress",
    "max_steps",
    "tensorboard",
    "log_every",
    "keep_checkpoints",
)


def recipe_hash(cfg: TrainConfig) -> str:
    """The hash of what a run learns (model, data, loss, optimiser, mixing, seed, precision...), without
    the :data:`RUN_SETTINGS`; stored in checkpoints and compared on resume."""
    data = config_to_dict(cfg)
    for name in RUN_SETTINGS:
        data.pop(name, None)
    if data["data"].get("clip_frames") == 1:
        # single-frame recipes hash as they did before clips existed (resumes stay quiet)
        for name in ("clip_frames", "clip_max_rejected"):
            data["data"].pop(name, None)
        for name in ("temporal", "temporal_weight", "temporal_threshold"):
            data["loss"].pop(name, None)
    return config_hash(data)


def load_train_config(path: str | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML file or a shipped configuration (or nothing: the defaults) and apply ``key=value`` overrides.

    Raises:
        ConfigError: missing/malformed file, unknown key, bad value.
    """
    path = resolve_config_path(path) if path else None
    data = merge_dicts(config_to_dict(TrainConfig()), load_yaml(path) if path else {})
    apply_overrides(data, list(overrides))
    return train_config_from_dict(data, where=path or "config")


def demo_train_config(dataset: str, out_dir: str, max_steps: int = 200, val_split: str | None = "val") -> TrainConfig:
    """A small CPU run on a depthmine dataset (the demo's): tiny encoder, 64 px crops.

    Args:
        dataset: dataset folder / manifest with a ``train`` split.
        out_dir: run folder.
        val_split: split scored before and after training (None: no validation).
    """
    spec = DatasetSpec(name="movies", kind="shards", path=str(dataset), split="train")
    val = DatasetSpec(name="held-out", kind="shards", path=str(dataset), split=val_split) if val_split else None
    cfg = TrainConfig(
        model=ModelConfig(encoder="tiny", features=32),
        data=DataConfig(
            datasets=[spec],
            batch_size=8,
            num_workers=0,
            augment=AugmentConfig(size=64, min_crop_scale=0.6),
            val=val,
            val_samples=16,
            val_size=64,
        ),
        optim=OptimConfig(lr_new=1e-3),
        out_dir=str(out_dir),
        max_steps=max_steps,
        log_every=20,
        checkpoint_every=100,
    )
    return cfg.validate()
