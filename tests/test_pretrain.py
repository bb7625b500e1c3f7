"""Pretraining of a domain's models: a killed denoiser stage resumes to the same weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crossdistill.domains import get
from crossdistill.pretrain import PretrainConfig, StageConfig, pretrain


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("batch_rng", ["per_step", "stream"])
def test_interrupted_teacher_stage_resumes_to_the_same_weights(tmp_path, monkeypatch, batch_rng):
    import crossdistill.pretrain as pre

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


def test_an_extra_teacher_gets_its_own_vae_and_family(tmp_path):
    """The shapes world ships a second Teacher (Flux family): its stages train a VAE of its
    own (other weights than the Teacher's VAE: another latent space) and a Flux denoiser."""
    from crossdistill.denoisers import load_denoiser
    from crossdistill.pretrain import stages_of
    from safetensors.torch import load_file

    dom = get("shapes")
    assert dom.extra_teachers == ("shapes-teacher-flux",)
    assert stages_of(dom)[-2:] == ("vae-shapes-teacher-flux", "shapes-teacher-flux")
    pretrain(dom, tmp_path, ["vae-teacher", "vae-shapes-teacher-flux", "shapes-teacher-flux"], PretrainConfig.quick(0))
    own = load_file(str(tmp_path / "vae-shapes-teacher-flux" / "diffusion_pytorch_model.safetensors"))
    first = load_file(str(tmp_path / "vae-teacher" / "diffusion_pytorch_model.safetensors"))
    assert own.keys() == first.keys() and not all(torch.equal(own[k], first[k]) for k in own)
    den = load_denoiser(tmp_path / "shapes-teacher-flux")
    assert den.family == "flux" and den.defaults.domain == "shapes"
    vae = load_file(str(tmp_path / "shapes-teacher-flux" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(vae[k], own[k]) for k in own)   # trained on its own VAE's latents


@pytest.mark.parametrize("swap", [0.0, 0.5, 1.0])
def test_student_caption_swap_exchanges_the_colours_of_that_share_of_captions(tmp_path, monkeypatch, swap):
    """`student_caption_swap` p: each Student-base training caption is the scene's own with
    probability 1 - p and its colour-swapped caption otherwise (the Teacher's never are)."""
    import numpy as np

    import crossdistill.pretrain as pre

    dom = get("pairs")
    own, other = "a red circle left of a blue square", "a blue circle left of a red square"
    assert dom.swapped_caption(own) == other and dom.swapped_caption(other) == own
    grammar = dom.prompts()
    seen: dict[str, list[int]] = {"student-base": [], "teacher": []}
    real_table = pre.encode_table

    class Recording:   # the caption rows each step draws (table.index(rows))
        def __init__(self, table, which):
            self.table, self.which = table, which

        def index(self, rows):
            seen[self.which] += rows.tolist()
            return self.table.index(rows)

    cfg = dataclasses.replace(PretrainConfig.quick(0), cfg_dropout=0.0, student_caption_swap=swap,
                              student_base=StageConfig(40, 8, 1e-3), teacher=StageConfig(10, 8, 1e-3))
    pretrain(dom, tmp_path, ["vae-student", "vae-teacher"], cfg)
    bank = np.stack([dom.render_at(dom.random_scene(np.random.default_rng(i), own), 64) for i in range(8)])
    for which, vae in (("student-base", "vae-student"), ("teacher", "vae-teacher")):
        monkeypatch.setattr(pre, "encode_table", lambda den, prompts, w=which: Recording(real_table(den, prompts), w))
        pre.train_denoiser(dom, which, bank, [own] * 8, tmp_path / vae, cfg, tmp_path / which)
    assert set(seen["teacher"]) == {grammar.index(own)}
    rows = np.array(seen["student-base"])
    assert set(rows) <= {grammar.index(own), grammar.index(other)} and len(rows) == 320
    share = float(np.mean(rows == grammar.index(other)))
    assert abs(share - swap) < 0.08, share   # 320 draws: sd of the share <= 0.028


def test_caption_swap_is_refused_where_nothing_binds(tmp_path):
    from crossdistill.errors import CrossdistillError

    cfg = dataclasses.replace(PretrainConfig.quick(0), student_caption_swap=0.5)
    with pytest.raises(CrossdistillError, match="domain 'shapes' has no swapped captions"):
        pretrain(get("shapes"), tmp_path, ["student-base"], cfg)
    with pytest.raises(CrossdistillError, match="student_caption_swap=1.5 is not a probability"):
        pretrain(get("pairs"), tmp_path, ["student-base"], dataclasses.replace(cfg, student_caption_swap=1.5))
