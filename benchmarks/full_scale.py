"""Full-size Student/Teacher pairs with random weights: shapes, sizes, and (on a GPU)
stage-1 step time and memory, plus per-call inference timings.

    python benchmarks/full_scale.py                 # CPU: meta device, shapes + parameter counts
    python benchmarks/full_scale.py --device cuda   # GPU: real bf16 steps, gradient checkpointing

Student: SD 1.5 at 512 px. Teachers at 1024 px: SD 3.5 large, SD 3.5 medium, Flux-dev,
SDXL. Text encoders are not built (random conditioning of the exact shapes the
backbones take). Per pair on a GPU it measures:
  stage 1: Bridge forward, latent reconstruction + attention fidelity (image->text maps
           of every 4th text-attending layer) through the frozen Teacher run twice
           (reference without grad), backward into the projector, optimizer step;
  bridge vs round-trip: forward+backward of each alone (gradient to the Student latent);
  inference: one Student step (UNet + VAE decode) vs one Teacher denoiser call (CFG
           batch where the family uses it) and its default sampler's step count.
Stage 2 is not timed here yet (its full-depth plumbing is tested, narrowed, in
tests/test_full_size.py); issue "reliability" keeps that open.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from crossdistill.attention import AttentionCapture, CaptureSpec
from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.bridge.losses import attention_fidelity, latent_reconstruction
from crossdistill.denoisers import build_denoiser

TEACHERS = ("sd35-large", "sd35-medium", "flux-dev", "sdxl")
TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")


def params(m) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e9


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=3):
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def meta_report(name, student, S_RES, T_RES):
    s = build_denoiser(student, device="meta", omit=TEXT)
    t = build_denoiser(name, device="meta", omit=TEXT)
    with torch.device("meta"):
        b = Bridge(s.space, t.space, S_RES, T_RES, BridgeConfig("bridge"))
        z_hat = b(torch.empty(1, *s.latent_shape(S_RES, S_RES)))
    tokens = (T_RES // t.space.factor // t.token_patch) ** 2
    return {"teacher": name, "teacher_params_B": round(params(t.model), 3), "student_unet_params_B":
            round(params(s.model), 3), "projector_params_M": round(params(b) * 1e3, 3),
            "student_latent": s.latent_shape(S_RES, S_RES), "teacher_latent": t.latent_shape(T_RES, T_RES),
            "bridged_shape": tuple(z_hat.shape[1:]), "teacher_latent_positions": tokens,
            "attn_rows_per_layer_MB_bf16": round(tokens * t._conditioning_shape()[0] * 2 / 2**20, 1)}


def run_report(name, student, S_RES, T_RES, device, dtype, batch, steps):
    torch.manual_seed(0)
    s = build_denoiser(student, device=device, dtype=dtype, omit=TEXT)
    t = build_denoiser(name, device=device, dtype=dtype, omit=TEXT)
    t.model.enable_gradient_checkpointing()
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out = {"teacher": name, "device": dev_name, "dtype": str(dtype), "batch": batch}
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
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.teachers.split(","):
        row = meta_report(name, args.student, args.student_res, args.teacher_res)
        if args.device != "meta":
            row.update(run_report(name, args.student, args.student_res, args.teacher_res, torch.device(args.device),
                                  getattr(torch, args.dtype), args.batch, args.steps))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
