"""Checkpoints carry a checksum of their weights; a flipped byte is refused on load."""

from __future__ import annotations

import zipfile

import pytest
import torch

from pipeline.errors import BadInputError
from training.checkpoint import load_checkpoint, load_model, save_checkpoint, weights_sha256
from training.model import ModelConfig, build_model


def _largest_tensor_offset(path) -> int:
    """File offset of the middle of the largest tensor record (stored uncompressed by torch.save)."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_flipped_bytes_in_the_weights_are_refused(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="tiny", features=16))
    path = save_checkpoint(tmp_path / "ck.pt", model, step=3)
    state = load_checkpoint(path)
    assert state["model_sha256"] == weights_sha256(model.state_dict())

    data = bytearray(path.read_bytes())
    at = _largest_tensor_offset(path)
    for k in range(4):
        data[at + k] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    # torch itself loads the damaged file without a word, with changed weights
    raw = torch.load(bad, weights_only=True)
    assert any(not torch.equal(raw["model"][k], state["model"][k]) for k in state["model"])
    with pytest.raises(BadInputError, match="flipped.pt.*checksum"):
        load_checkpoint(bad)
    with pytest.raises(BadInputError, match="checksum"):
        load_model(bad)


def test_checkpoint_without_checksum_still_loads(tmp_path):
    """Files from before the checksum have nothing to verify against: they load as before."""
    model = build_model(ModelConfig(encoder="tiny", features=16))
    path = save_checkpoint(tmp_path / "ck.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["model_sha256"]
    torch.save(payload, tmp_path / "old.pt")
    loaded, cfg = load_model(tmp_path / "old.pt")
    assert cfg.encoder == "tiny"
