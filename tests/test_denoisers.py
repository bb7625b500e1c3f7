"""Foundation: adapters agree with the diffusers pipelines; parameterisations are exact."""

import pytest
import torch

from conftest import TINY
from crossdistill.denoisers import FAMILIES, build_denoiser, load_denoiser
from crossdistill.errors import CrossdistillError

PROMPTS = ["a red circle on the left", "a blue square at the top"]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_sample_matches_diffusers_pipeline(tiny_models, name, guidance):
    den = tiny_models(name)
    pipe = den.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    ours = den.sample(PROMPTS, steps=4, guidance=guidance, generator=torch.Generator().manual_seed(1),
                      height=32, width=32, n_per_prompt=2)
    kwargs = dict(prompt=PROMPTS, num_inference_steps=4, guidance_scale=guidance, height=32, width=32,
                  generator=torch.Generator().manual_seed(1), num_images_per_prompt=2, output_type="latent")
    if den.defaults.max_sequence_length:
        kwargs["max_sequence_length"] = den.defaults.max_sequence_length
    ref = pipe(**kwargs).images
    if den.patch > 1:  # Flux pipelines return packed latents
        ref = den.space.unpack(ref, *ours.shape[-2:])
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ours.std() > 0.1  # a real sample, not zeros


def _oracle(den, x0, noise):
    """Make the network return the exact target for (x0, noise) at any t."""
    def output(x_t, t, cond, guidance=None):
        k = len(x_t) // len(x0)  # CFG doubles the batch
        return den.target(x0.repeat(k, 1, 1, 1), noise.repeat(k, 1, 1, 1), t)

    den.model_output = output


@pytest.mark.parametrize("name,prediction", [("tiny-sd15", "epsilon"), ("tiny-sd15", "v_prediction"),
                                             ("tiny-sdxl", "epsilon"), ("tiny-sd3", None), ("tiny-flux", None)])
def test_oracle_x0_recovers_x0(name, prediction):
    den = build_denoiser(name)
    if prediction:
        den.scheduler.register_to_config(prediction_type=prediction)
        den = den.with_components()   # re-read the parameterisation from the scheduler config
        assert den.parameterization == prediction
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, *den.latent_shape(32, 32), generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    _oracle(den, x0, noise)
    cond = den.encode_prompt(["a red circle"] * 6)
    for lo, hi in [(0.0, 0.05), (0.0, 1.0), (0.95, 1.0)]:
        t = den.sample_timesteps(6, g, lo=lo, hi=hi)
        t[-1] = den.t_max
        x_t = den.add_noise(x0, t, noise)
        for w in (1.0, 3.0):  # CFG with an oracle is still exact
            x0_hat = den.predict_x0(x_t, t, cond, guidance=w)
            assert torch.allclose(x0_hat, x0, atol=1e-8, rtol=0), (lo, hi, w)


def test_flow_timesteps_are_shifted_and_trimmed(tiny_models):
    den = tiny_models("tiny-sd3")
    t = den.sample_timesteps(10000, torch.Generator().manual_seed(0), lo=0.02, hi=0.98)
    s = den.train_shift()
    assert s == 3.0
    lo, hi = s * 0.02 / (1 + (s - 1) * 0.02), s * 0.98 / (1 + (s - 1) * 0.98)
    assert t.min() >= lo - 1e-6 and t.max() <= hi + 1e-6
    assert t.median() > 0.6  # shift 3 pushes mass to high noise
    flux = tiny_models("tiny-flux")
    assert flux.train_shift() != 3.0  # resolution-dependent (dynamic) shift


@pytest.mark.parametrize("name", TINY)
def test_loss_backpropagates(tiny_models, name):
    den = build_denoiser(name)
    den.model.train().requires_grad_(True)
    x0 = torch.randn(2, *den.latent_shape(32, 32))
    cond = den.encode_prompt(PROMPTS)
    loss, logs = den.loss(x0, cond, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in den.model.parameters())


def test_uncond_is_model_empty_prompt(tiny_models):
    sd3 = tiny_models("tiny-sd3")
    assert torch.allclose(sd3.uncond(2).embeds, sd3.encode_prompt(["", ""]).embeds, atol=1e-6)
    sdxl = tiny_models("tiny-sdxl")  # SDXL's pipeline zeroes the empty prompt
    assert sdxl.uncond(3).embeds.abs().sum() == 0 and len(sdxl.uncond(3)) == 3


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sd35", "tiny-flux"])
def test_save_load_roundtrip_offline(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    den = build_denoiser(name, seed=3)
    den.save_pretrained(tmp_path / "m")
    assert not list((tmp_path / "m").rglob("*.bin")), "safetensors only"
    back = load_denoiser(tmp_path / "m")
    assert type(back) is type(den) and back.defaults == den.defaults
    a = den.sample(["a red circle"], steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0))
    b = back.sample(["a red circle"], steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() <= 1e-5  # same weights; attention kernels may differ after load


def test_sd3_without_t5_uses_zeros(tmp_path):
    den = build_denoiser("tiny-sd3")
    den.save_pretrained(tmp_path / "m")
    back = load_denoiser(tmp_path / "m", omit=("text_encoder_3",))
    assert back.components["text_encoder_3"] is None
    cond = back.encode_prompt(["a red circle"])
    assert cond.embeds.shape == den.encode_prompt(["a red circle"]).embeds.shape
    assert cond.embeds[:, -den.defaults.max_sequence_length:].abs().sum() == 0
    with pytest.raises(CrossdistillError, match="cannot omit vae"):
        load_denoiser(tmp_path / "m", omit=("vae",))


def test_loading_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CrossdistillError, match="model folder not found"):
        load_denoiser(tmp_path / "nope")
    with pytest.raises(CrossdistillError, match="offline .* not in the local Hugging Face cache") as e:
        load_denoiser("stabilityai/stable-diffusion-3.5-large")
    assert "\n" not in str(e.value)
    den = build_denoiser("tiny-sd15")
    den.save_pretrained(tmp_path / "m")
    for f in (tmp_path / "m" / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CrossdistillError, match="cannot load component 'unet'") as e:
        load_denoiser(tmp_path / "m")
    assert "\n" not in str(e.value)
    with pytest.raises(CrossdistillError, match="unknown family 'sdx'.*did you mean"):
        load_denoiser(tmp_path / "m", family="sdx")


def test_resolution_multiple_is_checked(tiny_models):
    den = tiny_models("tiny-sd35")  # VAE factor 2 x patch 2
    assert den.resolution_multiple == 4
    with pytest.raises(CrossdistillError, match="not a positive multiple of 4"):
        den.latent_shape(30, 32)


def test_one_adapter_per_family():
    assert sorted(FAMILIES) == ["flux", "sd15", "sd3", "sdxl"]


@pytest.mark.parametrize("name,prediction", [("tiny-sd15", "epsilon"), ("tiny-sd15", "v_prediction"),
                                             ("tiny-sdxl", "epsilon")])
def test_vp_noising_and_targets_match_diffusers_ddpm(name, prediction):
    """Against diffusers' own arithmetic: DDPMScheduler.add_noise and get_velocity at every
    integer timestep the adapter draws (the independent reference for the VP families)."""
    from diffusers import DDPMScheduler

    den = build_denoiser(name)
    den.scheduler.register_to_config(prediction_type=prediction)
    den = den.with_components()
    ref = DDPMScheduler.from_config(den.scheduler.config)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, *den.latent_shape(32, 32), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 250, 700, den.num_train_timesteps - 1])
    torch.testing.assert_close(den.add_noise(x0, t, noise), ref.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)
    want = noise if prediction == "epsilon" else ref.get_velocity(x0, noise, t)
    torch.testing.assert_close(den.target(x0, noise, t), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_flow_noising_matches_diffusers_flow_match(name):
    """FlowMatchEulerDiscreteScheduler.scale_noise at the pipeline's own sigmas (shift
    included), and its Euler step: x_prev = x + (sigma_next - sigma) v with v = noise - x0
    lands exactly on the next noised point of the same (x0, noise)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    den = build_denoiser(name)
    sched = FlowMatchEulerDiscreteScheduler.from_config(den.scheduler.config)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, *den.latent_shape(32, 32), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    kw = {"mu": 0.5} if sched.config.use_dynamic_shifting else {}
    sched.set_timesteps(num_inference_steps=6, **kw)
    for i, ts in enumerate(sched.timesteps):
        sigma = sched.sigmas[i:i + 1]
        ours = den.add_noise(x0, sigma, noise)
        torch.testing.assert_close(ours, sched.scale_noise(x0, ts[None], noise), rtol=1e-5, atol=1e-6)
        v = den.target(x0, noise, sigma)
        sched._step_index = i
        nxt = sched.step(v, ts, ours, return_dict=False)[0]
        torch.testing.assert_close(nxt, den.add_noise(x0, sched.sigmas[i + 1:i + 2], noise), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(den.to_x0(ours, sigma, v), x0, rtol=1e-4, atol=1e-5)
