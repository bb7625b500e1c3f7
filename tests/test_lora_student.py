"""LoRA Students: only the adapter trains and is saved; exported as diffusers LoRA weights
that `StableDiffusionPipeline.from_pretrained(base).load_lora_weights(folder)` loads and that
reproduce `crossdistill generate`."""

import json

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.denoisers import load_denoiser
from crossdistill.distill.config import DistillConfig, FakeConfig, GeneratorConfig, TeacherConfig
from crossdistill.distill.run import distill
from crossdistill.train import TrainConfig

PROMPTS = ["a red circle", "a dog", "a blue square"]


def _cfg(root, steps, gen_steps=1):
    return DistillConfig(student=str(root / "student"), teachers=[TeacherConfig(str(root / "teacher"), "roundtrip")],
                        generator=GeneratorConfig(kind="lora", rank=4, steps=gen_steps), fake=FakeConfig(updates=1),
                        train=TrainConfig(steps=steps, batch=4, log_every=1, checkpoint_every=2, report_to="none"))


@pytest.fixture(scope="module", params=[1, 2])
def lora_run(request, tiny_pair, tmp_path_factory):
    run = tmp_path_factory.mktemp(f"lora{request.param}")
    distill(_cfg(tiny_pair, 3, request.param), run, PROMPTS, progress=False)
    return request.param, run


def test_only_the_adapter_trains_and_is_exported(lora_run, tiny_pair):
    steps, run = lora_run
    folder = run / "student"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["README.md", "crossdistill.json", "pytorch_lora_weights.safetensors", "scheduler"]
    weights = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    assert weights and all(k.startswith("unet.") and "lora" in k for k in weights)
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k or "lora.up" in k)   # it trained
    state = load_file(str(sorted(run.glob("ckpt-*"))[-1] / "state.safetensors"))
    gen = [k for k in state if k.startswith("module/generator/")]
    assert gen and all("lora_" in k for k in gen)          # the checkpoint holds the adapter, not the base
    info = json.loads((folder / "crossdistill.json").read_text())
    assert info["lora"] == {"base": str(tiny_pair / "student"), "rank": 4} and info["defaults"]["steps"] == steps
    card = (folder / "README.md").read_text()
    assert "load_lora_weights(" in card and "- lora" in card


def test_vanilla_diffusers_with_load_lora_weights_reproduces_generate(lora_run, tiny_pair):
    from diffusers import DDIMScheduler, LCMScheduler, StableDiffusionPipeline

    steps, run = lora_run
    folder = run / "student"
    den = load_denoiser(folder)                       # what `crossdistill generate --model FOLDER` loads
    seeds = [3, 4, 5]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    latents = torch.stack([torch.randn(den.latent_shape(32, 32), generator=g) for g in gens])
    ours = den.sample(PROMPTS, latents=latents, generator=gens)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pair / "student", safety_checker=None)
    pipe.load_lora_weights(folder)
    pipe.scheduler = (DDIMScheduler if steps == 1 else LCMScheduler).from_pretrained(folder, subfolder="scheduler")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(PROMPTS, num_inference_steps=steps, guidance_scale=0, height=32, width=32, output_type="latent",
               generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    assert (ours - ref).abs().max() <= 1e-4
    plain = StableDiffusionPipeline.from_pretrained(tiny_pair / "student", safety_checker=None)
    plain.scheduler = pipe.scheduler
    plain.set_progress_bar_config(disable=True)
    base = plain(PROMPTS, num_inference_steps=steps, guidance_scale=0, height=32, width=32, output_type="latent",
                 generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    assert (base - ref).abs().max() > 1e-3                # the adapter changes the images


def test_lora_student_resumes_exactly(tiny_pair, tmp_path):
    distill(_cfg(tiny_pair, 4), tmp_path / "a", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 2), tmp_path / "b", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 4), tmp_path / "b", PROMPTS, progress=False)
    a = load_file(str(tmp_path / "a" / "student" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
