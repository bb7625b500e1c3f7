"""The one-step generator and its diffusers form agree exactly."""

import torch

from crossdistill.denoisers import build_denoiser
from crossdistill.distill.generator import StudentGenerator, one_step_scheduler


def test_one_step_pipeline_equals_generator(tmp_path):
    from diffusers import StableDiffusionPipeline

    den = build_denoiser("tiny-sd15", seed=0)
    gen = StudentGenerator(den)
    prompts = ["a red circle", "a dog"]
    noise = torch.randn(2, *den.latent_shape(32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = gen(noise, den.encode_prompt(prompts))
    den = den.with_components(scheduler=one_step_scheduler(den))
    den.save_pretrained(tmp_path / "student")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "student", safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompts, num_inference_steps=1, guidance_scale=0, latents=noise, output_type="latent",
               height=32, width=32).images
    assert (ref - z).abs().max() <= 1e-5
    ours = den.sample(prompts, steps=1, guidance=0.0, latents=noise, height=32, width=32)
    assert (ours - z).abs().max() <= 1e-5
