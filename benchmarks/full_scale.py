"""Full-size Student/Teacher pairs with random weights: shapes, sizes, memory estimates,
and (on a GPU) stage-1 and stage-2 step time and memory, plus per-call inference timings.

    python benchmarks/full_scale.py                 # CPU: meta device, shapes, parameter + memory estimates
    python benchmarks/full_scale.py --device cuda   # GPU: real bf16 steps, gradient checkpointing
    python benchmarks/full_scale.py --device cpu --narrow 32 --teacher-res 128 --student-res 64
                                                    # the GPU code path on a CPU, widths / 32 (a smoke run)

Student: SD 1.5 at 512 px. Teachers at 1024 px: SD 3.5 large, SD 3.5 medium, Flux-dev,
SDXL. Text encoders are not built (random conditioning of the exact shapes the
backbones take). Per pair on a GPU it times the code users run: the real stage-1 and
stage-2 tasks (`BridgeTask`, `DistillTask`) built from these models, set up by
`train.prepare` exactly as `train.run` sets them up (gradient checkpointing on), and
their `step`:
  stage 1: Bridge forward, latent reconstruction + attention fidelity (image->text maps
           of every 4th text-attending layer) through the frozen Teacher run twice
           (reference without grad), backward into the projector, optimizer step;
  bridge vs round-trip: forward+backward of each alone (gradient to the Student latent);
  stage 2: one DMD2 generator step (one-step SD 1.5 UNet, fp32 -> Bridge -> Teacher real
           score with CFG and LoRA fake score; backward through the Bridge into the UNet;
           AdamW; EMA) and one fake-score update (fake.kind=lora, fake.updates=1);
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

from crossdistill.bridge import Bridge, BridgeConfig
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
    from crossdistill.distill.fake import lora_targets

    n = 0
    for name, m in t.model.named_modules():
        if isinstance(m, torch.nn.Linear) and any(name == x or name.endswith("." + x) for x in lora_targets(t)):
            n += rank * (m.in_features + m.out_features)
    return n


def run_report(name, student, S_RES, T_RES, device, dtype, batch, steps, narrow_k=None):
    """Stage 1 and stage 2 as users run them: the real `BridgeTask` / `DistillTask` built
    from these models, set up by `train.prepare` (gradient checkpointing on), their `step`
    timed; then component and inference timings."""
    import tempfile

    from crossdistill.bridge.losses import AttnConfig
    from crossdistill.bridge.stage1 import BridgeTask, BridgeTrainConfig
    from crossdistill.data.banks import MemoryBank
    from crossdistill.data.conditioning import DummyConditioner
    from crossdistill.distill.task import DistillTask, cast_frozen
    from crossdistill.distill.config import DistillConfig, FakeConfig, TeacherConfig
    from crossdistill.presets import narrow
    from crossdistill.train import TrainConfig, prepare, step_generator

    torch.manual_seed(0)
    s_p, t_p = (narrow(p, narrow_k) if narrow_k else p for p in (student, name))
    s = cast_frozen(build_denoiser(s_p, device=device, omit=TEXT), dtype)   # the generator trains in fp32
    t = build_denoiser(t_p, device=device, dtype=dtype, omit=TEXT)
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out = {"teacher": name, "device": dev_name, "dtype": str(dtype), "batch": batch, "narrow": narrow_k or 1}
    train = TrainConfig(steps=steps, batch=batch, gradient_checkpointing=True)
    n_text = len([x for x in t.attention_sites() if x.kind != "self"])
    layers = tuple(range(0, n_text, 4))

    def peak(fn, key):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        out[f"{key}_s_per_step"] = round(timed(fn, device, steps), 3)
        if device.type == "cuda":
            out[f"{key}_peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    with tempfile.TemporaryDirectory() as tmp:
        # stage 1: a bank of random paired latents; random conditioning of the right shapes
        n = max(batch, 4)
        bank = MemoryBank(torch.randn(n, *s.latent_shape(S_RES, S_RES), device=device, dtype=dtype),
                        torch.randn(n, *t.latent_shape(T_RES, T_RES), device=device, dtype=dtype), ["a caption"] * n)
        bridge = Bridge(s.space, t.space, S_RES, T_RES, BridgeConfig("bridge")).to(device)
        cfg1 = BridgeTrainConfig(teacher=name, student=student, attn=AttnConfig(layers=layers), train=train)
        task1 = BridgeTask(t, s, bridge, bank, cfg1, conditioner=DummyConditioner(t))
        prepare(task1, train, tmp)
        counter = iter(range(10**6))
        peak(lambda: task1.step(0, step_generator(0, next(counter))), "stage1")
        out["captured_layers"] = len(layers)

        for kind in ("bridge", "roundtrip"):
            b = bridge if kind == "bridge" else Bridge(s.space, t.space, S_RES, T_RES, BridgeConfig("roundtrip"))

            def fb():
                z = bank.z_s[:batch].clone().requires_grad_(True)
                b(z).float().pow(2).mean().backward()
            out[f"{kind}_fwd_bwd_ms"] = round(timed(fb, device) * 1000, 1)

        with torch.no_grad():
            sc = s.dummy_conditioning(1)
            one = torch.randn(1, *s.latent_shape(S_RES, S_RES), device=device, dtype=torch.float32)
            student_ms = timed(lambda: s.space.decode(s.model_output(one, s.t_max.to(device).expand(1), sc)),
                               device) * 1000
            tc = t.dummy_conditioning(1)
            zt = torch.randn(1, *t.latent_shape(T_RES, T_RES), device=device, dtype=dtype)
            tt = t.time_at(torch.tensor([0.5])).to(device)
            call_ms = timed(lambda: t.guided_output(zt, tt, tc, guidance=t.defaults.guidance,
                                                    uncond=t.dummy_conditioning(1)), device) * 1000
            decode_ms = timed(lambda: t.space.decode(zt), device) * 1000
        teacher_ms = call_ms * t.defaults.steps + decode_ms
        out.update(student_one_step_ms=round(student_ms, 1), teacher_call_ms=round(call_ms, 1),
                   teacher_default_steps=t.defaults.steps, teacher_sampler_ms=round(teacher_ms, 1),
                   speedup=round(teacher_ms / student_ms, 1))

        # stage 2: the DMD2 step through the trained-alike Bridge, LoRA fake score
        cfg2 = DistillConfig(student=student, teachers=[TeacherConfig(name)], fake=FakeConfig(kind="lora", updates=1),
                             train=train)
        task2 = DistillTask([t], s, [bridge], ["a caption"] * batch, cfg2,
                            conditioners=(DummyConditioner(s), [DummyConditioner(t)]))
        prepare(task2, train, tmp)
        peak(lambda: task2.step(0, step_generator(0, next(counter))), "stage2")
    return out   # the models go with this frame; main() empties the CUDA cache between Teachers


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
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
