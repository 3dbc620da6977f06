"""The MiDaS-style depth network: an encoder by name and a feature-fusion decoder.

``build_model(ModelConfig(...))`` returns a :class:`DepthModel` whose forward maps a batch of
ImageNet-normalised RGB images ``Bx3xHxW`` to ``BxHxW`` non-negative disparity (inverse depth up to
scale and shift). The decoder is sized from the encoder's ``channels``; its module names follow the
official MiDaS code (``pretrained.*`` for the encoder, ``scratch.*`` for the decoder) so the
released MiDaS v2.1 checkpoint loads without renaming (:func:`load_midas_state_dict`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import BadInputError, ConfigError
from training.encoders import Encoder, _read_state_dict, create_encoder

__all__ = [
    "ModelConfig",
    "DepthModel",
    "ResidualConvUnit",
    "FeatureFusionBlock",
    "build_model",
    "is_midas_state_dict",
    "model_config_from_midas_state_dict",
    "load_midas_state_dict",
]

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """What to build.

    Attributes:
        encoder: registry name (``resnet50``, ``resnext101_32x8d``, ``resnet18``, ``tiny``,
            ``timm:<model>``); see :func:`training.encoders.available_encoders`.
        pretrained_path: local file with ImageNet weights for the encoder (torchvision layout), or a
            whole MiDaS v2.1 checkpoint (then the decoder is initialised from it too). ``None``:
            random initialisation (a warning is logged, the paper's recipe expects pretraining).
        features: decoder width (256 in MiDaS); every fusion level uses it.
        non_negative: end in a ReLU, as MiDaS does: disparity is non-negative.
    """

    encoder: str = "resnet50"
    pretrained_path: str | None = None
    features: int = 256
    non_negative: bool = True


class ResidualConvUnit(nn.Module):
    """``r + conv2(relu(conv1(r)))`` with ``r = relu(x)``.

    The official MiDaS code writes ``out = relu_(x) ... return out + x`` with an *in-place* ReLU,
    so its skip connection actually carries ``relu(x)``. The released weights were trained with
    that behaviour; it is reproduced here explicitly (without mutating the input) so those weights
    give the same predictions.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        return r + self.conv2(F.relu(self.conv1(r)))


class FeatureFusionBlock(nn.Module):
    """Add the refined skip feature to the coarser path, refine, upsample x2."""

    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            if skip.shape[-2:] != path.shape[-2:]:  # odd sizes: align the coarse path to the skip
                path = F.interpolate(path, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        return F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)


class _Interpolate(nn.Module):
    def __init__(self, scale_factor: float):
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # MiDaS's Interpolate uses align_corners=False here (the fusion blocks use True)
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)


class DepthModel(nn.Module):
    """Encoder (``self.pretrained``) + MiDaS decoder (``self.scratch``).

    ``forward(x)``: ``x`` is ``Bx3xHxW`` float, normalised with ImageNet mean/std
    (:func:`training.transforms.normalize`); returns ``BxHxW`` disparity, same H and W as ``x``
    (H and W multiples of 32 avoid a final resize).
    """

    def __init__(self, config: ModelConfig, encoder: Encoder):
        super().__init__()
        self.config = config
        self.pretrained = encoder
        f = config.features
        if f < 8:
            raise ConfigError(f"model.features={f}: need at least 8")
        self.scratch = nn.Module()
        for i, c in enumerate(encoder.channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, f, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(f))
        # refinenet4 has no skip input, so its resConfUnit1 is never used; it stays for key
        # compatibility with the MiDaS checkpoint but is frozen (DDP would wait for its gradient)
        self.scratch.refinenet4.resConfUnit1.requires_grad_(False)
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(f, f // 2, 3, padding=1),
            _Interpolate(2),
            nn.Conv2d(f // 2, 32, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(True) if config.non_negative else nn.Identity(),
        )
        # Start with positive outputs: a final ReLU whose input is negative everywhere passes no
        # gradient and a randomly initialised network can start (and stay) dead. A checkpoint
        # load overwrites this.
        nn.init.constant_(self.scratch.output_conv[4].bias, 1.0)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (the pretrained, shared part: its own learning rate, and the
        parameters Pareto mixing computes per-dataset gradients of)."""
        return list(self.pretrained.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        return list(self.scratch.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2, f3, f4 = self.pretrained(x)
        s = self.scratch
        path = s.refinenet4(s.layer4_rn(f4))
        path = s.refinenet3(path, s.layer3_rn(f3))
        path = s.refinenet2(path, s.layer2_rn(f2))
        path = s.refinenet1(path, s.layer1_rn(f1))
        out = s.output_conv(path)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out.squeeze(1)


def build_model(config: ModelConfig) -> DepthModel:
    """Build the network; load ``config.pretrained_path`` if given, else warn about random init."""
    encoder = create_encoder(config.encoder)
    model = DepthModel(config, encoder)
    if config.pretrained_path:
        state = _read_state_dict(config.pretrained_path)
        if is_midas_state_dict(state):
            load_midas_state_dict(model, state, config.pretrained_path)
            log.info("initialised the whole model from MiDaS checkpoint %s", config.pretrained_path)
        else:
            encoder.load_pretrained(config.pretrained_path)
            log.info("encoder %s initialised from %s", config.encoder, config.pretrained_path)
    else:
        log.warning(
            "encoder %s has random initial weights (model.pretrained_path not set); the MiDaS recipe "
            "starts from ImageNet weights",
            config.encoder,
        )
    return model


def is_midas_state_dict(state: dict) -> bool:
    """True for a state dict in the official MiDaS layout (or one saved from :class:`DepthModel`)."""
    return any(k.startswith("scratch.refinenet") for k in state) and any(k.startswith("pretrained.") for k in state)


def model_config_from_midas_state_dict(state: dict[str, torch.Tensor]) -> ModelConfig:
    """Infer the ModelConfig of an official MiDaS v2.x (ResNet family) checkpoint from its shapes."""
    try:
        features = int(state["scratch.layer1_rn.weight"].shape[0])
        conv2 = state["pretrained.layer1.4.0.conv2.weight"]
    except KeyError as exc:
        raise BadInputError(
            None, f"MiDaS checkpoint lacks key {exc}; only the ResNet-family models are supported"
        ) from exc
    l3_blocks = len({k.split(".")[2] for k in state if k.startswith("pretrained.layer3.")})
    if conv2.shape[1] * 32 == conv2.shape[0]:
        encoder = "resnext101_32x8d"
    elif l3_blocks == 6:
        encoder = "resnet50"
    else:
        raise BadInputError(None, "MiDaS checkpoint with an encoder this project does not know")
    return ModelConfig(encoder=encoder, pretrained_path=None, features=features, non_negative=True)


def load_midas_state_dict(model: DepthModel, state: dict[str, torch.Tensor], path: str | Path | None = None) -> None:
    """Load an official MiDaS v2.1 state dict (same key names) into ``model``, strictly."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadInputError(
            path,
            f"MiDaS weights do not fit encoder {model.config.encoder!r} with features={model.config.features} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})",
            "set model.encoder and model.features to the checkpoint's (resnext101_32x8d, 256 for MiDaS v2.1)",
        )
