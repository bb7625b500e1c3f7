"""Full-size Student/Teacher pairs with random weights: shapes, sizes, memory estimates,
and (on a GPU) stage-1 and stage-2 step time and memory, plus per-call inference timings.

    python benchmarks/full_scale.py                 # CPU: meta device, shapes, parameter + memory estimates
    python benchmarks/full_scale.py --device cuda   # GPU: real bf16 steps, gradient checkpointing
    python benchmarks/full_scale.py --device cpu --narrow 32 --teacher-res 128 --student-res 64
                                                    # the GPU code path on a CPU, widths / 32 (a smoke run)

Student: SD 1.5 at 512 px. Teachers at 1024 px: SD 3.5 large, SD 3.5 medium, Flux-dev,
SDXL. Text encoders are not built (random conditioning of the exact shapes the
backbones take). Per pair on a GPU it measures:
  stage 1: Bridge forward, latent reconstruction + attention fidelity (image->text maps
           of every 4th text-attending layer) through the frozen Teacher run twice
           (reference without grad), backward into the projector, optimizer step;
  bridge vs round-trip: forward+backward of each alone (gradient to the Student latent);
  stage 2: one DMD2 generator step (one-step SD 1.5 UNet -> Bridge -> Teacher real score
           with CFG and LoRA fake score, both without grad; backward through the Bridge
           into the UNet; AdamW) and one fake-score update (the Teacher's own denoising
           loss with its LoRA on, backward into the LoRA), as crossdistill.distill runs
           them with fake.kind=lora, gradient checkpointing on both backbones;
  inference: one Student step (UNet + VAE decode) vs one Teacher denoiser call (CFG
           batch where the family uses it) and its default sampler's step count.
Memory estimates on meta (bytes per parameter): stage 2 trains the UNet in fp32 with
AdamW (4 weights + 4 grads + 8 moments) plus an fp32 EMA (4), the Teacher frozen in bf16
(2), the LoRA like the UNet; with FSDP over N GPUs the Teacher side divides by N.
"""

from __future__ import annotations

import argparse
import json

import torch

from crossdistill.attention import AttentionCapture, CaptureSpec
from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.bridge.losses import attention_fidelity, latent_reconstruction
from crossdistill.denoisers import build_denoiser
from crossdistill.eval.bench import timed

TEACHERS = ("sd35-large", "sd35-medium", "flux-dev", "sdxl")
TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")


def params(m) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e9


def meta_report(name, student, S_RES, T_RES):
    s = build_denoiser(student, device="meta", omit=TEXT)
    t = build_denoiser(name, device="meta", omit=TEXT)
    with torch.device("meta"):
        b = Bridge(s.space, t.space, S_RES, T_RES, BridgeConfig("bridge"))
        z_hat = b(torch.empty(1, *s.latent_shape(S_RES, S_RES)))
    tokens = (T_RES // t.space.factor // t.token_patch) ** 2
    unet, teacher = params(s.model), params(t.model)
    lora = lora_params(t) / 1e9
    state = {"student_unet_fp32_adam_ema": 20 * unet, "teacher_bf16": 2 * teacher, "lora_fp32_adam": 16 * lora}
    return {"stage2_state_GiB": {k: round(v * 1e9 / 2**30, 1) for k, v in state.items()},
            "stage2_state_GiB_total": round(sum(state.values()) * 1e9 / 2**30, 1),
            "lora_params_M": round(lora * 1e3, 2),
            # fake.kind=full instead of lora: a trainable fp32 Teacher copy with AdamW (FSDP divides it by N)
            "fake_full_fp32_adam_GiB": round(16 * teacher * 1e9 / 2**30, 1),
            **{"teacher": name, "teacher_params_B": round(params(t.model), 3), "student_unet_params_B":
            round(params(s.model), 3), "projector_params_M": round(params(b) * 1e3, 3),
            "student_latent": s.latent_shape(S_RES, S_RES), "teacher_latent": t.latent_shape(T_RES, T_RES),
            "bridged_shape": tuple(z_hat.shape[1:]), "teacher_latent_positions": tokens,
            "attn_rows_per_layer_MB_bf16": round(tokens * t._conditioning_shape()[0] * 2 / 2**20, 1)}}


def lora_params(t, rank: int = 16) -> int:
    """LoRA parameters crossdistill's fake score adds (rank r on the attention projections)."""
    from crossdistill.distill.stage2 import lora_targets

    n = 0
    for name, m in t.model.named_modules():
        if isinstance(m, torch.nn.Linear) and any(name == x or name.endswith("." + x) for x in lora_targets(t)):
            n += rank * (m.in_features + m.out_features)
    return n


def stage2_report(s, t, bridge, S_RES, T_RES, device, dtype, batch, steps):
    """One DMD2 generator step + one LoRA fake-score update (see the module docstring)."""
    from crossdistill.distill.generator import OneStepGenerator
    from crossdistill.distill.losses import dmd_generator_loss
    from crossdistill.distill.stage2 import FakeConfig, FakeScore

    s.model.requires_grad_(True).train()
    s.model.enable_gradient_checkpointing()
    gen = OneStepGenerator(s)
    fake = FakeScore(t, FakeConfig(kind="lora"))
    opt_g = torch.optim.AdamW(s.model.parameters(), lr=1e-5)
    opt_f = torch.optim.AdamW(fake.parameters(), lr=1e-5)
    bridge.requires_grad_(False)
    cs, ct, unc = s.dummy_conditioning(batch), t.dummy_conditioning(batch), t.dummy_conditioning(batch)

    def step():
        noise = torch.randn(batch, *s.latent_shape(S_RES, S_RES), device=device, dtype=dtype)
        z_hat = bridge(gen(noise, cs))
        tt = t.time_at(torch.rand(batch)).to(device)
        x_t = t.add_noise(z_hat, tt, torch.randn_like(z_hat))
        with torch.no_grad():
            real = t.predict_x0(x_t, tt, ct, guidance=t.defaults.guidance, uncond=unc)
            with fake.active() as f:
                fake_x0 = f.predict_x0(x_t, tt, ct, guidance=1.0)
        loss, _ = dmd_generator_loss(z_hat, real, fake_x0)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        with fake.active() as f:
            loss_f, _ = f.loss(z_hat.detach(), ct, t=t.time_at(torch.rand(batch)).to(device))
            opt_f.zero_grad(set_to_none=True)
            loss_f.backward()
            opt_f.step()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out = {"stage2_s_per_step": round(timed(step, device, steps), 3)}
    if device.type == "cuda":
        out["stage2_peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def run_report(name, student, S_RES, T_RES, device, dtype, batch, steps, narrow_k=None):
    from crossdistill.presets import narrow

    torch.manual_seed(0)
    s_p, t_p = (narrow(p, narrow_k) if narrow_k else p for p in (student, name))
    s = build_denoiser(s_p, device=device, dtype=dtype, omit=TEXT)
    t = build_denoiser(t_p, device=device, dtype=dtype, omit=TEXT)
    t.model.enable_gradient_checkpointing()
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out = {"teacher": name, "device": dev_name, "dtype": str(dtype), "batch": batch, "narrow": narrow_k or 1}
    bridge = Bridge(s.space, t.space, S_RES, T_RES, BridgeConfig("bridge")).to(device, dtype)
    opt = torch.optim.AdamW(bridge.parameters(), lr=1e-4)
    n_text = len([x for x in t.attention_sites() if x.kind != "self"])
    spec = CaptureSpec(layers=tuple(range(0, n_text, 4)))
    cond = t.dummy_conditioning(batch)
    z_s = torch.randn(batch, *s.latent_shape(S_RES, S_RES), device=device, dtype=dtype)
    z_true = torch.randn(batch, *t.latent_shape(T_RES, T_RES), device=device, dtype=dtype)
    grid = (z_true.shape[-2] // t.token_patch,) * 2

    def stage1():
        tt = t.time_at(torch.rand(batch)).to(device)
        noise = torch.randn_like(z_true)
        with AttentionCapture(t, spec) as cap:
            pred = bridge(z_s)
            loss, _ = latent_reconstruction(pred, z_true)
            with torch.no_grad():
                _, ref = cap.run(lambda: t.model_output(t.add_noise(z_true, tt, noise), tt, cond),
                                 text_len=cond.embeds.shape[1], grid=grid)
            _, maps = cap.run(lambda: t.model_output(t.add_noise(pred, tt, noise), tt, cond),
                              text_len=cond.embeds.shape[1], grid=grid)
            l_attn, _ = attention_fidelity(maps, ref)
            opt.zero_grad(set_to_none=True)
            (loss + l_attn).backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sec = timed(stage1, device, steps)
    out["stage1_s_per_step"] = round(sec, 3)
    if device.type == "cuda":
        out["stage1_peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["captured_layers"] = len(spec.layers)

    for kind in ("bridge", "roundtrip"):
        b = bridge if kind == "bridge" else Bridge(s.space, t.space, S_RES, T_RES, BridgeConfig("roundtrip"))

        def fb():
            z = z_s.clone().requires_grad_(True)
            b(z).float().pow(2).mean().backward()
        out[f"{kind}_fwd_bwd_ms"] = round(timed(fb, device) * 1000, 1)

    with torch.no_grad():
        sc = s.dummy_conditioning(1)
        one = torch.randn(1, *s.latent_shape(S_RES, S_RES), device=device, dtype=dtype)
        student_ms = timed(lambda: s.space.decode(s.model_output(one, s.t_max.to(device).expand(1), sc)),
                           device) * 1000
        tc = t.dummy_conditioning(1)
        zt = torch.randn(1, *t.latent_shape(T_RES, T_RES), device=device, dtype=dtype)
        tt = t.time_at(torch.tensor([0.5])).to(device)
        call_ms = timed(lambda: t.guided_output(zt, tt, tc, guidance=t.defaults.guidance,
                                                uncond=t.dummy_conditioning(1)), device) * 1000
        decode_ms = timed(lambda: t.space.decode(zt), device) * 1000
    steps_default = t.defaults.steps
    teacher_ms = call_ms * steps_default + decode_ms
    out.update(student_one_step_ms=round(student_ms, 1), teacher_call_ms=round(call_ms, 1),
               teacher_default_steps=steps_default, teacher_sampler_ms=round(teacher_ms, 1),
               speedup=round(teacher_ms / student_ms, 1))
    out.update(stage2_report(s, t, bridge, S_RES, T_RES, device, dtype, batch, steps))
    del s, t, bridge, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="meta", choices=("meta", "cuda", "cpu"))
    ap.add_argument("--teachers", default=",".join(TEACHERS))
    ap.add_argument("--student", default="sd15")
    ap.add_argument("--student-res", type=int, default=512)
    ap.add_argument("--teacher-res", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--narrow", type=int, default=None, help="divide every width by this (CPU smoke runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.teachers.split(","):
        row = meta_report(name, args.student, args.student_res, args.teacher_res)
        if args.device != "meta":
            row.update(run_report(name, args.student, args.student_res, args.teacher_res, torch.device(args.device),
                                  getattr(torch, args.dtype), args.batch, args.steps, args.narrow))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
