"""Mixing datasets: naive and Pareto-optimal (multiple-gradient descent), by name.

Every batch holds the same number of samples from each of the L training datasets
(:class:`training.datasets.MixedLoader`). A :class:`Mixer` turns the batch's per-dataset parts into
the one loss that is backpropagated:

- ``naive``: the loss over the whole mixed batch (each dataset weighs by its valid pixels).
- ``pareto``: each dataset's loss is an objective; the gradients of each loss w.r.t. the shared
  parameters (the encoder) are combined with the min-norm convex weights found by the Frank-Wolfe
  solver of Sener & Koltun (NeurIPS 2018), and ``sum_i w_i * L_i`` is backpropagated - its gradient
  on the shared parameters is the min-norm element, a common descent direction for all datasets.

:func:`min_norm_weights` is the solver; it is exact for two objectives and iterates Frank-Wolfe
steps (each with the exact two-point line search) for more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from pipeline.errors import ConfigError

__all__ = [
    "MixingConfig",
    "Mixer",
    "NaiveMixer",
    "ParetoMixer",
    "MIXERS",
    "create_mixer",
    "min_norm_weights",
    "min_norm_2",
    "NORMALIZATIONS",
]

NORMALIZATIONS = ("none", "l2", "loss")

log = logging.getLogger(__name__)


@dataclass
class MixingConfig:
    """How datasets are combined.

    Attributes:
        strategy: ``naive`` or ``pareto``.
        normalize: Pareto only: scale each dataset's gradient before solving: ``none`` (plain MGDA),
            ``l2`` (unit norm) or ``loss`` (divide by the loss value), as Sener & Koltun offer.
        max_iter: Frank-Wolfe iterations.
    """

    strategy: str = "naive"
    normalize: str = "none"
    max_iter: int = 250


def min_norm_2(g11: float, g12: float, g22: float) -> tuple[float, float]:
    """Min of ``|c*v1 + (1-c)*v2|^2`` over ``c in [0, 1]`` from the Gram entries: ``(c, cost)``."""
    if g12 >= g11:
        return 1.0, g11
    if g12 >= g22:
        return 0.0, g22
    c = (g22 - g12) / (g11 + g22 - 2.0 * g12)
    return c, g22 + c * (g12 - g22)


def min_norm_weights(
    grads: torch.Tensor | Sequence[torch.Tensor], max_iter: int = 250, tol: float = 1e-7
) -> torch.Tensor:
    """Convex weights ``w`` (``w >= 0``, ``sum w = 1``) minimising ``|sum_i w_i g_i|``.

    Args:
        grads: ``(L, P)`` tensor or a sequence of L flattened gradients.

    Returns:
        ``(L,)`` float64 weights on the CPU.
    """
    if not isinstance(grads, torch.Tensor):
        grads = torch.stack([g.reshape(-1) for g in grads])
    g = grads.detach().to(torch.float64)
    n = g.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    gram = (g @ g.T).cpu()
    # start from the best pair (exact for two objectives)
    best = None
    for i in range(n):
        for j in range(i + 1, n):
            c, cost = min_norm_2(gram[i, i].item(), gram[i, j].item(), gram[j, j].item())
            if best is None or cost < best[0]:
                best = (cost, i, j, c)
    _, i, j, c = best
    w = torch.zeros(n, dtype=torch.float64)
    w[i], w[j] = c, 1.0 - c
    if n == 2:
        return w
    for _ in range(max_iter):
        # Frank-Wolfe: move towards the vertex with the smallest directional derivative
        t = int(torch.argmin(gram @ w))
        v1v1 = float(w @ gram @ w)
        v1v2 = float(w @ gram[:, t])
        v2v2 = float(gram[t, t])
        c, _ = min_norm_2(v1v1, v1v2, v2v2)
        new = c * w
        new[t] += 1.0 - c
        if float((new - w).abs().sum()) < tol:
            w = new
            break
        w = new
    return w


class Mixer:
    """Base: ``combine(parts, loss_fn, shared) -> (loss, info)``.

    ``parts`` is a list of ``(pred, target, mask)`` per dataset (plus per-pixel ``weight`` when
    uncertainty weighting is on: ``loss_fn(*part)``); ``shared`` the shared parameters;
    ``info`` holds per-dataset losses and weights (floats) for the logs.
    """

    name = ""

    def __init__(self, config: MixingConfig):
        self.config = config

    def combine(
        self,
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        shared: Sequence[torch.nn.Parameter],
    ) -> tuple[torch.Tensor, dict[str, list[float]]]:
        raise NotImplementedError


class NaiveMixer(Mixer):
    """The loss over the whole mixed batch."""

    name = "naive"

    def combine(self, parts, loss_fn, shared):
        # (pred, target, mask[, weight]) of every dataset, concatenated
        loss = loss_fn(*(torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))))
        info: dict[str, list[float]] = {"weights": [1.0 / len(parts)] * len(parts)}
        if len(parts) > 1:
            with torch.no_grad():
                info["losses"] = [float(loss_fn(*p)) for p in parts]
        else:
            info["losses"] = [float(loss.detach())]
        return loss, info


class ParetoMixer(Mixer):
    """MGDA: min-norm convex combination of the per-dataset gradients of the shared parameters.

    Under DDP the per-dataset gradients are averaged over ranks before solving, so every rank
    finds the same weights for the global batch.
    """

    name = "pareto"

    def combine(self, parts, loss_fn, shared):
        losses = [loss_fn(*p) for p in parts]
        if len(parts) == 1:
            return losses[0], {"weights": [1.0], "losses": [float(losses[0].detach())]}
        shared = [p for p in shared if p.requires_grad]
        flat = []
        for loss in losses:
            grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            flat.append(
                torch.cat(
                    [(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, shared)]
                )
            )
        g = torch.stack(flat)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(g)
            g /= dist.get_world_size()
        norm = self.config.normalize
        if norm == "l2":
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        elif norm == "loss":
            values = torch.stack([l.detach().float() for l in losses]).view(-1, 1)
            g = g / values.clamp_min(1e-12)
        weights = min_norm_weights(g, self.config.max_iter)
        total = sum(float(w) * l for w, l in zip(weights, losses))
        return total, {"weights": weights.tolist(), "losses": [float(l.detach()) for l in losses]}


MIXERS: dict[str, type[Mixer]] = {"naive": NaiveMixer, "pareto": ParetoMixer}


def create_mixer(config: MixingConfig) -> Mixer:
    """The mixer named by ``config.strategy``; an unknown name lists the valid ones."""
    if config.strategy not in MIXERS:
        raise ConfigError(f"unknown mixing strategy {config.strategy!r}; valid: {', '.join(MIXERS)}")
    if config.normalize not in NORMALIZATIONS:
        raise ConfigError(f"mixing.normalize={config.normalize!r}; valid: none, l2, loss")
    return MIXERS[config.strategy](config)
