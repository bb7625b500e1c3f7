"""Stage 2 on tiny models: runs, resumes exactly, exports a pipeline that reproduces the generator."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import count_steps, invocations
from crossdistill.denoisers import build_denoiser, load_denoiser
from crossdistill.distill.config import DistillConfig, FakeConfig, FirstTimes, TeacherConfig
from crossdistill.distill.run import distill
from crossdistill.errors import CrossdistillError
from crossdistill.train import TrainConfig

PROMPTS = ["a red circle", "a dog", "a blue square"]


def _cfg(root, steps, kind="full", bridge="roundtrip", gan=0.0):
    from crossdistill.data.sources import DataConfig
    from crossdistill.distill.config import GanConfig

    return DistillConfig(student=str(root / "student"), teachers=[TeacherConfig(str(root / "teacher"), bridge)],
                        fake=FakeConfig(kind=kind, updates=2), gan=GanConfig(weight=gan, data=DataConfig(images=8, domain="shapes")),
                        train=TrainConfig(steps=steps, batch=4, checkpoint_every=2, log_every=1, sample_every=2))


@pytest.mark.parametrize("kind,gan", [("full", 0.0), ("lora", 0.0), ("lora", 0.01)])
def test_distill_resumes_exactly(tiny_pair, tmp_path, kind, gan, monkeypatch):
    from crossdistill.distill.task import DistillTask

    distill(_cfg(tiny_pair, 4, kind, gan=gan), tmp_path / "a", PROMPTS, progress=False)
    distill(_cfg(tiny_pair, 2, kind, gan=gan), tmp_path / "b", PROMPTS, progress=False)
    steps = count_steps(monkeypatch, DistillTask)
    distill(_cfg(tiny_pair, 4, kind, gan=gan), tmp_path / "b", PROMPTS, progress=False)
    assert steps == [2, 3]                                       # the rerun ran only the remaining steps
    assert invocations(tmp_path / "b")[-1] == {"start_step": 2, "checkpoint": "ckpt-0000002"}
    a = load_file(str(tmp_path / "a" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
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
    from crossdistill.distill.task import DistillTask
    from accelerate import Accelerator

    task = DistillTask.from_config(_cfg(tiny_pair, 1, "lora"), PROMPTS)
    teacher = task.sides[0].den
    x = torch.randn(2, *teacher.latent_shape(32, 32))
    t = torch.tensor([0.3, 0.7])
    c = teacher.encode_prompt(PROMPTS[:2])
    before = teacher.model_output(x, t, c)
    task.setup(Accelerator(cpu=True))
    task.step(0, torch.Generator().manual_seed(0))
    assert torch.equal(teacher.model_output(x, t, c), before)          # adapters off: the plain Teacher
    with task.sides[0].fake.active() as fake:
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


def _draw(task, z, gen, step, side=None):
    """A Teacher's (t, eps) draw of the task at `step` (the first Teacher's unless `side`)."""
    return task.times.draw((side or task.sides[0]).den, z, gen, step, task.acc)


def _task(root, **kw):
    from accelerate import Accelerator

    from crossdistill.distill.task import DistillTask

    cfg = _cfg(root, 1)
    if "guidance" in kw:   # the Teacher's real-score guidance
        cfg.teachers[0].guidance = kw.pop("guidance")
    cfg = DistillConfig(**{**cfg.__dict__, **kw})
    task = DistillTask.from_config(cfg, PROMPTS)
    task.setup(Accelerator(cpu=True))
    return task


@pytest.mark.parametrize("swap", [False, True])
def test_stage2_step_moves_the_generator_toward_the_real_prediction(tiny_pair, swap):
    """Stub scores at the call site: real = the generator's bridged sample + 1, fake = the
    sample itself. One generator step must bring B(G(noise)) closer to the real prediction;
    passing real and fake the wrong way round (swap) must not."""
    task = _task(tiny_pair, guidance=1.0)
    task.opt_g = torch.optim.SGD(task.student.model.parameters(), lr=1e-3)   # a small step: first order holds
    seen = {}
    forward, generate = task.sides[0].bridge.forward, task.generator.forward
    task.sides[0].bridge.forward = lambda z, **k: seen.setdefault("z_hat", forward(z, **k))
    task.generator.forward = lambda n, c: (seen.setdefault("batch", (n, c)), generate(n, c))[1]
    real = lambda x_t, t, c, **k: seen["z_hat"].detach() + 1.0            # noqa: E731
    fake = lambda x_t, t, c, **k: seen["z_hat"].detach()                  # noqa: E731
    task.sides[0].den.predict_x0, task.sides[0].fake.den.predict_x0 = (fake, real) if swap else (real, fake)
    task.cfg.fake.updates, task._fake_update = 1, lambda *a, **k: {"fake": 0.0}   # generator update only
    task.step(0, torch.Generator().manual_seed(0))
    before = seen["z_hat"].detach()
    with torch.no_grad():
        after = forward(generate(*seen["batch"]), clamp=task.cfg.clamp)   # the same batch, after the step
    target = before + 1.0
    closer = bool((after - target).norm() < (before - target).norm())
    assert closer != swap


def test_real_score_guidance_calls_the_teachers_empty_prompt(tiny_pair):
    for guidance, expect_uncond in ((3.0, True), (1.0, False)):
        task = _task(tiny_pair, guidance=guidance)
        calls = []
        output = task.sides[0].den.model_output
        task.sides[0].den.model_output = lambda x, t, c, **k: (calls.append(c), output(x, t, c, **k))[1]
        task.step(0, torch.Generator().manual_seed(0))
        empty = task.sides[0].den.encode_prompt([""])
        n = task.cfg.train.batch
        assert len(calls) == 1 and len(calls[0]) == (2 * n if expect_uncond else n)
        if expect_uncond:   # the first half of the batched call: the Teacher's own "" conditioning
            assert torch.equal(calls[0].embeds[:n], empty.embeds.expand(n, -1, -1))
            if empty.pooled is not None:
                assert torch.equal(calls[0].pooled[:n], empty.pooled.expand(n, -1))


def test_export_is_the_ema_of_the_checkpoint(tiny_pair, tmp_path):
    distill(_cfg(tiny_pair, 2), tmp_path / "run", PROMPTS, progress=False)
    state = load_file(str(tmp_path / "run" / "ckpt-0000002" / "state.safetensors"))
    exported = load_file(str(tmp_path / "run" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    ema = {k[len("module/ema/"):]: v for k, v in state.items() if k.startswith("module/ema/")}
    raw = {k[len("module/generator/"):]: v for k, v in state.items() if k.startswith("module/generator/")}
    assert ema.keys() == exported.keys() and all(torch.equal(ema[k], exported[k]) for k in ema)
    assert any(not torch.equal(raw[k], exported[k]) for k in raw)      # and not the raw generator
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "run" / "student", subfolder="unet")
    assert all(torch.equal(v, ema[k]) for k, v in unet.state_dict().items())   # the pipeline's UNet too


def test_ema_update_matches_a_hand_computation():
    from crossdistill.train import ema_update

    ema, model = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(ema.weight, 1.0), torch.nn.init.constant_(model.weight, 3.0)
    ema_update(ema, model, decay=0.99, step=0)        # warm-up: d = min(0.99, 1/10) = 0.1
    assert ema.weight.item() == pytest.approx(0.1 * 1.0 + 0.9 * 3.0)
    torch.nn.init.constant_(ema.weight, 1.0)
    ema_update(ema, model, decay=0.99, step=10_000)   # d = 0.99
    assert ema.weight.item() == pytest.approx(0.99 * 1.0 + 0.01 * 3.0)


def test_each_process_takes_its_own_half_of_the_global_batch(tiny_pair):
    """Process k of 2 gets rows [k * B/2, (k + 1) * B/2) of what one process draws for the
    global batch B: distinct halves that cover it (noise, prompts, Teacher times and noise)."""
    from types import SimpleNamespace

    task = _task(tiny_pair)
    parts = []
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        task.acc = SimpleNamespace(num_processes=world, process_index=rank)
        gen = torch.Generator().manual_seed(5)
        draw, cs, ct = task._batch(gen)
        t, eps = _draw(task, torch.zeros(len(draw), *task.sides[0].den.latent_shape(32, 32)), gen, 0)
        parts.append((draw.noise, cs.embeds, t, eps))
    full, a, b = parts
    n = task.cfg.train.batch
    for i in range(4):
        assert len(a[i]) == len(b[i]) == n // 2 and len(full[i]) == n
        assert torch.equal(torch.cat([a[i], b[i]]), full[i])        # the halves cover the global batch
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[3], b[3])   # and are not the same rows


def test_t_shift_moves_teacher_times_toward_high_noise(tiny_pair):
    """t_shift = 1 draws exactly the times it always did; t_shift = 4 puts the share of
    draws the formula says in the top of the range; bad values are refused by name."""
    from crossdistill.distill.teachers import shifted_fractions

    u = torch.rand(100_000, generator=torch.Generator().manual_seed(0))
    top = lambda s: float((shifted_fractions(u, 0.02, 0.98, s) >= 0.85).float().mean())
    # u' >= 0.865 <=> u >= 0.865 / (s - (s - 1) 0.865)
    assert top(1.0) == pytest.approx(1 - 0.865, abs=0.01)
    assert top(4.0) == pytest.approx(1 - 0.865 / (4 - 3 * 0.865), abs=0.01)
    f = shifted_fractions(u, 0.02, 0.98, 4.0)
    assert float(f.min()) >= 0.02 and float(f.max()) <= 0.98
    plain, shifted = _task(tiny_pair), _task(tiny_pair, t_shift=4.0)
    z = torch.zeros(plain.cfg.train.batch, *plain.sides[0].den.latent_shape(32, 32))
    t0, _ = _draw(plain, z, torch.Generator().manual_seed(3), 0)
    ref = plain.sides[0].den.sample_timesteps(len(z), torch.Generator().manual_seed(3), lo=0.02, hi=0.98)
    assert torch.equal(t0, ref)                      # t_shift = 1: the draws of before, unchanged
    t4, _ = _draw(shifted, z, torch.Generator().manual_seed(3), 0)
    assert (t4 >= t0).all() and (t4 > t0).any()      # the same u, each moved toward the noisy end
    for bad, msg in (({"t_shift": 0.0}, r"t_shift must be in \(0, 1000\], got 0.0"),
                     ({"t_shift": 2.0, "t_density": "logit_normal"}, "cannot be combined")):
        with pytest.raises(CrossdistillError, match=msg):
            DistillConfig(**{**_cfg(tiny_pair, 1).__dict__, **bad}).validate()


def test_t_first_draws_its_own_teacher_times_for_its_steps_then_the_main_range(tiny_pair):
    """t_first.steps = 2: steps 0 and 1 draw from t_first.t_range (the same uniform draws
    laid on it), step 2 on from t_range exactly as a run without it; bad values refused."""
    task = _task(tiny_pair, t_first=FirstTimes(steps=2, t_range=(0.85, 0.98)))
    plain = _task(tiny_pair)
    z = torch.zeros(task.cfg.train.batch, *task.sides[0].den.latent_shape(32, 32))
    draw = lambda tk, step: _draw(tk, z, torch.Generator().manual_seed(3), step)[0]
    hi = plain.sides[0].den.sample_timesteps(len(z), torch.Generator().manual_seed(3), lo=0.85, hi=0.98)
    for step in (0, 1):
        assert torch.equal(draw(task, step), hi)
    assert torch.equal(draw(task, 2), draw(plain, 2)) and torch.equal(draw(task, 5), draw(plain, 0))
    assert not torch.equal(draw(task, 0), draw(plain, 0))
    with pytest.raises(CrossdistillError, match="steps must be >= 0, got -1"):
        FirstTimes(steps=-1)
    with pytest.raises(CrossdistillError, match="t_first.t_range"):
        DistillConfig(**{**_cfg(tiny_pair, 1).__dict__, 't_first': FirstTimes(steps=5, t_range=(0.9, 0.5))}).validate()


def test_every_teacher_time_draw_of_a_step_uses_that_step(tiny_pair):
    """The generator's, the fake score's (both updates) and the GAN's real draws all get the
    loop's step, so the phase switches for all of them at t_first.steps."""
    from accelerate import Accelerator

    from crossdistill.distill.task import DistillTask

    cfg = _cfg(tiny_pair, 4, gan=0.01)
    cfg.t_first = FirstTimes(steps=3)
    task = DistillTask.from_config(cfg, PROMPTS)
    task.setup(Accelerator(cpu=True))
    seen, draw = [], task.times.draw
    task.times.draw = lambda den, z, gen, step, acc, **kw: seen.append(step) or draw(den, z, gen, step, acc, **kw)
    for step in (2, 3):
        task.step(step, torch.Generator().manual_seed(step))
    # per step: the generator's draw, then each of the 2 fake updates' own draw and its real (GAN) draw
    assert seen == [2] * 5 + [3] * 5


def test_a_run_that_never_leaves_its_first_phase_says_so(tiny_pair, tmp_path, capsys):
    cfg = _cfg(tiny_pair, 2)
    cfg.t_first = FirstTimes(steps=2)   # steps 0 and 1: both in the first phase
    distill(cfg, tmp_path / "run", PROMPTS, progress=False)
    assert "warning: t_first.steps=2 >= train.steps=2" in capsys.readouterr().out
    cfg.train.steps = 3
    distill(cfg, tmp_path / "run", PROMPTS, progress=False)   # continued past the phase: nothing to say
    assert "t_first" not in capsys.readouterr().out


def test_pixel_gan_trains_and_resumes(tiny_pair, tmp_path):
    """gan.space=student: a discriminator on Student-resolution pixels, checkpointed and resumed exactly."""
    def cfg(steps):
        c = _cfg(tiny_pair, steps, gan=0.01)
        c.gan.space = "student"
        return c

    distill(cfg(4), tmp_path / "a", PROMPTS, progress=False)
    distill(cfg(2), tmp_path / "b", PROMPTS, progress=False)
    distill(cfg(4), tmp_path / "b", PROMPTS, progress=False)
    a = load_file(str(tmp_path / "a" / "ckpt-0000004" / "state.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-0000004" / "state.safetensors"))
    assert any(k.startswith("module/pixel_disc/") for k in a) and any(k.startswith("optim/pixel_disc/") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert all(h["gan_g"] > 0 and 0 < h["d_real"] < 1 for h in hist)


def test_fake_score_is_conditioned_alike_in_its_loss_and_in_the_dmd_query(tmp_path):
    """Flux embeds guidance: the fake score's training loss and its DMD query must pass the
    same guidance, text and pooled inputs to the network (DMD2 keeps them identical)."""
    from accelerate import Accelerator

    from crossdistill.distill.task import DistillTask

    build_denoiser("tiny-sd15", seed=1).save_pretrained(tmp_path / "student")
    build_denoiser("tiny-flux", seed=2).save_pretrained(tmp_path / "teacher")
    cfg = _cfg(tmp_path, 1)
    cfg.fake.updates = 1
    task = DistillTask.from_config(cfg, PROMPTS)
    task.setup(Accelerator(cpu=True))
    calls = []
    task.sides[0].fake.den.model.register_forward_pre_hook(
        lambda m, a, kw: calls.append({k: kw[k] for k in ("guidance", "pooled_projections", "encoder_hidden_states")}),
        with_kwargs=True)
    task.step(0, torch.Generator().manual_seed(0))
    query, train = calls          # the DMD query, then the fake score's own loss on the same samples
    assert query["guidance"] is not None and torch.equal(query["guidance"], train["guidance"])
    assert torch.equal(query["pooled_projections"], train["pooled_projections"])
    assert torch.equal(query["encoder_hidden_states"], train["encoder_hidden_states"])


def test_stage2_runs_at_the_resolutions_its_bridge_was_built_for(tiny_pair, tmp_path):
    """A Bridge built for 64 px Student / 64 px Teacher images (not the models' default
    32): the generator's noise, the samples and the exported pipeline follow it."""
    from accelerate import Accelerator

    from crossdistill.bridge import Bridge, BridgeConfig
    from crossdistill.denoisers import load_denoiser
    from crossdistill.distill.task import DistillTask

    s, t = load_denoiser(tiny_pair / "student"), load_denoiser(tiny_pair / "teacher")
    bridge = Bridge(s.space, t.space, 64, 64, BridgeConfig("roundtrip"))
    task = DistillTask([t], s, [bridge], PROMPTS, _cfg(tiny_pair, 1))
    task.setup(Accelerator(cpu=True))
    draw, _, _ = task._batch(torch.Generator().manual_seed(0))
    assert tuple(draw.noise.shape[-2:]) == tuple(s.latent_shape(64, 64)[-2:])
    assert task.samples().shape[-1] == 64
    task.export(tmp_path)
    assert load_denoiser(tmp_path / "student").defaults.resolution == 64


# -- several Teachers at once -----------------------------------------------------------
@pytest.fixture(scope="module")
def flux_teacher(tmp_path_factory):
    """A second tiny Teacher of another family (Flux: packed latents, T5 + CLIP pooled)."""
    root = tmp_path_factory.mktemp("flux")
    build_denoiser("tiny-flux", seed=3).save_pretrained(root / "teacher")
    return root / "teacher"


def _two_cfg(root, flux, steps, weights=(0.5, 0.5)):
    from crossdistill.distill.config import TeacherConfig

    cfg = _cfg(root, steps)
    cfg.teachers = [TeacherConfig(str(root / "teacher"), "roundtrip", 3.0, weights[0]),
                    TeacherConfig(str(flux), "roundtrip", 2.0, weights[1])]
    return cfg.validate()


def test_several_teachers_train_a_fake_score_each_and_resume_exactly(tiny_pair, flux_teacher, tmp_path,
                                                                     monkeypatch):
    from crossdistill.distill.task import DistillTask

    distill(_two_cfg(tiny_pair, flux_teacher, 4), tmp_path / "a", PROMPTS, progress=False)
    distill(_two_cfg(tiny_pair, flux_teacher, 2), tmp_path / "b", PROMPTS, progress=False)
    steps = count_steps(monkeypatch, DistillTask)
    distill(_two_cfg(tiny_pair, flux_teacher, 4), tmp_path / "b", PROMPTS, progress=False)
    assert steps == [2, 3]
    a = load_file(str(tmp_path / "a" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    # each Teacher's DMD term and fake-score loss is logged (the second's with _t1)
    assert all(h["dmd"] > 0 and h["dmd_t1"] > 0 and h["fake"] > 0 and h["fake_t1"] > 0 for h in hist)
    state = load_file(str(tmp_path / "a" / "ckpt-0000004" / "state.safetensors"))
    for name in ("fake", "fake_t1"):   # two fake scores, two optimizers, both checkpointed
        assert any(k.startswith(f"module/{name}/") for k in state)
        assert any(k.startswith(f"optim/{name}/") for k in state)
    prov = json.loads((tmp_path / "a" / "student" / "crossdistill.json").read_text())["provenance"]
    assert prov["teachers"] == [str(tiny_pair / "teacher"), str(flux_teacher)]


def _grad(task, noise, cs, cts, noisings):
    task.student.model.zero_grad(set_to_none=True)
    loss, _, _, _, _ = task._generator_loss(noise, cs, cts, noisings)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in task.student.model.parameters() if p.grad is not None])


def test_generator_gradient_is_the_weighted_sum_of_the_teachers_dmd_terms(tiny_pair, flux_teacher):
    """The two-Teacher gradient equals w1 * (first Teacher alone) + w2 * (second alone), on
    the same batch, noise and timesteps (each alone: the same task with the other's weight
    set to 0), and the second Teacher's term is not zero."""
    from accelerate import Accelerator

    from crossdistill.distill.task import DistillTask

    def task(weights):
        torch.manual_seed(0)
        cfg = _two_cfg(tiny_pair, flux_teacher, 1, (1.0, 1.0))
        for tc, w in zip(cfg.teachers, weights):
            tc.weight = w   # 0 is refused by validate(); set here to isolate one Teacher's term
        t = DistillTask.from_config(cfg, PROMPTS)
        t.setup(Accelerator(cpu=True))
        return t

    both = task((0.3, 2.0))
    gen = torch.Generator().manual_seed(0)
    noise, cs, cts = both._batch(gen)
    noisings = [_draw(both, torch.empty(1, *s.bridge.teacher_shape), gen, 0, s) for s in both.sides]
    g_both = _grad(both, noise, cs, cts, noisings)
    g_first = _grad(task((1.0, 0.0)), noise, cs, cts, noisings)
    g_second = _grad(task((0.0, 1.0)), noise, cs, cts, noisings)
    assert g_second.norm() > 1e-3 * g_first.norm()
    torch.testing.assert_close(g_both, 0.3 * g_first + 2.0 * g_second, rtol=1e-4, atol=1e-6)
    # the second Teacher's term is the one a one-Teacher run from it computes (its own
    # guidance, empty prompt, Bridge and fake score), not the first's
    torch.manual_seed(0)
    alone = _cfg(tiny_pair, 1)
    alone.teachers = [TeacherConfig(str(flux_teacher), "roundtrip", 2.0)]
    torch.manual_seed(0)
    legacy = DistillTask.from_config(alone, PROMPTS)
    legacy.setup(Accelerator(cpu=True))
    legacy.sides[0].fake.den.model.load_state_dict(both.sides[1].fake.den.model.state_dict())   # the same fake score
    legacy.student.model.load_state_dict(both.student.model.state_dict())
    g_legacy = _grad(legacy, noise, cs, cts[1:], noisings[1:])
    torch.testing.assert_close(2.0 * g_legacy, 2.0 * g_second, rtol=1e-4, atol=1e-6)


def test_several_teachers_config_errors(tiny_pair, flux_teacher):
    from crossdistill.errors import CrossdistillError

    cfg = _two_cfg(tiny_pair, flux_teacher, 1)
    cfg.teachers = []
    with pytest.raises(CrossdistillError, match="teachers is required"):
        cfg.validate()
    cfg = _two_cfg(tiny_pair, flux_teacher, 1)
    cfg.teachers[0].model = ""
    with pytest.raises(CrossdistillError, match=r"teachers\[0\].model is required"):
        cfg.validate()
    cfg = _two_cfg(tiny_pair, flux_teacher, 1)
    cfg.teachers[1].weight = 0.0
    with pytest.raises(CrossdistillError, match=r"teachers\[1\].weight must be > 0, got 0.0"):
        cfg.validate()
    cfg = _two_cfg(tiny_pair, flux_teacher, 1)
    cfg.gan.weight = 0.01
    with pytest.raises(CrossdistillError, match="needs a single Teacher"):
        cfg.validate()


def test_resuming_with_other_teachers_is_refused(tiny_pair, flux_teacher, tmp_path):
    from crossdistill.errors import CrossdistillError

    distill(_cfg(tiny_pair, 1), tmp_path / "run", PROMPTS, progress=False)
    with pytest.raises(CrossdistillError, match="was trained from Teacher"):
        distill(_two_cfg(tiny_pair, flux_teacher, 2), tmp_path / "run", PROMPTS, progress=False)


def test_each_student_latent_is_decoded_once_per_generator_pass(tiny_pair):
    """The round-trip Bridge, the re-encode manifold term and the pixel GAN all read D_s(z):
    the Student decoder runs once per micro-batch for all three, and each term's gradient
    reaches the generator through that one decode."""
    from accelerate import Accelerator

    from crossdistill.distill.task import DistillTask

    cfg = _cfg(tiny_pair, 1, gan=0.01)
    cfg.gan.space, cfg.manifold.weight = "student", 1.0
    task = DistillTask.from_config(cfg, PROMPTS)
    task.setup(Accelerator(cpu=True))
    calls = []
    task.student.space.vae.decoder.register_forward_hook(lambda m, a, out: calls.append(out.shape[0]))
    gen = torch.Generator().manual_seed(0)
    noise, cs, cts = task._batch(gen)
    noisings = [_draw(task, torch.empty(1, *s.bridge.teacher_shape), gen, 0, s) for s in task.sides]
    loss, logs, _, _, pixels = task._generator_loss(noise, cs, cts, noisings)
    assert calls == [len(noise)] and pixels is not None
    assert {"dmd", "manifold", "gan_g"} <= set(logs)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.student.model.parameters())


def _interrupted_run_matches(cfg, tmp_path) -> list[dict]:
    """`cfg(steps)` trained 4 steps in one go (run a), and 2 then resumed to 4 (run b): the
    exported generators are bit-identical. Returns run a's history."""
    distill(cfg(4), tmp_path / "a", PROMPTS, progress=False)
    distill(cfg(2), tmp_path / "b", PROMPTS, progress=False)
    distill(cfg(4), tmp_path / "b", PROMPTS, progress=False)
    a = load_file(str(tmp_path / "a" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    return [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]


def test_guidance_interval_guides_the_real_score_only_inside_it(tiny_pair):
    """teachers[].guidance_interval: the real score is guided at Teacher times inside the
    interval and conditional alone (guidance 1) outside it, per sample, exactly as two
    separate calls would give; a reversed interval is refused."""
    task = _task(tiny_pair, guidance=3.0)
    side = task.sides[0]
    assert side.guidance_at(torch.zeros(2)) == 3.0   # default: the whole range, one number
    task = _task(tiny_pair, guidance=3.0, teachers=[TeacherConfig(str(tiny_pair / "teacher"), "roundtrip", guidance=3.0,
                                                                  guidance_interval=(0.5, 1.0))])
    side, den = task.sides[0], task.sides[0].den
    t = den.time_at(torch.tensor([0.2, 0.8])).to(task.device)
    assert side.guidance_at(t).tolist() == [1.0, 3.0]
    x = torch.randn(2, *den.latent_shape(32, 32), generator=torch.Generator().manual_seed(0)).to(task.device)
    cond = side.text(["a red square on the left", "a blue circle on the right"])
    with torch.no_grad():
        def x0(i, g):
            return den.predict_x0(x[i:i + 1], t[i:i + 1], cond.index(torch.tensor([i])), guidance=g,
                                  uncond=side.uncond.expand(1))
        both = den.predict_x0(x, t, cond, guidance=side.guidance_at(t), uncond=side.uncond.expand(2))
        assert torch.allclose(both, torch.cat([x0(0, 1.0), x0(1, 3.0)]), atol=1e-5)
        assert not torch.allclose(x0(1, 3.0), x0(1, 1.0), atol=1e-4)   # guidance does change the prediction
        calls = []   # every sample outside the interval: one conditional call, no unconditional batch
        real_output = den.model_output
        den.model_output = lambda x_t, *a, **k: calls.append(len(x_t)) or real_output(x_t, *a, **k)
        t_out = den.time_at(torch.tensor([0.1, 0.3])).to(task.device)
        den.predict_x0(x, t_out, cond, guidance=side.guidance_at(t_out), uncond=side.uncond.expand(2))
        den.model_output = real_output
        assert calls == [2]
    with pytest.raises(CrossdistillError, match=r"guidance_interval must be two fractions lo < hi in \[0, 1\], got \[0.8, 0.2\]"):
        DistillConfig(**{**_cfg(tiny_pair, 1).__dict__, "teachers": [TeacherConfig("m", "identity", guidance_interval=(0.8, 0.2))]}).validate()


def test_adaptive_teacher_times_follow_the_measured_disagreement(tiny_pair):
    """t_sampling=adaptive: with no measurement every slice is equally likely; a step whose
    disagreement is large in the top slice only moves the draws there (the floor keeps a
    uniform share); draws stay inside t_range; combining it with a fixed rule is refused."""
    from crossdistill.distill.config import AdaptiveTimes
    from crossdistill.distill.losses import dmd_disagreement

    task = _task(tiny_pair, t_sampling="adaptive", t_adaptive=AdaptiveTimes(bins=4, floor=0.2, decay=0.5))
    times = task.times
    assert torch.allclose(times.probs(), torch.full((4,), 0.25, dtype=torch.float64))
    z = torch.zeros(task.cfg.train.batch, *task.sides[0].den.latent_shape(32, 32))
    times.draw(task.sides[0].den, z, torch.Generator().manual_seed(0), 0, task.acc, remember=True)
    bins = times.drawn[0]
    logs = times.observe(0, (bins == 3).float() * 10 + 0.1, task.acc)   # disagreement only in the noisiest slice
    p = times.probs()
    assert (bins == 3).any() and (bins != 3).any()   # this seed's draw has both
    assert p[3] > 0.5 and all(p[:3] >= 0.2 / 4) and logs["t_aim"] > 0.5
    gen = torch.Generator().manual_seed(1)
    frac = torch.cat([times.draw(task.sides[0].den, z, gen, 0, task.acc)[0] for _ in range(200)])
    lo, hi = task.cfg.t_range
    assert frac.min() >= task.sides[0].den.time_at(lo) and frac.max() <= task.sides[0].den.time_at(hi)
    # the disagreement is the noise predictions' gap: 0 where the two scores agree
    x, a, s = torch.randn(2, 3, 4, 4), torch.tensor([0.5, 0.8]).view(2, 1, 1, 1), torch.tensor([0.5, 0.2]).view(2, 1, 1, 1)
    assert torch.equal(dmd_disagreement(x, x, a, s), torch.zeros(2))
    assert torch.allclose(dmd_disagreement(x, x + 2, a, s), torch.tensor([2.0, 8.0]))
    assert torch.allclose(dmd_disagreement(x, x + 2, a, s, units="x0"), torch.tensor([2.0, 2.0]))   # t_adaptive.signal=x0
    with pytest.raises(CrossdistillError, match="unknown t_adaptive.signal 'v'; allowed: eps, x0"):
        AdaptiveTimes(signal="v")
    with pytest.raises(CrossdistillError, match="t_sampling=adaptive chooses the Teacher times itself"):
        DistillConfig(**{**_cfg(tiny_pair, 1).__dict__, "t_sampling": "adaptive", "t_shift": 3.0}).validate()
    with pytest.raises(CrossdistillError, match="unknown t_sampling 'auto'; allowed: adaptive, fixed"):
        DistillConfig(**{**_cfg(tiny_pair, 1).__dict__, "t_sampling": "auto"})


def test_adaptive_times_train_log_where_they_aim_and_resume_exactly(tiny_pair, tmp_path):
    """A real tiny run with t_sampling=adaptive: its slices' running means are checkpointed
    (a rerun from step 2 ends bit-identical to the uninterrupted run) and each step logs
    `t_aim`, which moves off the uniform draw's centre."""
    def cfg(steps):
        c = _cfg(tiny_pair, steps)
        return DistillConfig(**{**c.__dict__, "t_sampling": "adaptive"})

    hist = _interrupted_run_matches(cfg, tmp_path)
    state = load_file(str(sorted((tmp_path / "a").glob("ckpt-*"))[-1] / "state.safetensors"))
    assert any(k.startswith("module/t_bins/") for k in state)
    assert len(hist) == 4 and all("t_aim" in h for h in hist) and hist[-1]["t_aim"] != pytest.approx(0.5)
    # the same run measuring the gap in clean-image units aims elsewhere (t_adaptive.signal reaches the task)
    from crossdistill.distill.config import AdaptiveTimes

    c = _cfg(tiny_pair, 4)
    distill(DistillConfig(**{**c.__dict__, "t_sampling": "adaptive", "t_adaptive": AdaptiveTimes(signal="x0")}),
            tmp_path / "x0", PROMPTS, progress=False)
    x0 = [json.loads(x) for x in (tmp_path / "x0" / "history.jsonl").read_text().splitlines()]
    assert x0[0]["t_aim"] != pytest.approx(hist[0]["t_aim"], abs=1e-4)


def test_regression_pairs_are_the_student_bases_own_samples_split_over_processes(tiny_pair):
    """regress: pair i is the Student base's multi-step sample from noise i (drawn from the
    seed, the same on every process), process k of N makes pairs k, k + N, ...; the weight
    decays linearly to 0 at `until`; a few-step generator is refused."""
    from crossdistill.distill.regress import BasePairs, RegressConfig

    student = load_denoiser(str(tiny_pair / "student"))
    cfg = RegressConfig(weight=1.0, pairs=5, steps=2)
    whole = BasePairs(student, PROMPTS, cfg, 32, seed=7)
    assert len(whole) == 5 and whole.z.shape == whole.noise.shape
    again = student.sample([whole.prompts[3]], steps=2, latents=whole.noise[3:4], height=32, width=32)
    assert torch.allclose(again, whole.z[3:4], atol=1e-5)
    odd = BasePairs(student, PROMPTS, cfg, 32, seed=7, process=1, processes=2)
    assert torch.equal(odd.noise, whole.noise[1::2]) and odd.prompts == whole.prompts[1::2]
    assert torch.allclose(odd.z, whole.z[1::2], atol=1e-5)
    sched = RegressConfig(weight=2.0, until=4)
    assert [sched.weight_at(s) for s in (0, 2, 4, 9)] == [2.0, 1.0, 0.0, 0.0] and RegressConfig(weight=3.0).weight_at(99) == 3.0
    from crossdistill.distill.config import GeneratorConfig

    with pytest.raises(CrossdistillError, match="needs generator.steps=1, got 2"):
        DistillConfig(**{**_cfg(tiny_pair, 1).__dict__, "regress": RegressConfig(weight=1.0),
                         "generator": GeneratorConfig(steps=2)}).validate()


def test_regression_term_pulls_the_generator_toward_the_pairs_and_resumes_exactly(tiny_pair, tmp_path):
    """A tiny run with regress.weight > 0: the term is logged with its decaying weight, the
    rerun from step 2 ends bit-identical (the pairs are drawn again from the Student base,
    not from the checkpointed generator), and with DMD off (Teacher weight ~0) the term
    alone brings G(n) closer to the base's samples."""
    from accelerate import Accelerator

    from crossdistill.distill.regress import RegressConfig
    from crossdistill.distill.task import DistillTask

    def cfg(steps, **kw):
        c = _cfg(tiny_pair, steps)
        return DistillConfig(**{**c.__dict__, "regress": RegressConfig(weight=1.0, until=3, pairs=6, steps=2), **kw})

    hist = _interrupted_run_matches(cfg, tmp_path)
    assert [round(h["regress_weight"], 3) for h in hist] == [1.0, 0.667, 0.333, 0.0] and hist[0]["regress"] > 0
    c = cfg(1, lr=1e-3)
    c.teachers[0].weight = 1e-9
    task = DistillTask.from_config(c, PROMPTS)
    task.setup(Accelerator(cpu=True))
    p = task.pairs
    err = lambda: torch.nn.functional.mse_loss(task.generator(p.noise, task.text_s(p.prompts)), p.z).item()  # noqa: E731
    before = err()
    for step in range(3):
        task.step(step, torch.Generator().manual_seed(step))
    assert err() < before
