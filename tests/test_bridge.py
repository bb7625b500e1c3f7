"""The Bridge and its baselines: shapes for real pairs, gradient paths, stage-1 resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.bridge.stage1 import DataConfig, Stage1Config, train_bridge
from crossdistill.denoisers import build_denoiser
from crossdistill.errors import CrossdistillError
from crossdistill.train import TrainConfig

PAIRS = [("sd15", "sd35-large"), ("sd15", "sd35-medium"), ("sd15", "flux-dev"), ("sd15", "sdxl")]
VARIANTS = [BridgeConfig("bridge", "pixels"), BridgeConfig("bridge", "features"),
            BridgeConfig("projector_only"), BridgeConfig("roundtrip")]


@pytest.fixture(scope="module")
def meta_models():
    return {n: build_denoiser(n, device="meta") for n in {m for p in PAIRS for m in p}}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}<-{p[1]}")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.kind}-{v.tap}")
def test_every_variant_maps_full_size_pairs(meta_models, pair, variant):
    s, t = meta_models[pair[0]], meta_models[pair[1]]
    with torch.device("meta"):
        bridge = Bridge(s.space, t.space, 512, 1024, variant)
        out = bridge(torch.empty(1, *s.latent_shape(512, 512)))
    assert tuple(out.shape[1:]) == t.latent_shape(1024, 1024)


def test_identity_needs_a_shared_space_and_ratios_must_be_integers(meta_models):
    s = meta_models["sd15"]
    assert Bridge(s.space, s.space, 512, 512, BridgeConfig("identity"))(torch.ones(1)).item() == 1
    with pytest.raises(CrossdistillError, match="shared latent space"):
        Bridge(s.space, meta_models["sd35-large"].space, 512, 1024, BridgeConfig("identity"))
    with pytest.raises(CrossdistillError, match="not an integer resolution ratio"):
        with torch.device("meta"):
            Bridge(s.space, meta_models["sd35-large"].space, 512, 768, BridgeConfig("bridge"))
    with pytest.raises(CrossdistillError, match="unknown bridge kind 'brige'.*did you mean 'bridge'"):
        BridgeConfig("brige").validate()


def test_gradients_reach_projector_through_frozen_teacher_not_decoder(tiny_models):
    student, teacher = tiny_models("tiny-sd15"), tiny_models("tiny-sd35")
    bridge = Bridge(student.space, teacher.space, 32, 32, BridgeConfig("bridge", width=16, depth=1))
    dec_before = {k: v.clone() for k, v in student.space.vae.state_dict().items()}
    opt = torch.optim.SGD(bridge.parameters(), lr=0.1)
    assert {id(p) for p in bridge.parameters()} == {id(p) for p in bridge.projector.parameters()}
    z_s = torch.randn(2, *student.latent_shape(32, 32))
    z_hat = bridge(z_s)
    t = torch.tensor([0.5, 0.9])
    x0 = teacher.predict_x0(teacher.add_noise(z_hat, t, torch.randn_like(z_hat)), t,
                            teacher.encode_prompt(["a", "b"]), guidance=1.0)
    x0.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bridge.projector.parameters())
    assert all(p.grad is None for p in student.space.vae.parameters())
    assert all(p.grad is None for p in teacher.model.parameters())
    opt.step()
    assert all(torch.equal(v, dec_before[k]) for k, v in student.space.vae.state_dict().items())


def _cfg(root, steps):
    return Stage1Config(teacher=str(root / "teacher"), student=str(root / "student"), data=DataConfig(images=48),
                        bridge=BridgeConfig(width=16, depth=1),
                        train=TrainConfig(steps=steps, batch=8, checkpoint_every=2, log_every=1))


def test_stage1_resume_continues_the_same_loss_curve(tiny_pair, tmp_path):
    train_bridge(_cfg(tiny_pair, 6), tmp_path / "straight", progress=False)
    train_bridge(_cfg(tiny_pair, 4), tmp_path / "resumed", progress=False)      # "interrupted" at 4
    train_bridge(_cfg(tiny_pair, 6), tmp_path / "resumed", progress=False)      # same command again
    a = load_file(str(tmp_path / "straight" / "bridge" / "projector.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "bridge" / "projector.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = lambda d: [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    straight, resumed = hist(tmp_path / "straight"), hist(tmp_path / "resumed")
    assert [h["loss"] for h in straight] == [h["loss"] for h in resumed]
    assert straight[-1]["attn"] > 0 and straight[-1]["rec"] > 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from crossdistill.toy.data import export

    out = export(6, 64, tmp_path_factory.mktemp("imgs") / "scenes", seed=4)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    # the same folder is also a Hugging Face "imagefolder" dataset with captions
    (out / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": r["file"], "text": r["prompt"]})
                                                  for r in rows))
    return out, [r["prompt"] for r in rows]


@pytest.mark.parametrize("source", ["folder", "hf", "teacher", "shapes"])
def test_stage1_image_sources(tiny_pair, exported, source):
    from crossdistill.bridge.stage1 import load_images
    from crossdistill.denoisers import load_denoiser

    folder, prompts = exported
    cfg = DataConfig(source=source, path=str(folder) if source in ("folder", "hf") else None, images=4,
                     caption_column="text" if source == "hf" else None).validate()
    teacher = load_denoiser(tiny_pair / "teacher")
    images, got = load_images(cfg, teacher, 32, 4, seed=0)
    size = 64 if source == "shapes" else 32   # shapes renders natively at 64 px; encode_pairs resizes
    assert images.shape == (4, 3, size, size) and images.min() >= -1 and images.max() <= 1
    assert len(got) == 4
    if source in ("folder", "hf"):
        assert sorted(got) == sorted(prompts[:4]) or set(got) <= set(prompts)


def test_stage1_data_errors(exported):
    folder, _ = exported
    with pytest.raises(CrossdistillError, match="needs data.path"):
        DataConfig(source="hf").validate()
    with pytest.raises(CrossdistillError, match="unknown data.source 'web'"):
        DataConfig(source="web").validate()
    from crossdistill.bridge.stage1 import _hf_images

    with pytest.raises(CrossdistillError, match="no column 'caption'"):
        _hf_images(DataConfig(source="hf", path=str(folder), caption_column="caption"), 32, 2)
