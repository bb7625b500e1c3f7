"""Stage 2 on tiny models: runs, resumes exactly, exports a pipeline that reproduces the generator."""

import json

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.denoisers import build_denoiser, load_denoiser
from crossdistill.distill.stage2 import FakeConfig, Stage2Config, distill
from crossdistill.train import TrainConfig

PROMPTS = ["a red circle", "a dog", "a blue square"]


def _cfg(root, steps, kind="full", bridge="roundtrip", gan=0.0):
    from crossdistill.bridge.stage1 import DataConfig
    from crossdistill.distill.stage2 import GanConfig

    return Stage2Config(teacher=str(root / "teacher"), student=str(root / "student"), bridge=bridge,
                        fake=FakeConfig(kind=kind, updates=2), gan=GanConfig(weight=gan, data=DataConfig(images=8)),
                        train=TrainConfig(steps=steps, batch=4, checkpoint_every=2, log_every=1, sample_every=2))


@pytest.mark.parametrize("kind,gan", [("full", 0.0), ("lora", 0.0), ("lora", 0.01)])
def test_distill_resumes_exactly(tiny_pair, tmp_path, kind, gan):
    distill(_cfg(tiny_pair, 4, kind, gan=gan), tmp_path / "a", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 2, kind, gan=gan), tmp_path / "b", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 4, kind, gan=gan), tmp_path / "b", PROMPTS, progress=False)
    a = load_file(str(tmp_path / "a" / "student" / "unet.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "unet.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 4 and all(h["dmd"] > 0 and h["fake"] > 0 for h in hist)
    grids = sorted(p.name for p in (tmp_path / "a" / "samples").glob("*.png"))
    assert grids == ["step-0000002.png", "step-0000004.png"]     # periodic one-step sample grids
    if gan:   # the GAN head trains: its logs are there and its weights are in the checkpoint
        assert all(h["gan_g"] > 0 and h["gan_d"] > 0 and 0 < h["d_real"] < 1 for h in hist)
        state = load_file(str(sorted((tmp_path / "a").glob("ckpt-*"))[-1] / "state.safetensors"))
        assert any(k.startswith("module/gan_head/") for k in state)


def test_lora_fake_leaves_real_score_untouched(tiny_pair, tmp_path):
    from crossdistill.distill.stage2 import DistillTask
    from accelerate import Accelerator

    task = DistillTask(_cfg(tiny_pair, 1, "lora"), PROMPTS)
    teacher = task.teacher
    x = torch.randn(2, *teacher.latent_shape(32, 32))
    t = torch.tensor([0.3, 0.7])
    c = teacher.encode_prompt(PROMPTS[:2])
    before = teacher.model_output(x, t, c)
    task.setup(Accelerator(cpu=True))
    task.step(0, torch.Generator().manual_seed(0))
    assert torch.equal(teacher.model_output(x, t, c), before)          # adapters off: the plain Teacher
    with task.fake.active() as fake:
        assert not torch.equal(fake.model_output(x, t, c), before)    # the trained LoRA is on


def test_exported_student_generates_like_the_generator(tiny_pair, tmp_path):
    from diffusers import StableDiffusionPipeline

    distill(_cfg(tiny_pair, 2), tmp_path / "run", PROMPTS, progress=False)
    folder = tmp_path / "run" / "student"
    den = load_denoiser(folder)
    assert den.defaults.steps == 1 and den.defaults.guidance == 0.0
    noise = torch.randn(3, *den.latent_shape(32, 32), generator=torch.Generator().manual_seed(0))
    ours = den.sample(PROMPTS, latents=noise)
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(PROMPTS, num_inference_steps=1, guidance_scale=0, latents=noise, height=32, width=32,
               output_type="latent").images
    assert (ours - ref).abs().max() <= 1e-4


def test_student_inference_is_one_denoiser_call_and_one_decode(tiny_pair, tmp_path):
    """The floor `bench` times: `crossdistill generate` on the exported Student runs the
    UNet exactly once per batch and the VAE decoder once, nothing else (no CFG batch)."""
    from crossdistill.generate import GenerateConfig, generate

    distill(_cfg(tiny_pair, 1), tmp_path / "run", PROMPTS, progress=False)
    den = load_denoiser(tmp_path / "run" / "student")
    calls = {"unet": 0, "decode": 0, "encode": 0, "text": 0}
    den.model.register_forward_pre_hook(lambda m, a: calls.__setitem__("unet", calls["unet"] + 1))
    den.components["text_encoder"].register_forward_pre_hook(lambda m, a: calls.__setitem__("text", calls["text"] + 1))
    vae = den.components["vae"]
    for name in ("decode", "encode"):
        fn = getattr(vae, name)
        setattr(vae, name, lambda *a, _fn=fn, _n=name, **k: (calls.__setitem__(_n, calls[_n] + 1), _fn(*a, **k))[1])
    generate(GenerateConfig(str(tmp_path / "run" / "student"), PROMPTS, tmp_path / "gen", n_per_prompt=2,
                            batch_size=6), den=den, progress=False)
    assert calls["unet"] == 1 and calls["decode"] == 1 and calls["encode"] == 0, calls
    assert calls["text"] == 1     # prompts encoded once (not timed by `bench`, which pre-encodes)
    assert len(list((tmp_path / "gen").glob("*.png"))) == 6


def test_bench_times_student_and_teacher_from_one_run(tiny_pair, tmp_path):
    from crossdistill.eval.bench import bench

    distill(_cfg(tiny_pair, 1), tmp_path / "run", PROMPTS, progress=False)
    rows = bench({"teacher": str(tiny_pair / "teacher"), "student": str(tmp_path / "run" / "student")},
                 batches=(1, 2), repeats=1, reference="teacher")
    assert rows["student"]["steps"] == 1 and rows["teacher"]["steps"] > 1
    assert rows["teacher"]["speedup_b1"] == 1.0      # (speeds are measured by `bench`, not asserted here)
    s, t = rows["student"], rows["teacher"]
    assert s["ms_per_image_b2"] > 0 and s["speedup_b2"] == round(t["ms_per_image_b2"] / s["ms_per_image_b2"], 1)
