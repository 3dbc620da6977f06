"""The trainer: ``torchrun -m training.train --config FILE [key=value ...]``.

Reads top to bottom: configuration -> process group (torchrun's environment variables; gloo on
the CPU, nccl on GPUs) -> model, optimizer (Adam, two learning-rate groups) -> resume -> data
(:class:`training.datasets.MixedLoader`) -> the loop (autocast, mixing, backward, clipping, step)
-> logs (CSV always, TensorBoard optionally, tqdm on rank 0) and checkpoints (full state, every
``checkpoint_every`` steps, atomically).

:func:`run_training` is the library entry the Prefect flow and the tests call; ``main()`` is the
command line (also reached through ``depthmine train``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from pipeline.atomic import atomic_open, atomic_path
from pipeline.config import config_to_dict
from pipeline.errors import BadInputError, ConfigError, DepthmineError
from training.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from training.cli_options import add_train_options
from training.config import TrainConfig, load_train_config, recipe_hash
from training.datasets import MixedLoader, UncertaintyUse, build_dataset, validation_samples
from training.losses import ScaleAndShiftInvariantLoss, align_least_squares
from training.mixing import create_mixer
from training.model import DepthModel, build_model
from training.preflight import preflight
from training.runlock import RunLock
from training.transforms import batch_to_input

__all__ = ["TrainResult", "run_training", "load_train_config", "aligned_disparity_error", "param_groups", "main"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        out_dir: the run folder. checkpoint: the final checkpoint (``final.pt``).
        steps: steps done in total (including those before a resume).
        losses: the global-batch loss of every step this process ran (averaged over ranks).
        final_loss: mean of the last ``log_every`` losses.
        val_error_start, val_error: aligned disparity RMSE on the validation set before the first
            step of this run and at the end (None without ``data.val``).
        mixing_weights: the last step's per-dataset weights.
        datasets: the training datasets' names (the order of ``mixing_weights``).
        notices: what the pre-flight check adjusted (e.g. fewer loader workers).
    """

    out_dir: str
    checkpoint: str
    steps: int
    losses: list[float] = field(default_factory=list)
    final_loss: float | None = None
    val_error_start: float | None = None
    val_error: float | None = None
    mixing_weights: list[float] = field(default_factory=list)
    config_hash: str = ""
    datasets: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


@dataclass
class _Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_pref: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return _Dist(rank, world, local, device, owns)


def param_groups(
    model: DepthModel, lr_pretrained: float, lr_new: float, encoder_pretrained: bool, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Adam groups: the encoder at ``lr_pretrained`` when it was pretrained (else ``lr_new``),
    the decoder at ``lr_new``."""
    enc_lr = lr_pretrained if encoder_pretrained else lr_new
    return [
        {
            "params": model.encoder_parameters(),
            "lr": enc_lr,
            "base_lr": enc_lr,
            "name": "encoder",
            "weight_decay": weight_decay,
        },
        {
            "params": model.decoder_parameters(),
            "lr": lr_new,
            "base_lr": lr_new,
            "name": "decoder",
            "weight_decay": weight_decay,
        },
    ]


@torch.no_grad()
def aligned_disparity_error(
    model: torch.nn.Module,
    samples: list[dict[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    batch_size: int = 8,
) -> float:
    """RMSE over valid pixels between the least-squares aligned prediction and the target
    (disparity in [0, 1]): the relative-depth validation metric of the paper.

    ``samples`` are dataset samples (uint8 ``image``, ``target``, ``mask``), e.g. from
    :func:`training.datasets.validation_samples`.
    """
    was_training = model.training
    model.eval()
    sq, count = 0.0, 0
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        x = batch_to_input(torch.stack([s["image"] for s in chunk]).to(device))
        t = torch.stack([s["target"] for s in chunk]).to(device)
        m = torch.stack([s["mask"] for s in chunk]).to(device)
        pred = model(x).float()
        aligned = align_least_squares(pred, t, m)
        sq += float(((aligned - t) ** 2 * m).sum())
        count += int(m.sum())
    model.train(was_training)
    return (sq / max(count, 1)) ** 0.5


def _resolve_resume(cfg: TrainConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        last = Path(cfg.out_dir) / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(cfg.resume)
    if not path.is_file():
        raise BadInputError(path, "no such checkpoint to resume from", "pass --resume auto to continue in out_dir")
    return path


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.precision
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[p]


class _Logs:
    """CSV (always) and TensorBoard (optional) on rank 0.

    ``metrics.csv`` columns: ``step``, ``loss`` (the global-batch loss averaged over the logging
    window), ``lr_encoder``, ``lr_decoder``, ``samples_per_s``, then per training dataset NAME
    ``loss/NAME`` (its loss, averaged over the window and over the processes) and ``weight/NAME``
    (its mixing weight, averaged over the window), and ``val_error``.
    """

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: int, names: Sequence[str]):
        self.enabled = enabled
        self.tb = None
        self.fh = None
        if not enabled:
            return
        path = out_dir / "metrics.csv"
        keep = []
        if resume_step and path.exists():
            # drop rows past the checkpoint we resume from: they will be redone
            with open(path, newline="") as fh:
                keep = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
        self.fh = open(path, "w", newline="")
        self.fields = (
            ["step", "loss", "lr_encoder", "lr_decoder", "samples_per_s"]
            + [f"loss/{n}" for n in names]
            + [f"weight/{n}" for n in names]
            + ["val_error"]
        )
        self.writer = csv.DictWriter(self.fh, fieldnames=self.fields, extrasaction="ignore")
        self.writer.writeheader()
        for r in keep:
            self.writer.writerow(r)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step or None)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.writer.writerow({k: row[k] for k in self.fields if k in row})
        self.fh.flush()
        if self.tb is not None:
            step = row["step"]
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self.fh:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()


CRASH_ENV = "DEPTHMINE_TEST_CRASH_AT_STEP"


def _test_crash_step() -> int | None:
    """Testing only, never in the configuration: with ``DEPTHMINE_TEST_CRASH_AT_STEP=N`` in its
    environment, the process kills itself (SIGKILL) right after step N's checkpoint, so recovery from
    a real crash can be tested."""
    value = os.environ.get(CRASH_ENV)
    return int(value) if value else None


def _save(
    cfg: TrainConfig, model, optimizer, scaler, step: int, loader: MixedLoader, name: str | None, extra: dict[str, Any]
) -> Path:
    ckdir = Path(cfg.out_dir) / "checkpoints"
    path = ckdir / (name or f"step-{step:08d}.pt")
    save_checkpoint(
        path,
        model,
        optimizer=optimizer,
        scaler=scaler,
        step=step,
        data_state=loader.state_dict(),
        train_config=cfg,
        extra=extra,
    )
    with atomic_path(ckdir / "last.pt") as tmp:
        shutil.copyfile(path, tmp)
    if name is None and cfg.keep_checkpoints > 0:
        old = sorted(ckdir.glob("step-*.pt"))[: -cfg.keep_checkpoints]
        for p in old:
            p.unlink(missing_ok=True)
    return path


def run_training(config: TrainConfig, *, announce: bool = True) -> TrainResult:
    """Train as ``config`` says; returns where the results are.

    Works in a plain process (one rank) and under ``torchrun`` (reads ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``; creates the process group if none exists and destroys it at the end). First
    the pre-flight check (:func:`training.preflight.preflight`); then rank 0 holds the run
    folder's lock (:class:`training.runlock.RunLock`) until the run ends.

    Args:
        announce: log the pre-flight notices (the CLI prints them itself and passes False).

    Raises:
        ConfigError / BadInputError: bad configuration or data (nothing trained).
        DepthmineError: another live run holds ``out_dir``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    checked = preflight(config, world, check_lock=False)
    cfg = checked.config
    if announce and rank == 0:
        for notice in checked.notices:
            log.warning("%s", notice)
    lock = RunLock(cfg.out_dir).acquire() if rank == 0 else None
    try:
        ctx = _setup_distributed(cfg.device)
        try:
            result = _train(cfg, ctx)
            result.notices = list(checked.notices)
            return result
        finally:
            if ctx.owns_group and dist.is_initialized():
                dist.destroy_process_group()
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, ctx: _Dist) -> TrainResult:
    return _Trainer(cfg, ctx).run()


class _Trainer:
    """One training run in this process; the constructor sets it up, :meth:`run` trains.

    Set-up, in this order (the order fixes the random streams a resumed run replays): the run folder
    and ``config.yaml``, the model (seeded), Adam with two learning-rate groups and the grad scaler,
    the resume from a checkpoint, the wrappers (SyncBatchNorm, DDP, compile), the data, the loss and
    the mixer. Then :meth:`run`: :meth:`train_step` per step, the logging window, the checkpoints,
    and :meth:`finish` (final validation and ``final.pt``).
    """

    def __init__(self, cfg: TrainConfig, ctx: _Dist):
        self.cfg, self.ctx = cfg, ctx
        self.out_dir = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)
        if ctx.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.out_dir / "config.yaml", "w", encoding="utf-8") as fh:
                yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
        self._build_model()
        self.step, start_batch = self._resume()
        self._wrap_model()
        self._build_data(start_batch)
        self.loss_fn = _loss_function(cfg)
        self.mixer = create_mixer(cfg.mixing)
        self.shared = self.model.encoder_parameters()
        self.names = [spec.name for spec in cfg.data.datasets]

    # -- set-up --------------------------------------------------------------------------
    def _build_model(self) -> None:
        cfg, o = self.cfg, self.cfg.optim
        self.model = build_model(cfg.model).to(self.ctx.device)
        pretrained = bool(cfg.model.pretrained_path)
        self.optimizer = torch.optim.Adam(
            param_groups(self.model, o.lr_pretrained, o.lr_new, pretrained, o.weight_decay), betas=tuple(o.betas)
        )
        self.amp_dtype = _precision(cfg, self.ctx.device)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type) if self.amp_dtype == torch.float16 else None

    def _resume(self) -> tuple[int, int]:
        """``(step, loader batches handed out)`` of the checkpoint resumed from; ``(0, 0)`` for a new run."""
        cfg = self.cfg
        resume_path = _resolve_resume(cfg)
        if resume_path is None:
            return 0, 0
        # on the CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest
        state = load_checkpoint(resume_path, map_location="cpu")
        if state.get("format") == "midas" or "optimizer" not in state:
            raise BadInputError(
                resume_path,
                "not a training checkpoint (no optimizer state)",
                "to start from these weights set model.pretrained_path instead",
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        if "rng" in state:
            restore_rng_state(state["rng"])
        # the loader's exact position (batches handed out), saved with the checkpoint; one batch per step
        start_batch = int((state.get("data_state") or {}).get("batches", step))
        if state.get("config_hash") and state["config_hash"] != recipe_hash(cfg):
            log.warning("resuming from %s written with a different configuration", resume_path)
        log.info("resumed from %s at step %d", resume_path, step)
        return step, start_batch

    def _wrap_model(self) -> None:
        """``train_model``: the model as the steps call it (DDP, compiled); ``model`` stays the plain one."""
        cfg, ctx = self.cfg, self.ctx
        self.train_model: torch.nn.Module = self.model
        if ctx.world > 1 and ctx.device.type == "cuda" and cfg.sync_batchnorm:
            # swaps modules, keeps the Parameters
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if ctx.world > 1:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)

    def _build_data(self, start_batch: int) -> None:
        cfg, ctx, d = self.cfg, self.ctx, self.cfg.data
        use = UncertaintyUse(d.max_uncertainty_px, d.uncertainty_weighting)
        self.clip_frames = d.clip_frames
        self.datasets = [
            build_dataset(
                spec,
                d.augment,
                cfg.seed + 1009 * i,
                uncertainty=use,
                clip_frames=d.clip_frames,
                clip_max_rejected=d.clip_max_rejected,
            )
            for i, spec in enumerate(d.datasets)
        ]
        self.loader = MixedLoader(
            self.datasets, d.batch_size, d.num_workers, start_batch=start_batch, pin_memory=ctx.device.type == "cuda"
        )
        self.val = validation_samples(d.val, d.val_samples, d.val_size) if (d.val and ctx.main) else []
        # frames per dataset in this rank's batch (clips flattened)
        self.per_rank = self.loader.per_rank * self.clip_frames

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        logs = _Logs(self.out_dir, ctx.main, cfg.tensorboard, self.step, self.names)
        result = TrainResult(
            out_dir=str(self.out_dir), checkpoint="", steps=self.step, config_hash=recipe_hash(cfg), datasets=self.names
        )
        if self.val:
            result.val_error_start = aligned_disparity_error(self.model, self.val, ctx.device)
            log.info("validation aligned disparity RMSE before training: %.4f", result.val_error_start)

        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.max_steps, initial=self.step, disable=not (ctx.main and cfg.progress), desc="train", unit="step"
        )
        quiet_logs = cfg.progress and not bar.disable  # the bar shows the loss
        crash_at = _test_crash_step()
        if ctx.main:
            log.info(
                "training %s from step %d to %d in %s (%d process(es))",
                ", ".join(self.names),
                self.step,
                cfg.max_steps,
                self.out_dir,
                ctx.world,
            )
        window = _LogWindow(len(self.datasets))
        last_info: dict[str, Any] = {}
        self.train_model.train()
        try:
            while self.step < cfg.max_steps:
                loss_value, info = self.train_step(next(self.loader))
                result.losses.append(loss_value)
                window.add(loss_value, info, self.per_rank * len(self.datasets) * ctx.world)
                last_info = info
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    row = self._log_row(window)
                    result.final_loss = row["loss"]
                    if ctx.main and not quiet_logs:
                        log.info("step %d/%d loss %.4f", self.step, cfg.max_steps, row["loss"])
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if cfg.val_every and self.step % cfg.val_every == 0 and self.val:
                        row["val_error"] = aligned_disparity_error(self.model, self.val, ctx.device)
                    logs.write(row)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                    self._checkpoint(None, {"mixing_weights": info["weights"]})
                    if crash_at == self.step:
                        os.kill(os.getpid(), signal.SIGKILL)  # testing: a real crash, no cleanup
        finally:
            bar.close()
            self.loader.close()
            logs.close()
        result.mixing_weights = list(last_info.get("weights", []))
        return self.finish(result)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, Any]]:
        """One optimisation step on one mixed batch: ``(global-batch loss, the mixer's info)``.

        Raises:
            DepthmineError: the loss is not finite.
        """
        ctx, o = self.ctx, self.cfg.optim
        if self.clip_frames > 1:  # (B, T, ...) clips -> (B*T, ...) frames, clip by clip
            batch = {k: (v.flatten(0, 1) if k != "dataset" else v) for k, v in batch.items()}
        x = batch_to_input(batch["image"].to(ctx.device, non_blocking=True))
        target = batch["target"].to(ctx.device, non_blocking=True)
        mask = batch["mask"].to(ctx.device, non_blocking=True)
        weight = batch["weight"].to(ctx.device, non_blocking=True) if "weight" in batch else None
        if o.warmup_steps > 0:
            for g in self.optimizer.param_groups:
                g["lr"] = g["base_lr"] * min(1.0, (self.step + 1) / o.warmup_steps)
        autocast = (
            torch.autocast(ctx.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()
        )
        with autocast:
            pred = self.train_model(x)
        pred = pred.float()
        tensors = [pred, target, mask]
        if self.clip_frames > 1:
            tensors += [batch["flow"].to(ctx.device), batch["flow_valid"].to(ctx.device)]
        tensors += [weight] if weight is not None else []
        n = self.per_rank
        parts = [tuple(t[i * n : (i + 1) * n] for t in tensors) for i in range(len(self.datasets))]
        loss, info = self.mixer.combine(parts, self.loss_fn, self.shared)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        loss_value = loss.detach()
        if ctx.world > 1:
            dist.all_reduce(loss_value)
            loss_value = loss_value / ctx.world
        lv = float(loss_value)
        if not torch.isfinite(loss_value):
            raise DepthmineError(f"loss became {lv} at step {self.step}; lower optim.lr_new or check the data")
        return lv, info

    # -- logs and checkpoints ------------------------------------------------------------
    def _log_row(self, window: _LogWindow) -> dict[str, Any]:
        """The CSV row of the logging window that ends now (per-dataset parts averaged over ranks); resets it."""
        ctx = self.ctx
        now = time.perf_counter()
        parts_mean = window.parts / len(window.losses)
        if ctx.world > 1:  # every rank logs at the same steps: average over the processes
            reduced = parts_mean.to(ctx.device)
            dist.all_reduce(reduced)
            parts_mean = reduced.cpu() / ctx.world
        row = {
            "step": self.step,
            "loss": sum(window.losses) / len(window.losses),
            "lr_encoder": self.optimizer.param_groups[0]["lr"],
            "lr_decoder": self.optimizer.param_groups[1]["lr"],
            "samples_per_s": window.samples / max(now - window.started, 1e-9),
        }
        n_sets = len(self.names)
        for i, name in enumerate(self.names):
            row[f"loss/{name}"] = float(parts_mean[i])
            row[f"weight/{name}"] = float(parts_mean[n_sets + i])
        window.reset(now)
        return row

    def _checkpoint(self, name: str | None, extra: dict[str, Any]) -> None:
        if self.ctx.main:
            path = _save(self.cfg, self.model, self.optimizer, self.scaler, self.step, self.loader, name, extra)
            if name is None:
                log.info("saved checkpoint %s", path)

    def finish(self, result: TrainResult) -> TrainResult:
        """After the last step: the final validation and ``final.pt`` (rank 0), then a barrier."""
        ctx = self.ctx
        result.steps = self.step
        if self.val:
            result.val_error = aligned_disparity_error(self.model, self.val, ctx.device)
            log.info("validation aligned disparity RMSE after %d steps: %.4f", self.step, result.val_error)
        extra = {
            "mixing_weights": result.mixing_weights,
            "val_error": result.val_error,
            "val_error_start": result.val_error_start,
        }
        self._checkpoint("final.pt", {k: v for k, v in extra.items() if v is not None})
        if ctx.world > 1:
            dist.barrier()
        result.checkpoint = str(Path(self.cfg.out_dir) / "checkpoints" / "final.pt")
        return result


class _LogWindow:
    """What one rank saw since the last log row: losses, per-dataset losses and weights, samples."""

    def __init__(self, n_sets: int):
        self.parts = torch.zeros(2 * n_sets, dtype=torch.float64)  # per-dataset losses, then weights (sums)
        self.reset(time.perf_counter())

    def add(self, loss: float, info: dict[str, Any], samples: int) -> None:
        self.losses.append(loss)
        self.parts += torch.tensor([*info["losses"], *info["weights"]], dtype=torch.float64)
        self.samples += samples

    def reset(self, now: float) -> None:
        self.losses: list[float] = []
        self.parts.zero_()
        self.samples = 0
        self.started = now


def _loss_function(cfg: TrainConfig):
    """The per-frame loss, wrapped in a :class:`training.temporal.ClipLoss` when training on clips."""
    loss_fn = ScaleAndShiftInvariantLoss(cfg.loss.kind, cfg.loss.alpha, cfg.loss.scales, cfg.loss.trim)
    if cfg.data.clip_frames > 1:  # clips: the per-frame loss on every frame plus the temporal term
        from training.temporal import ClipLoss

        loss_fn = ClipLoss(
            loss_fn, cfg.data.clip_frames, cfg.loss.temporal_weight, cfg.loss.temporal, cfg.loss.temporal_threshold
        )
    return loss_fn


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train the MiDaS-style depth model on depthmine shards (and other datasets). "
        "Run under torchrun for several processes: torchrun --standalone --nproc_per_node=N -m training.train ...",
    )
    add_train_options(p, config_required=False)
    p.add_argument("extra", nargs="*", metavar="KEY=VALUE", help="more overrides")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = [*args.overrides, *args.extra]
    if args.resume:
        overrides.append(f"resume={args.resume}")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    return load_train_config(args.config, overrides)


def die_with_parent() -> None:
    """Under torchrun: ask the kernel to SIGKILL this worker when its launcher dies.

    torchrun stops its workers when it is signalled, but a SIGKILLed torchrun cannot, and its
    workers would train on as orphans, writing the run folder. ``PR_SET_PDEATHSIG`` (Linux) ties
    the worker's life to its parent; elsewhere this does nothing. If the parent is already gone
    (reparented to init), exit at once.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() == 1:
        os._exit(1)


# set by ``depthmine train --nproc N`` for its torchrun: the launcher already printed the notices
LAUNCHED_ENV = "DEPTHMINE_TRAIN_LAUNCHED"


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = run_training(config_from_args(args), announce=os.environ.get(LAUNCHED_ENV) != "1")
    except DepthmineError as err:
        print(f"depthmine train: error: {err}", file=sys.stderr)
        return err.exit_code
    if rank == 0:
        print(f"trained {result.steps} steps; final loss {result.final_loss}; checkpoint {result.checkpoint}")
        if result.val_error is not None:
            print(f"validation aligned disparity RMSE: {result.val_error_start:.4f} -> {result.val_error:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
