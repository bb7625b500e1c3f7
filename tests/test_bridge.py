"""The Bridge and its baselines: shapes for real pairs, gradient paths, stage-1 resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import count_steps, invocations
from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.bridge.stage1 import BridgeTrainConfig, train_bridge
from crossdistill.data.sources import DataConfig
from crossdistill.denoisers import build_denoiser, load_denoiser
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
    with pytest.raises(CrossdistillError, match="unknown bridge.kind 'brige'.*did you mean 'bridge'"):
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
    return BridgeTrainConfig(teacher=str(root / "teacher"), student=str(root / "student"), data=DataConfig(images=48, domain="shapes"),
                        bridge=BridgeConfig(width=16, depth=1),
                        train=TrainConfig(steps=steps, batch=8, checkpoint_every=2, log_every=1))


def test_stage1_resume_continues_the_same_loss_curve(tiny_pair, tmp_path, monkeypatch):
    from crossdistill.bridge.stage1 import BridgeTask

    train_bridge(_cfg(tiny_pair, 6), tmp_path / "straight", progress=False)
    train_bridge(_cfg(tiny_pair, 4), tmp_path / "resumed", progress=False)      # "interrupted" at 4
    steps = count_steps(monkeypatch, BridgeTask)
    train_bridge(_cfg(tiny_pair, 6), tmp_path / "resumed", progress=False)      # same command again
    assert steps == [4, 5]                                       # only the remaining steps ran
    assert invocations(tmp_path / "resumed")[-1] == {"start_step": 4, "checkpoint": "ckpt-0000004"}
    a = load_file(str(tmp_path / "straight" / "bridge" / "projector.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "bridge" / "projector.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = lambda d: [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    straight, resumed = hist(tmp_path / "straight"), hist(tmp_path / "resumed")
    assert [h["loss"] for h in straight] == [h["loss"] for h in resumed]
    assert straight[-1]["attn"] > 0 and straight[-1]["rec"] > 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from crossdistill.domains import get
    from crossdistill.domains.data import export

    out = export(get("shapes"), 6, 64, tmp_path_factory.mktemp("imgs") / "scenes", seed=4)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    # the same folder is also a Hugging Face "imagefolder" dataset with captions
    (out / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": r["file"], "text": r["prompt"]})
                                                  for r in rows))
    return out, [r["prompt"] for r in rows]


@pytest.mark.parametrize("source", ["folder", "hf", "teacher", "renders"])
def test_stage1_image_sources(tiny_pair, exported, source):
    from crossdistill.data.sources import load_images
    from crossdistill.denoisers import load_denoiser

    folder, prompts = exported
    cfg = DataConfig(source=source, path=str(folder) if source in ("folder", "hf") else None, images=4, domain="shapes",
                     caption_column="text" if source == "hf" else None).validate()
    teacher = load_denoiser(tiny_pair / "teacher")
    images, got = load_images(cfg, teacher, 32, 4, seed=0)
    size = 64 if source == "renders" else 32   # shapes renders natively at 64 px; encode_latents resizes
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
    from crossdistill.data.sources import HfSource

    with pytest.raises(CrossdistillError, match="no column 'caption'"):
        HfSource(DataConfig(source="hf", path=str(folder), caption_column="caption"), 32, 2)
    with pytest.raises(CrossdistillError, match="set data.caption_column"):
        DataConfig(source="teacher", path=str(folder)).validate()


def test_load_bridge_refuses_a_bridge_trained_for_another_pair(tiny_pair, tmp_path):
    from crossdistill.bridge.io import load_bridge
    from crossdistill.denoisers import build_denoiser, load_denoiser

    train_bridge(_cfg(tiny_pair, 1), tmp_path / "run", progress=False)
    folder = tmp_path / "run" / "bridge"
    student, teacher = load_denoiser(tiny_pair / "student"), load_denoiser(tiny_pair / "teacher")
    load_bridge(folder, student, teacher)                                       # its own pair: fine
    load_bridge(folder, student, load_denoiser(tiny_pair / "teacher", dtype=torch.bfloat16))   # same VAE in bf16
    other = build_denoiser("tiny-sd15", seed=7)                                 # same shapes, another VAE
    with pytest.raises(CrossdistillError, match="trained for student .* differs from this run's student"):
        load_bridge(folder, other, teacher)
    with pytest.raises(CrossdistillError, match="trained for teacher"):
        load_bridge(folder, student, build_denoiser("tiny-sd35", seed=7))


def test_stage1_losses_known_values():
    from crossdistill.bridge.losses import attention_fidelity, latent_reconstruction, map_distance

    p = torch.tensor([[[0.5, 0.5, 0.0]]])          # one row, three keys
    q = torch.tensor([[[0.25, 0.25, 0.5]]])
    assert map_distance(p, p).item() == 0 and map_distance(p, p, "kl").item() == pytest.approx(0, abs=1e-6)
    assert map_distance(p, q).item() == pytest.approx(0.25 + 0.25 + 0.5)      # sum |p - q|
    kl = 0.25 * torch.log(torch.tensor(0.5)) * 2 + 0.5 * (torch.log(torch.tensor(0.5)) - torch.log(torch.tensor(1e-8)))
    assert map_distance(p, q, "kl").item() == pytest.approx(float(kl), rel=1e-4)   # sum q log(q / p), q the reference
    maps = {"l0": {"text": p, "image": q}, "l1": {"text": q}}
    ref = {"l0": {"text": q, "image": q}, "l1": {"text": q}}
    loss, logs = attention_fidelity(maps, ref)
    assert loss.item() == pytest.approx(1.0) and logs["attn"] == pytest.approx(1.0)   # summed over layers, groups
    assert attention_fidelity(ref, ref)[0].item() == 0
    a, b = torch.zeros(2, 3), torch.full((2, 3), 2.0)
    assert latent_reconstruction(a, a)[0].item() == 0 and latent_reconstruction(a, b)[0].item() == 4.0


def test_stage1_reference_and_prediction_share_t_and_noise(tiny_pair, monkeypatch):
    """Both Teacher passes of a stage-1 step see the same timestep and noise (only the
    latent differs), so the attention maps compare like with like."""
    from accelerate import Accelerator

    from crossdistill.bridge import stage1

    task = stage1.BridgeTask.from_config(_cfg(tiny_pair, 1))
    task.setup(Accelerator(cpu=True))
    calls = []
    maps = stage1.noised_maps
    monkeypatch.setattr(stage1, "noised_maps", lambda den, cap, z, t, noise, cond: (
        calls.append((z.detach().clone(), t.clone(), noise.clone())), maps(den, cap, z, t, noise, cond))[1])
    task.step(0, torch.Generator().manual_seed(0))
    (z_ref, t_ref, n_ref), (z_pred, t_pred, n_pred) = calls
    assert torch.equal(t_ref, t_pred) and torch.equal(n_ref, n_pred) and not torch.equal(z_ref, z_pred)


def test_stage1_loss_goes_down(tiny_pair, tmp_path):
    cfg = _cfg(tiny_pair, 30)
    cfg.lr = 3e-3
    train_bridge(cfg, tmp_path / "run", progress=False)
    hist = [json.loads(x)["loss"] for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert sum(hist[-5:]) / 5 < 0.7 * sum(hist[:5]) / 5, hist


def test_bridge_variants_are_classes_that_copy_and_check_their_kind(tiny_pair):
    import copy

    from crossdistill.bridge.model import DecoderBridge, RoundtripBridge

    s, t = load_denoiser(tiny_pair / "student"), load_denoiser(tiny_pair / "teacher")
    b = Bridge(s.space, t.space, 32, 32, BridgeConfig("bridge", width=8, depth=0))
    assert type(b) is DecoderBridge and b.kind == "bridge"
    c = copy.deepcopy(b)
    assert type(c) is DecoderBridge and c is not b
    z = torch.randn(1, *s.latent_shape(32, 32))
    assert torch.equal(b(z), c(z))
    assert type(Bridge(s.space, t.space, 32, 32, cfg=BridgeConfig("roundtrip"))) is RoundtripBridge
    with pytest.raises(CrossdistillError, match="kind"):
        DecoderBridge(s.space, t.space, 32, 32, BridgeConfig("roundtrip"))
