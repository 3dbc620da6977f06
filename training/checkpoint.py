"""Checkpoints: the model plus everything needed to continue training exactly.

A checkpoint is one ``torch.save`` file, written atomically, holding only plain data so that it
loads with ``torch.load(weights_only=True)`` (no pickled classes, safe to open from strangers):

- ``model``: state dict (DDP/``torch.compile`` prefixes stripped);
- ``model_sha256``: a SHA-256 of the weights (names, dtypes, shapes and bytes, in key order),
  checked by :func:`load_checkpoint`: flipped bytes inside a tensor load silently otherwise (the
  zip container keeps no checksum torch verifies), and change every prediction;
- ``model_config``: the resolved :class:`training.model.ModelConfig` as a dict;
- ``config`` / ``config_hash``: the whole training configuration, if given, and the hash of its recipe
  (:func:`training.config.recipe_hash`: without the run settings such as ``out_dir`` or ``max_steps``);
- ``optimizer``, ``scaler``, ``step``, ``data_state`` (loader positions), ``rng`` (Python, NumPy,
  torch CPU/CUDA generator states): the state ``--resume`` restores.

:func:`load_model` also opens an official MiDaS v2.1 file (a bare state dict in MiDaS's layout).
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.config import config_from_dict, config_hash, config_to_dict
from pipeline.errors import BadInputError, ConfigError
from training.model import (
    DepthModel,
    ModelConfig,
    build_model,
    is_midas_state_dict,
    load_midas_state_dict,
    model_config_from_midas_state_dict,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "unwrap_model",
    "capture_rng_state",
    "restore_rng_state",
    "weights_sha256",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "depthmine-checkpoint-v1"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under DDP and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states as weights_only-loadable data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict: each key, dtype, shape and the tensor's raw bytes, keys sorted.

    Independent of where the tensors live (they are copied to the CPU) and of pickling details,
    so it can be recomputed from a loaded checkpoint.
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # no copy
    return h.hexdigest()


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    model_config: ModelConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    step: int = 0,
    data_state: dict[str, Any] | None = None,
    train_config: Any = None,
    rng: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (readers never see a partial file).

    Args:
        path: destination ``.pt`` file.
        model: the network (DDP/compiled wrappers are unwrapped).
        model_config: defaults to ``model.config``.
        optimizer, scaler: their ``state_dict()`` is stored when given.
        step: optimisation steps done.
        data_state: loader position (see :class:`training.datasets.MixedLoader.state_dict`).
        train_config: the resolved training configuration (dataclass or dict), stored as plain data.
        rng: store the generator states of this process.
        extra: more plain data (metrics, mixing weights).
    """
    bare = unwrap_model(model)
    model_config = model_config or getattr(bare, "config", None)
    if model_config is None:
        raise ValueError("save_checkpoint needs the model's ModelConfig")
    weights = {k: v.detach().cpu() for k, v in bare.state_dict().items()}
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": weights,
        "model_sha256": weights_sha256(weights),
        "model_config": config_to_dict(model_config),
        "step": int(step),
    }
    if train_config is not None:
        payload["config"] = config_to_dict(train_config)
        payload["config_hash"] = _recipe_hash(train_config)
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    if data_state is not None:
        payload["data_state"] = data_state
    if rng:
        payload["rng"] = capture_rng_state()
    if extra:
        payload["extra"] = extra
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its weights' SHA-256.

    Checkpoints written before the checksum existed (and official MiDaS files) load with a
    debug note: there is nothing to check them against.

    Raises:
        BadInputError: missing, unreadable, corrupt (checksum mismatch) or not a depthmine/MiDaS
            checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise BadInputError(
            path,
            f"cannot read checkpoint ({exc.__class__.__name__}: {exc})",
            "is it a torch checkpoint written by depthmine train?",
        ) from exc
    if not isinstance(data, dict):
        raise BadInputError(path, "not a checkpoint (expected a dict)")
    if data.get("format") == CHECKPOINT_FORMAT:
        expected = data.get("model_sha256")
        if expected is None:
            log.debug("%s: no weights checksum (written by an older depthmine); not verified", path)
        elif not isinstance(data.get("model"), dict) or weights_sha256(data["model"]) != expected:
            raise BadInputError(
                path,
                "weights checksum mismatch: the file is corrupt (changed after it was written)",
                "use another checkpoint (e.g. an earlier step-*.pt) or copy it again",
            )
        return data
    # the official MiDaS files: a bare state dict, or {"model": ..., "optimizer": ...}
    state = data["model"] if isinstance(data.get("model"), dict) else data
    if is_midas_state_dict(state):
        try:
            model_config = model_config_from_midas_state_dict(state)
        except BadInputError as exc:
            raise BadInputError(path, exc.problem) from exc
        return {"format": "midas", "model": state, "model_config": _config_dict(model_config), "step": 0}
    raise BadInputError(path, "not a depthmine or MiDaS checkpoint (no model weights found)")


def _config_dict(cfg: ModelConfig) -> dict[str, Any]:
    return config_to_dict(cfg)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[DepthModel, ModelConfig]:
    """Rebuild the network stored in a checkpoint, in eval mode, on ``map_location``.

    Returns:
        ``(model, model_config)``; ``model_config.pretrained_path`` is cleared (the weights come
        from the checkpoint).
    """
    data = load_checkpoint(path, map_location="cpu")
    try:
        cfg = config_from_dict(ModelConfig, data["model_config"], where=f"{path}: model_config")
    except ConfigError as exc:
        raise BadInputError(path, f"stored model configuration is invalid: {exc}") from exc
    cfg.pretrained_path = None
    import logging

    # the random-init warning would be misleading: the weights are loaded right after
    logger = logging.getLogger("training.model")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        model = build_model(cfg)
    finally:
        logger.setLevel(previous)
    if data.get("format") == "midas":
        load_midas_state_dict(model, data["model"], path)
    else:
        missing, unexpected = model.load_state_dict(data["model"], strict=False)
        if missing or unexpected:
            raise BadInputError(
                path,
                f"weights do not fit the stored model configuration "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys)",
            )
    model.to(map_location).eval()
    return model, cfg


def _recipe_hash(train_config: Any) -> str:
    """A :class:`~training.config.TrainConfig`'s recipe hash; anything else hashed whole."""
    from training.config import TrainConfig, recipe_hash  # training.config imports the model, which imports this

    return recipe_hash(train_config) if isinstance(train_config, TrainConfig) else config_hash(train_config)
