"""Model, encoders, checkpoints and transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import BadInputError, ConfigError
from training.checkpoint import capture_rng_state, load_checkpoint, load_model, restore_rng_state, save_checkpoint
from training.encoders import create_encoder
from training.model import ModelConfig, build_model
from training.transforms import AugmentConfig, augment, inference_size, prepare_input, resize_for_inference


@pytest.mark.parametrize("size", [(64, 64), (50, 70)], ids=["multiple-of-32", "odd-size"])
def test_output_shape_and_non_negative(size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="tiny", features=16))
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, *size)
    assert float(out.min()) >= 0.0
    assert float(out.max()) > 0.0


def test_decoder_sized_from_encoder_channels():
    model = build_model(ModelConfig(encoder="resnet18", features=32))
    assert model.pretrained.channels == (64, 128, 256, 512)
    for i, c in enumerate(model.pretrained.channels, start=1):
        assert getattr(model.scratch, f"layer{i}_rn").in_channels == c


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ConfigError, match="resnext101_32x8d"):
        create_encoder("vgg99")


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    torch.manual_seed(1)
    model = build_model(ModelConfig(encoder="tiny", features=16)).eval()
    path = save_checkpoint(tmp_path / "ck.pt", model, step=7, data_state={"x": 1})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["step"] == 7 and raw["model_config"]["encoder"] == "tiny"
    loaded, cfg = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    assert cfg.features == 16
    assert torch.equal(model(x), loaded(x))


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (np.random.rand(), torch.rand(1).item())
    restore_rng_state(state)
    assert (np.random.rand(), torch.rand(1).item()) == a


def test_torchvision_layout_pretrained_weights(tmp_path):
    from torchvision.models import resnet18

    net = resnet18()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = build_model(ModelConfig(encoder="resnet18", features=16, pretrained_path=str(tmp_path / "r18.pth")))
    assert torch.equal(model.pretrained.layer1[0].weight, net.conv1.weight)
    assert torch.equal(model.pretrained.layer4[1].conv2.weight, net.layer4[1].conv2.weight)


def test_midas_layout_state_dict_loads(tmp_path):
    """An official MiDaS file is a bare state dict with pretrained.*/scratch.* keys."""
    src = build_model(ModelConfig(encoder="resnet50", features=32)).eval()
    torch.save(src.state_dict(), tmp_path / "midas.pt")
    model, cfg = load_model(tmp_path / "midas.pt")
    assert (cfg.encoder, cfg.features) == ("resnet50", 32)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(src(x), model(x))


def test_bad_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(BadInputError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "hw,expected",
    [((1080, 1920), (224, 384)), ((800, 1880), (160, 384)), ((480, 640), (288, 384))],
    ids=["1080p", "letterbox", "vga"],
)
def test_inference_size(hw, expected):
    assert inference_size(*hw) == expected
    img = np.zeros((*hw, 3), np.uint8)
    assert resize_for_inference(img).shape == (*expected, 3)
    assert prepare_input(img).shape == (1, 3, *expected)


def test_augment_applies_alike_to_image_target_and_mask():
    """Image red channel, disparity and mask all encode x; they must stay consistent."""
    h, w = 40, 60
    xs = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = (xs * 4).astype(np.uint8)
    valid = xs < 30
    rng = np.random.default_rng(0)
    flipped = 0
    for _ in range(20):
        img, disp, msk = augment(image, xs, valid, rng, AugmentConfig(size=16, flip_prob=0.5, min_crop_scale=0.5))
        assert img.shape == (16, 16, 3) and disp.shape == msk.shape == (16, 16)
        # nearest-resized target: the mask is exactly "x < 30" of the target's own x values
        assert np.array_equal(msk, disp < 30) or np.array_equal(msk[msk], (disp < 30)[msk])
        assert np.all(disp[~msk] == 0)
        # image and target move together (bilinear image vs nearest target: within a pixel)
        both = msk & (disp > 2)
        if both.any():
            assert np.abs(img[..., 0][both] / 4.0 - disp[both]).max() < 4.5
        flipped += int(disp[0, 0] > disp[0, -1])
    assert 0 < flipped < 20  # some flipped, some not


def test_timm_encoder_by_name():
    pytest.importorskip("timm", reason="timm encoders are optional")
    model = build_model(ModelConfig(encoder="timm:resnet18", features=16))
    assert model.pretrained.channels == (64, 128, 256, 512)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 64, 64)


def _reference_midas_decoder(scratch, feats):
    """The official MiDaS v2.1 decoder written as released (in-place ReLU in the residual units,
    in-place add in the fusion blocks): what the released weights were trained with."""
    import torch.nn.functional as F

    def rcu(unit, x):
        out = F.relu(x, inplace=True)  # mutates x: the skip below adds relu(x)
        out = unit.conv1(out)
        out = F.relu(out, inplace=True)
        out = unit.conv2(out)
        return out + x

    def fuse(block, *xs):
        output = xs[0]
        if len(xs) == 2:
            output += rcu(block.resConfUnit1, xs[1])
        output = rcu(block.resConfUnit2, output)
        return F.interpolate(output, scale_factor=2, mode="bilinear", align_corners=True)

    l1, l2, l3, l4 = (getattr(scratch, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
    path = fuse(scratch.refinenet4, l4)
    path = fuse(scratch.refinenet3, path, l3)
    path = fuse(scratch.refinenet2, path, l2)
    path = fuse(scratch.refinenet1, path, l1)
    oc = scratch.output_conv
    out = F.interpolate(oc[0](path), scale_factor=2, mode="bilinear", align_corners=False)
    out = F.relu(oc[4](F.relu(oc[2](out))))
    return out.squeeze(1)


def test_decoder_matches_official_midas_semantics():
    torch.manual_seed(3)
    model = build_model(ModelConfig(encoder="tiny", features=16)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = _reference_midas_decoder(model.scratch, model.pretrained(x))
        assert torch.allclose(model(x), expected, atol=1e-6)
