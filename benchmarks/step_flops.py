"""FLOPs of one training step of each stage at full size, counted on the meta device.

    OMP_NUM_THREADS=1 python benchmarks/step_flops.py            # sd35-large, flux-dev, sdxl; 400 TFLOP/s
    python benchmarks/step_flops.py --teachers sd35-large --tflops 300 --out /tmp/f.json

No weights, no GPU: the published architectures (presets/full) are built on the meta
device and `torch.utils.flop_counter.FlopCounterMode` counts each pass from shapes
(matmuls, convolutions and attention, whose SDPA decomposes into bmm on meta;
elementwise ops, norms and softmax are not counted, as usual). Batch 1 per component;
FLOPs do not depend on the dtype. Student: SD 1.5 at 512 px; Teachers at 1024 px.
Stage settings come from the shipped configs bridge_sd15_from_<x> (stage 1) and
sd15_from_<x> (stage 2): captured layers, projector, global batch,
steps, bank size, guidance, fake.rank, fake.updates, train.log_every.

Components (TFLOP per image), the passes the code runs:
  U.f, U.fb        Student UNet, forward / forward+backward (weights and input)
  Ds.f, Ds.fb      Student VAE decoder at 512, forward / forward+backward to its input
  Es.f             Student VAE encoder at 512
  P.f, P.fb_w, P.fb_in   Bridge projector: forward / +backward to its weights (stage 1)
                   / +backward to its input (stage 2, frozen)
  T.f              Teacher backbone, one call (a CFG call is 2 T.f)
  T.fb_in          Teacher forward+backward to its input (loss on the output; reference only)
  Tcap.f           Teacher forward with attention capture of the config's layers, no grad
  Tcap.fb_in       the same with grad, backward from the maps into the input (stage 1:
                   the output is unused, so blocks after the last captured layer get no backward)
  L.f, L.fb        Teacher with the LoRA fake score on (rank fake.rank): forward, and its own
                   denoising loss backpropagated to the LoRA weights (input detached)
  Et.f, Dt.f       Teacher VAE encoder / decoder at 1024
  txt_s, txt_t     Student / Teacher text encoders, one prompt (CLIP 77 tokens, T5 256 / 512)

Composition per image (u = fake.updates, k = log_every, c2 = 2 if the stage-2 guidance
> 1 and the Teacher is not guidance-embedded else 1, c_b the same at the Teacher's
default sampler guidance, n = its default steps):
  stage 1 step  = txt_t + Ds.f + P.fb_w + Tcap.f + Tcap.fb_in
                  (z_s is data and the decoder frozen: decoder forward only; reference maps
                  without grad; backward through the Teacher from the maps into B(z_s))
  stage-1 bank  = txt_t + n c_b T.f + Dt.f + Et.f + Es.f      (data.source=teacher)
  stage 2 step  = u (txt_s + txt_t) + U.fb + Ds.fb + P.fb_in + c2 T.f + L.f
                  + u L.fb + (u - 1)(U.f + Ds.f + P.f) + (2 Ds.f + Es.f + Et.f) / k
                  (generator step: real score with CFG and fake score without grad; the DMD
                  gradient is a fixed target on B(z), no backward through the Teacher; the first
                  fake update reuses the generator step's B(z), the others draw fresh ones;
                  latent diagnostics every k steps)
"model" counts each pass once; "recompute" also counts gradient checkpointing
(train.gradient_checkpointing: true in the configs), which reruns the forward of the
checkpointed blocks (UNet, Teacher) in backward.

Hours are GPU-hours at an assumed sustained throughput per GPU (--tflops, default 400
TFLOP/s in bf16, ~40% of an H100 SXM's ~990 TFLOP/s dense bf16 peak); an estimate, not a
measurement. Writes docs/measurements/step_flops.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from crossdistill.attention import AttentionCapture, CaptureSpec, noised_maps  # noqa: E402
from crossdistill.bridge import Bridge, BridgeConfig  # noqa: E402
from crossdistill.bridge.losses import map_distance  # noqa: E402
from crossdistill.denoisers import build_denoiser  # noqa: E402
from crossdistill.distill.config import FakeConfig  # noqa: E402
from crossdistill.config import find_config  # noqa: E402
from crossdistill.distill.fake import LoraFakeScore  # noqa: E402
from crossdistill.train import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"sd35-large": "sd35", "flux-dev": "flux", "sdxl": "sdxl"}   # the shipped configs *_<suffix>
S_RES, T_RES, M = 512, 1024, "meta"

FORMULAS = {
    "stage1_step": "txt_t + Ds.f + P.fb_w + Tcap.f + Tcap.fb_in",
    "stage1_bank": "txt_t + n*c_b*T.f + Dt.f + Et.f + Es.f",
    "stage2_step": "u*(txt_s + txt_t) + U.fb + Ds.fb + P.fb_in + c2*T.f + L.f + u*L.fb "
                   "+ (u-1)*(U.f + Ds.f + P.f) + (2*Ds.f + Es.f + Et.f)/k",
}


def count(fn) -> float:
    """TFLOP of fn() (forward, and backward if fn calls it)."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 1e12


def grad_pass(fn, models) -> tuple[float, float]:
    """(without, with) diffusers gradient checkpointing of `models` for fn()."""
    plain = count(fn)
    for m in models:
        m.enable_gradient_checkpointing()
    try:
        return plain, count(fn)
    finally:
        for m in models:
            m.disable_gradient_checkpointing()


def empty(*shape, grad=False):
    return torch.empty(*shape, device=M).requires_grad_(grad)


def text_flops(den) -> float:
    """All text encoders of `den` on one prompt at the lengths the adapters tokenize to."""
    total = 0.0
    for name, enc in den.components.items():
        if not name.startswith("text_encoder") or enc is None:
            continue
        t5 = type(enc).__name__.startswith("T5")
        n = (den.defaults.max_sequence_length or 512) if t5 else 77
        with torch.no_grad():
            total += count(lambda: enc(torch.zeros(1, n, dtype=torch.long, device=M)))
    return total


def student_components(s) -> dict[str, float]:
    c: dict[str, float] = {"txt_s": text_flops(s)}
    z, t, cond = empty(1, *s.latent_shape(S_RES, S_RES)), s.t_max.to(M).expand(1), s.dummy_conditioning(1, M)
    with torch.no_grad():
        c["U.f"] = count(lambda: s.model_output(z, t, cond))
        c["Ds.f"] = count(lambda: s.space.decode(z))
        c["Es.f"] = count(lambda: s.space.encode(empty(1, 3, S_RES, S_RES)))
    s.model.requires_grad_(True)
    c["U.fb"], c["U.fb+ckpt"] = grad_pass(lambda: s.model_output(empty(*z.shape, grad=True), t, cond)
                                          .float().pow(2).mean().backward(), [s.model])
    s.model.requires_grad_(False)
    c["Ds.fb"] = count(lambda: s.space.decode(empty(*z.shape, grad=True)).float().pow(2).mean().backward())
    return c


def projector_components(s, t, cfg: BridgeConfig) -> dict[str, float]:
    with torch.device(M):
        p = Bridge(s.space, t.space, S_RES, T_RES, cfg).projector
    x = empty(1, 3 if cfg.tap == "pixels" else s.space.vae.config.block_out_channels[0], S_RES, S_RES)
    with torch.no_grad():
        f = count(lambda: p(x))
    fb_w = count(lambda: p(x).pow(2).mean().backward())
    p.requires_grad_(False)
    fb_in = count(lambda: p(x.detach().requires_grad_(True)).pow(2).mean().backward())
    return {"P.f": f, "P.fb_w": fb_w, "P.fb_in": fb_in}


def teacher_components(t, layers, rank: int) -> dict[str, float]:
    c: dict[str, float] = {"txt_t": text_flops(t)}
    shape = t.latent_shape(T_RES, T_RES)
    z, cond = empty(1, *shape), t.dummy_conditioning(1, M)
    tt = t.time_at(torch.tensor([0.5])).to(M)
    with torch.no_grad():
        c["T.f"] = count(lambda: t.model_output(z, tt, cond))
        c["Et.f"] = count(lambda: t.space.encode(empty(1, 3, T_RES, T_RES)))
        c["Dt.f"] = count(lambda: t.space.decode(z))
    c["T.fb_in"], c["T.fb_in+ckpt"] = grad_pass(
        lambda: t.model_output(empty(1, *shape, grad=True), tt, cond).float().pow(2).mean().backward(), [t.model])

    # stage 1: attention fidelity through the frozen Teacher (BridgeTask.loss)
    with AttentionCapture(t, CaptureSpec(layers=layers)) as cap:
        with torch.no_grad():
            c["Tcap.f"] = count(lambda: noised_maps(t, cap, z, tt, z, cond))
            ref = noised_maps(t, cap, z, tt, z, cond)

        def maps_backward():
            maps = noised_maps(t, cap, empty(1, *shape, grad=True), tt, z, cond)
            sum(map_distance(p, ref[k][g]) for k, gs in maps.items() for g, p in gs.items()).backward()
        c["Tcap.fb_in"], c["Tcap.fb_in+ckpt"] = grad_pass(maps_backward, [t.model])
    c["captured_layers"] = len(cap.sites)

    # stage 2: the LoRA fake score on the one Teacher copy (DistillTask._fake_update)
    fake = LoraFakeScore(t, FakeConfig(kind="lora", rank=rank))
    with fake.active() as f:
        with torch.no_grad():
            c["L.f"] = count(lambda: f.model_output(z, tt, cond))

        def fake_loss():
            out = f.model_output(f.add_noise(z, tt, z), tt, cond)
            torch.nn.functional.mse_loss(out.float(), f.target(z, z, tt).float()).backward()
        c["L.fb"], c["L.fb+ckpt"] = grad_pass(fake_loss, [t.model])
    c["lora_params_M"] = sum(p.numel() for n, p in t.model.named_parameters() if "lora_" in n) / 1e6
    return c


def compose(c: dict, s1: dict, s2: dict, t, recompute: bool) -> dict[str, float]:
    def g(k):
        return c[k + "+ckpt"] if recompute and k + "+ckpt" in c else c[k]
    u, k = s2["fake"]["updates"], s2.get("train", {}).get("log_every", TrainConfig().log_every)
    embedded = getattr(t, "guidance_embedded", False)
    c2 = 1 if embedded or (s2["teachers"][0].get("guidance") or t.defaults.guidance) <= 1 else 2
    cb = 1 if embedded or t.defaults.guidance <= 1 else 2
    return {
        "stage1_step": g("txt_t") + g("Ds.f") + g("P.fb_w") + g("Tcap.f") + g("Tcap.fb_in"),
        "stage1_bank": g("txt_t") + t.defaults.steps * cb * g("T.f") + g("Dt.f") + g("Et.f") + g("Es.f"),
        "stage2_step": u * (g("txt_s") + g("txt_t")) + g("U.fb") + g("Ds.fb") + g("P.fb_in") + c2 * g("T.f")
                       + g("L.f") + u * g("L.fb") + (u - 1) * (g("U.f") + g("Ds.f") + g("P.f"))
                       + (2 * g("Ds.f") + g("Es.f") + g("Et.f")) / k,
        "c2": c2, "c_b": cb, "n": t.defaults.steps, "u": u, "k": k,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--tflops", type=float, default=400.0, help="assumed sustained TFLOP/s per GPU (bf16)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/measurements/step_flops.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    s = build_denoiser("sd15", device=M)
    student = student_components(s)
    result = {"assumptions": {
        "student": "sd15", "student_res": S_RES, "teacher_res": T_RES, "tflops_per_gpu": args.tflops,
        "units": "components and per_image in TFLOP (1e12 FLOPs) per image; per_step for the config's global "
                 "batch; gpu_hours = FLOPs / tflops_per_gpu for the config's steps (bank: data.images)",
        "counted": "matmul, conv, attention (FlopCounterMode on meta); not elementwise ops, norms, softmax, "
                   "optimizer, EMA, sample grids",
        "model_vs_recompute": "recompute adds gradient checkpointing's forward reruns (UNet, Teacher)"},
        "formulas": FORMULAS, "teachers": {}}
    rows = []
    for name in args.teachers:
        s1, s2 = (yaml.safe_load(find_config(f"{f}_{CONFIGS[name]}").read_text())
                  for f in ("bridge_sd15_from", "sd15_from"))
        t = build_denoiser(name, device=M)
        layers = s1.get("attn", {}).get("layers")
        c = {**student, **projector_components(s, t, BridgeConfig(**s1.get("bridge", {}))),
             **teacher_components(t, tuple(layers) if layers else None, s2["fake"]["rank"])}
        info = {k: c.pop(k) for k in ("captured_layers", "lora_params_M")}
        entry = {"components_TFLOP": {k: round(v, 4) for k, v in c.items()}}
        b1, b2 = s1["train"]["batch"], s2["train"]["batch"]
        n1, n2, bank = s1["train"]["steps"], s2["train"]["steps"], s1.get("data", {}).get("images", 0)
        for mode in ("model", "recompute"):
            p = compose(c, s1, s2, t, mode == "recompute")
            tflop = {"stage1": p["stage1_step"] * b1 * n1, "stage1_bank": p["stage1_bank"] * bank,
                     "stage2": p["stage2_step"] * b2 * n2}
            hours = {k: v / args.tflops / 3600 for k, v in tflop.items()}
            hours["total"] = sum(hours.values())
            entry[mode] = {
                "per_image_TFLOP": {k: round(p[k], 2) for k in ("stage1_step", "stage1_bank", "stage2_step")},
                "per_step_TFLOP": {"stage1": round(p["stage1_step"] * b1, 1),
                                   "stage2": round(p["stage2_step"] * b2, 1)},
                "gpu_hours": {k: round(v, 1) for k, v in hours.items()}}
            rows.append((name, mode, p, b1, b2, hours))
        entry["settings"] = {"stage1_batch": b1, "stage1_steps": n1, "bank_images": bank, "stage2_batch": b2,
                             "stage2_steps": n2, **{k: p[k] for k in ("n", "c_b", "c2", "u", "k")},
                             "stage2_guidance": s2["teachers"][0].get("guidance"), "fake_rank": s2["fake"]["rank"], **info}
        result["teachers"][name] = entry

    names = list(result["teachers"])
    print("components, TFLOP per image (batch 1):")
    print(f"{'':16}" + "".join(f"{n:>13}" for n in names))
    for k in result["teachers"][names[0]]["components_TFLOP"]:
        print(f"{k:16}" + "".join(f"{result['teachers'][n]['components_TFLOP'][k]:13.3f}" for n in names))
    print(f"\nTFLOP per image and per step (global batch: stage 1 {b1}, stage 2 {b2}); "
          f"GPU-hours at {args.tflops:g} TFLOP/s sustained ({n1} + {n2} steps, {bank} bank images):")
    print(f"{'teacher':11}{'count':10}{'s1 /img':>9}{'s1 /step':>10}{'s1 h':>7}{'bank /img':>10}{'bank h':>7}"
          f"{'s2 /img':>9}{'s2 /step':>10}{'s2 h':>7}{'total h':>9}")
    for name, mode, p, b1, b2, h in rows:
        print(f"{name:11}{mode:10}{p['stage1_step']:9.1f}{p['stage1_step'] * b1:10.0f}{h['stage1']:7.0f}"
              f"{p['stage1_bank']:10.0f}{h['stage1_bank']:7.0f}{p['stage2_step']:9.1f}"
              f"{p['stage2_step'] * b2:10.0f}{h['stage2']:7.0f}{h['total']:9.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
