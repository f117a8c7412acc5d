"""No checkpoint runs code (issue #17): TorchScript archives are never given to
``torch.jit.load``; their tensors are read by a restricted unpickler, and only for the CLIP
formats.  Each payload here really runs under ``torch.jit.load`` (checked first), and
leaves no trace under vitlib's reader."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from vitlib.models.build import ModelError, build_model
from vitlib.models.registry import spec_from_config
from vitlib.models.weights import WeightsError, read_checkpoint, read_torchscript_tensors

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


class _SetstateWrites(nn.Module):
    """A module whose TorchScript ``__setstate__`` writes a file (``aten::save``): the code
    runs when ``torch.jit.load`` restores it."""

    def __init__(self, target: str):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(4.0))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.target = state[1]
        self.training = state[2]
        torch.save(state[0], state[1])  # the side effect


class _ForwardWrites(nn.Module):
    """A CLIP-shaped archive whose ``forward`` writes a file: only its tensors are data."""

    def __init__(self, target: str):
        super().__init__()
        self.visual = nn.Linear(3, 2)
        self.logit_scale = nn.Parameter(torch.tensor(4.5))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.target)
        return self.visual(x)


def _clip_spec(path: Path, fmt: str | None = "openai_clip"):
    w: dict = {"path": str(path)}
    if fmt:
        w["format"] = fmt
    return spec_from_config(
        "t_clip",
        {
            "base": "clip_b16",
            "weights": w,
            "arch_kwargs": {
                "image_size": 32,
                "patch_size": 8,
                "width": 64,
                "layers": 2,
                "head_width": 32,
            },
        },
    )


def test_torchscript_setstate_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    archive = tmp_path / "ViT-B-16.pt"  # the name and layout of OpenAI's CLIP release files
    torch.jit.save(torch.jit.script(_SetstateWrites(str(marker))), archive)
    names = zipfile.ZipFile(archive).namelist()
    assert any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)
    torch.jit.load(str(archive))  # the payload is live: torch.jit.load runs it ...
    assert marker.exists()
    marker.unlink()

    # ... vitlib never does: refused for any non-CLIP format, state code refused for CLIP
    for fmt in ("timm", "dino", "moco", "mae", "beit"):
        with pytest.raises(WeightsError) as e:
            read_checkpoint(archive, model_id="evil", fmt=fmt)
        assert str(e.value) == (
            f"model evil: checkpoint {archive} is a TorchScript archive (it holds code); vitlib"
            " reads TorchScript only for weights.format openai_clip or open_clip, not"
            f" {fmt!r}: give a state-dict file (torch.save or .safetensors) or set"
            " weights.format: openai_clip"
        )
    with pytest.raises(WeightsError) as e:
        read_checkpoint(archive, model_id="evil", fmt="openai_clip")
    assert str(e.value) == (
        f"model evil: TorchScript archive {archive}: object <root> (__torch__.{_SetstateWrites.__module__}._SetstateWrites)"
        " restores itself through TorchScript code (__getstate__/__setstate__); vitlib reads"
        " only modules' tensors and runs no code: export a state dict instead"
    )
    with pytest.raises(ModelError, match=r"ViT-B-16\.pt: object <root> .* restores itself"):
        build_model(_clip_spec(archive))
    with pytest.raises(ModelError, match=r"ViT-B-16\.pt is a TorchScript archive"):
        build_model(_clip_spec(archive, fmt="timm"))
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ViT-B-16.pt"]


def test_torchscript_code_is_never_run_only_tensors_read(tmp_path):
    marker = tmp_path / "pwned"
    archive = tmp_path / "clip.pt"
    torch.jit.save(torch.jit.script(_ForwardWrites(str(marker))), archive)
    sd = read_checkpoint(archive, model_id="m", fmt="openai_clip")
    assert sorted(sd) == ["logit_scale", "visual.bias", "visual.weight"]
    assert float(sd["logit_scale"]) == 4.5
    assert not marker.exists()
    # no 'visual.' tower of the expected shapes: a clear key mismatch, still no side effect
    with pytest.raises(ModelError, match=r"clip\.pt \(openai_clip layout\) does not fit"):
        build_model(_clip_spec(archive))
    assert not marker.exists()


def test_torchscript_archive_tensors_equal_jit_state_dict(tmp_path):
    """A legitimate archive: every parameter and buffer, equal in value, dtype, shape and
    stride (half precision as OpenAI's files, a transposed buffer, a tied weight)."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(6)
            self.attn = nn.MultiheadAttention(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.ln_1(x)
            return x + self.attn(y, y, y, need_weights=False)[0]

    class Visual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 2, bias=False)
            self.class_embedding = nn.Parameter(torch.randn(6))
            self.resblocks = nn.Sequential(Block(), Block())
            self.proj = nn.Parameter(torch.randn(6, 4).half())
            self.register_buffer("t_buf", torch.arange(12.0).reshape(3, 4).t())
            self.tied = self.conv1  # the same module twice: one storage

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.conv1(x).flatten(2).permute(2, 0, 1)
            return self.resblocks(f)

    class Clip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = Visual()
            self.logit_scale = nn.Parameter(torch.ones([]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.visual(x)

    torch.manual_seed(0)
    archive = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(Clip().eval()), archive)
    want = torch.jit.load(str(archive)).state_dict()  # our own file: trusted here
    got = read_torchscript_tensors(archive, model_id="m")
    assert sorted(got) == sorted(want)
    # logit_scale, conv1, class_embedding, 2 blocks × 6 (ln_1 ×2, in_proj ×2, out_proj ×2),
    # proj, t_buf and the tied conv1 under its second name
    assert len(got) == 18
    assert got["visual.tied.weight"].data_ptr() == got["visual.conv1.weight"].data_ptr()
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].stride() == want[k].stride(), k
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert got["visual.proj"].dtype == torch.float16
    assert got["visual.t_buf"].stride() == (1, 4)  # a transposed view, stored as such
    assert torch.equal(got["visual.t_buf"], torch.arange(12.0).reshape(3, 4).t())
    assert read_checkpoint(archive, fmt="open_clip").keys() == got.keys()


class _System:
    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_hand_made_archive_with_os_system_in_data_pkl(tmp_path):
    marker = tmp_path / "pwned"
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": _System(f"touch {marker}")}, protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
        z.writestr("evil/version", "3\n")
    with pytest.raises(WeightsError) as e:
        read_checkpoint(archive, model_id="evil", fmt="openai_clip")
    glob = f"{os.system.__module__}.system"  # posix.system
    assert str(e.value) == (
        f"model evil: TorchScript archive {archive}: cannot read its tensors safely:"
        f" refuses to load global {glob}"
    )
    assert not marker.exists()


def test_truncated_tensor_record_is_named(tmp_path):
    src = tmp_path / "ok.pt"
    torch.jit.save(torch.jit.script(nn.Linear(4, 3)), src)
    bad = tmp_path / "short.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if "/data/" in n and len(data) == 48:  # the 3 × 4 float32 weight
                data = data[:20]
            zout.writestr(n, data)
    with pytest.raises(
        WeightsError,
        match=r"short\.pt: tensor record ok/data/\d+ has 20 bytes, not the 12 × 4 of its"
        r" float32 storage \(truncated or corrupt\)",
    ):
        read_checkpoint(bad, model_id="m")
