"""Stage 2 on tiny models: runs, resumes exactly, exports a pipeline that reproduces the generator."""

import json

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.denoisers import build_denoiser, load_denoiser
from crossdistill.distill.stage2 import FakeConfig, Stage2Config, distill
from crossdistill.train import TrainConfig

PROMPTS = ["a red circle", "a dog", "a blue square"]


def _cfg(root, steps, kind="full", bridge="roundtrip"):
    return Stage2Config(teacher=str(root / "teacher"), student=str(root / "student"), bridge=bridge,
                        fake=FakeConfig(kind=kind, updates=2),
                        train=TrainConfig(steps=steps, batch=4, checkpoint_every=2, log_every=1))


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_distill_resumes_exactly(tiny_pair, tmp_path, kind):
    distill(_cfg(tiny_pair, 4, kind), tmp_path / "a", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 2, kind), tmp_path / "b", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 4, kind), tmp_path / "b", PROMPTS, progress=False)
    a = load_file(str(tmp_path / "a" / "student" / "unet.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "unet.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 4 and all(h["dmd"] > 0 and h["fake"] > 0 for h in hist)


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
