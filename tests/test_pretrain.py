"""Pretraining of a domain's models: a killed denoiser stage resumes to the same weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crossdistill.domains import get
from crossdistill.domains.pretrain import PretrainConfig, StageConfig, pretrain


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("batch_rng", ["per_step", "stream"])
def test_interrupted_teacher_stage_resumes_to_the_same_weights(tmp_path, monkeypatch, batch_rng):
    import crossdistill.domains.pretrain as pre

    cfg = dataclasses.replace(PretrainConfig.quick(0), teacher=StageConfig(6, 4, 1e-3), checkpoint_every=2,
                              batch_rng=batch_rng)
    dom = get("shapes")
    pretrain(dom, tmp_path / "a", ["vae-teacher", "teacher"], cfg)
    pretrain(dom, tmp_path / "b", ["vae-teacher"], cfg)
    real = pre.ema_update

    def crash(ema, model, decay, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        real(ema, model, decay, step)

    monkeypatch.setattr(pre, "ema_update", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dom, tmp_path / "b", ["teacher"], cfg)
    assert (tmp_path / "b" / ".teacher.ckpt").is_dir() and not (tmp_path / "b" / "teacher").exists()
    monkeypatch.setattr(pre, "ema_update", real)
    pretrain(dom, tmp_path / "b", ["teacher"], cfg)
    a, b = _weights(tmp_path / "a" / "teacher"), _weights(tmp_path / "b" / "teacher")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / ".teacher.ckpt").exists()   # removed once the stage is done


def test_unknown_batch_rng_is_refused(tmp_path):
    from crossdistill.errors import CrossdistillError

    with pytest.raises(CrossdistillError, match="batch_rng"):
        pretrain(get("shapes"), tmp_path, ["teacher"], dataclasses.replace(PretrainConfig.quick(0), batch_rng="x"))
