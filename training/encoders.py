"""Encoders by name: multi-scale feature extractors the MiDaS decoder is sized from.

Every encoder is an :class:`Encoder`: four stages ``layer1..layer4`` whose outputs have strides
4, 8, 16 and 32 and the channel counts in ``channels``. The decoder reads ``channels`` instead of
hard-coding them (the timm ``features_only`` habit), so swapping ResNet-50 for ResNeXt-101 or a tiny
test encoder is a configuration change.

The ResNet family keeps MiDaS's own layout (``layer1 = conv1, bn1, relu, maxpool, layer1``), so the
official MiDaS v2.1 checkpoint (ResNeXt-101 32x8d) loads key for key into
:class:`training.model.DepthModel`. ImageNet weights come from a local torchvision state-dict file
(nothing is downloaded); see :meth:`Encoder.load_pretrained`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.errors import BadInputError, ConfigError
from pipeline.registry import Registry

__all__ = [
    "Encoder",
    "ResNetEncoder",
    "TinyEncoder",
    "TimmEncoder",
    "ENCODERS",
    "register_encoder",
    "create_encoder",
    "available_encoders",
]

log = logging.getLogger(__name__)

#: every encoder by name (:class:`pipeline.registry.Registry`); ``timm:<model name>`` is a family
ENCODERS: Registry[Encoder] = Registry("encoder")


def register_encoder(name: str) -> Callable[[Callable[[], Encoder]], Callable[[], Encoder]]:
    """Register a zero-argument factory under ``name`` (decorator)."""
    return ENCODERS.register(name)


def available_encoders() -> list[str]:
    """Registered names plus the ``timm:<model>`` form."""
    return ENCODERS.names()


def create_encoder(name: str) -> Encoder:
    """Build the encoder called ``name`` with random weights.

    Raises:
        ConfigError: the name is unknown; the message lists the valid ones.
    """
    return ENCODERS.create(name)


class Encoder(nn.Module):
    """Base class: ``forward(x) -> [f1, f2, f3, f4]`` at strides ``reductions``.

    Subclasses define ``layer1..layer4`` (applied in sequence) and set ``channels``.
    """

    name: str = ""
    channels: tuple[int, int, int, int] = (0, 0, 0, 0)
    reductions: tuple[int, int, int, int] = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f1, f2, f3, f4]

    def load_pretrained(self, path: str | Path) -> None:
        """Load ImageNet weights from a local file (``torch.load(weights_only=True)``).

        Accepts this encoder's own state dict or the backbone's native layout (subclasses map it).

        Raises:
            BadInputError: missing file, unreadable file or keys that do not fit.
        """
        state = _read_state_dict(path)
        state = self._map_native_keys(state)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing:
            raise BadInputError(
                path,
                f"not weights for encoder {self.name!r}: {len(missing)} missing keys (first: {missing[0]})",
                "give a state dict of the same architecture",
            )
        if unexpected:
            log.info("%s: ignored %d keys not used by the encoder (e.g. %s)", path, len(unexpected), unexpected[0])

    def _map_native_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such weights file", "pass a local .pth file; nothing is downloaded")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, ...
        raise BadInputError(path, f"cannot read weights ({exc.__class__.__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BadInputError(path, "not a state dict")
    return state


class ResNetEncoder(Encoder):
    """A torchvision ResNet/ResNeXt in MiDaS's layout (stem folded into ``layer1``)."""

    def __init__(self, name: str, builder: Callable[..., nn.Module]):
        super().__init__()
        net = builder(weights=None)
        self.name = name
        self.layer1 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.channels = tuple(_out_channels(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4))

    def _map_native_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # torchvision names: conv1.*, bn1.*, layer1.*, ..., fc.* -> MiDaS layout
        if not any(k.startswith("conv1.") for k in state):
            return state
        out = {}
        for k, v in state.items():
            if k.startswith("conv1."):
                out["layer1.0." + k[6:]] = v
            elif k.startswith("bn1."):
                out["layer1.1." + k[4:]] = v
            elif k.startswith("layer1."):
                out["layer1.4." + k[7:]] = v
            elif k.startswith("fc."):
                continue
            else:
                out[k] = v
        return out


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = getattr(block, "bn3", None) or block.bn2
    return int(last_bn.num_features)


@register_encoder("resnet18")
def _resnet18() -> Encoder:
    from torchvision.models import resnet18

    return ResNetEncoder("resnet18", resnet18)


@register_encoder("resnet50")
def _resnet50() -> Encoder:
    from torchvision.models import resnet50

    return ResNetEncoder("resnet50", resnet50)


@register_encoder("resnext101_32x8d")
def _resnext101() -> Encoder:
    from torchvision.models import resnext101_32x8d

    return ResNetEncoder("resnext101_32x8d", resnext101_32x8d)


def _conv_gn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class TinyEncoder(Encoder):
    """A few conv layers with GroupNorm: fast CPU tests and demos, not a real model.

    GroupNorm instead of BatchNorm keeps the network's output independent of how a global batch
    is split over DDP ranks, which the DDP equivalence test relies on.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.name = "tiny"
        c = (width, width * 2, width * 4, width * 8)
        self.layer1 = nn.Sequential(_conv_gn(3, c[0], 2), _conv_gn(c[0], c[0], 2), _conv_gn(c[0], c[0], 1))
        self.layer2 = nn.Sequential(_conv_gn(c[0], c[1], 2), _conv_gn(c[1], c[1], 1))
        self.layer3 = nn.Sequential(_conv_gn(c[1], c[2], 2), _conv_gn(c[2], c[2], 1))
        self.layer4 = nn.Sequential(_conv_gn(c[2], c[3], 2), _conv_gn(c[3], c[3], 1))
        self.channels = c


@register_encoder("tiny")
def _tiny() -> Encoder:
    return TinyEncoder(16)


class TimmEncoder(Encoder):
    """Any timm model with ``features_only`` (``encoder: timm:convnext_tiny``); optional."""

    def __init__(self, model_name: str):
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - timm ships with ptlflow
            raise ConfigError("timm encoders need the 'timm' package") from exc
        try:
            self.body = timm.create_model(model_name, pretrained=False, features_only=True)
        except RuntimeError as exc:
            raise ConfigError(f"timm cannot build {model_name!r}: {exc}") from exc
        info = self.body.feature_info
        reductions = list(info.reduction())
        # keep the four stages at strides 4..32, whatever the model's first stage is
        idx = [reductions.index(r) for r in (4, 8, 16, 32) if r in reductions]
        if len(idx) != 4:
            raise ConfigError(f"timm model {model_name!r} lacks features at strides 4, 8, 16, 32")
        self._idx = idx
        self.name = f"timm:{model_name}"
        self.channels = tuple(info.channels()[i] for i in idx)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self._idx]

    def _map_native_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if any(k.startswith("body.") for k in state):
            return state
        return {"body." + k: v for k, v in state.items()}


ENCODERS.register_prefix("timm", TimmEncoder, argument="<model name>")
