"""FLOPs of one training step of each stage at full size, counted on the meta device.

    OMP_NUM_THREADS=1 python benchmarks/step_flops.py            # sd35-large, flux-dev, sdxl; 400 TFLOP/s
    python benchmarks/step_flops.py --teachers sd35-large --tflops 300 --out /tmp/f.json

No weights, no GPU: the published architectures (presets/full) are built on the meta
device and `torch.utils.flop_counter.FlopCounterMode` counts from shapes (matmuls,
convolutions and attention, whose SDPA decomposes into bmm on meta; elementwise ops,
norms and softmax are not counted, as usual). FLOPs do not depend on the dtype. Student:
SD 1.5 at 512 px; Teachers at 1024 px.

The steps are the real ones: `BridgeTask.step` and `DistillTask.step` of the shipped
configs bridge_sd15_from_<x> (stage 1) and sd15_from_<x> (stage 2), set up by the training
loop's own `prepare` (optimizers, gradient checkpointing), at batch 1 on one process; only
the values a meta tensor lacks are stood in for (`MetaScalars`: logged numbers read 0,
the finiteness check passes) and the text is dummy conditioning of the exact shapes after
the real text encoders ran on it (`TextCost`: the meta models have no tokenizers). A
stage-2 step is averaged over train.log_every steps, one of which logs the diagnostics.
The stage-1 bank (Teacher sampling, data.source=teacher) is not a training step: it is
`bank_formula` over the components below.

Components (TFLOP per image), a breakdown of where the steps' FLOPs go:
  U.f, U.fb        Student UNet, forward / forward+backward (weights and input)
  Ds.f, Ds.fb      Student VAE decoder at 512, forward / forward+backward to its input
  Es.f             Student VAE encoder at 512
  P.f, P.fb_w, P.fb_in   Bridge projector: forward / +backward to its weights (stage 1)
                   / +backward to its input (stage 2, frozen)
  T.f              Teacher backbone, one call (a CFG call is 2 T.f)
  T.fb_in          Teacher forward+backward to its input (loss on the output; reference only)
  Tcap.f, Tcap.fb_in   Teacher with attention capture, without grad / backward from the maps
  L.f, L.fb        Teacher with the LoRA fake score on: forward, and its denoising loss
                   backpropagated to the LoRA weights
  Et.f, Dt.f       Teacher VAE encoder / decoder at 1024
  txt_s, txt_t     Student / Teacher text encoders, one prompt (CLIP 77 tokens, T5 256 / 512)

"model" counts each pass once; "recompute" has the configs' gradient checkpointing on,
which reruns the forward of the checkpointed blocks (UNet, Teacher) in backward.
"decode_once": what decoding each Student latent once per generator pass saves, the real
stage-2 step against the same step with every reader of the image decoding it itself
(`DecodePerTerm`), for the shipped recipe and with the re-encode manifold term.

Hours are GPU-hours at an assumed sustained throughput per GPU (--tflops, default 400
TFLOP/s in bf16, ~40% of an H100 SXM's ~990 TFLOP/s dense bf16 peak); an estimate, not a
measurement. Writes docs/measurements/step_flops.json (--out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from crossdistill.attention import AttentionCapture, CaptureSpec, noised_maps  # noqa: E402
from crossdistill.bridge import Bridge, BridgeConfig  # noqa: E402
from crossdistill.bridge.losses import map_distance  # noqa: E402
from crossdistill.bridge.stage1 import BridgeTask, BridgeTrainConfig  # noqa: E402
from crossdistill.config import load_config  # noqa: E402
from crossdistill.data.banks import MemoryBank  # noqa: E402
from crossdistill.data.conditioning import DummyConditioner  # noqa: E402
from crossdistill.denoisers import build_denoiser  # noqa: E402
from crossdistill.distill.config import DistillConfig, FakeConfig, ManifoldConfig  # noqa: E402
from crossdistill.distill.fake import LoraFakeScore  # noqa: E402
from crossdistill.distill.task import DistillTask  # noqa: E402
from crossdistill.train import prepare, step_generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"sd35-large": "sd35", "flux-dev": "flux", "sdxl": "sdxl"}   # the shipped configs *_<suffix>
S_RES, T_RES, M = 512, 1024, "meta"

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


def frozen(den):
    """As `load_denoiser` leaves a model: every component frozen (a trainer unfreezes its own)."""
    for _, m in den.modules():
        m.eval().requires_grad_(False)
    return den


def empty(*shape, grad=False):
    return torch.empty(*shape, device=M).requires_grad_(grad)


def text_encoders(den):
    """(encoder, token length) of every text encoder of `den`, at the lengths its adapter
    tokenizes to (CLIP 77; T5 the family's max_sequence_length)."""
    for name, enc in den.components.items():
        if name.startswith("text_encoder") and enc is not None:
            t5 = type(enc).__name__.startswith("T5")
            yield enc, (den.defaults.max_sequence_length or 512) if t5 else 77


def text_flops(den) -> float:
    """All text encoders of `den` on one prompt."""
    with torch.no_grad():
        return sum(count(lambda: enc(torch.zeros(1, n, dtype=torch.long, device=M))) for enc, n in text_encoders(den))


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


def bank_formula(c: dict, t) -> float:
    """The stage-1 bank per image (data.source=teacher): its text, n Teacher sampler calls
    (CFG: 2 each), the Teacher VAE decode, and both encoders (not run here: a hand formula)."""
    cb = 1 if getattr(t, "guidance_embedded", False) or t.defaults.guidance <= 1 else 2
    return c["txt_t"] + t.defaults.steps * cb * c["T.f"] + c["Dt.f"] + c["Et.f"] + c["Es.f"]


class MetaScalars(TorchFunctionMode):
    """Lets a training step run on the meta device: a meta tensor has shapes, no values, so
    its `.item()` / `float()` (logged numbers) read 0 and its `bool()` (the finiteness
    check) True. Everything else runs, and is counted, as it is."""

    READS = {torch.Tensor.item: 0.0, torch.Tensor.__float__: 0.0, torch.Tensor.__bool__: True}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS and args and getattr(args[0], "is_meta", False):
            return self.READS[func]
        return func(*args, **(kwargs or {}))


class TextCost(DummyConditioner):
    """Dummy conditioning of the exact shapes (the meta models have no tokenizers), after
    running the denoiser's text encoders on each prompt at its token lengths, so their
    FLOPs are in the step as in a real run."""

    def __call__(self, prompts):
        for enc, n in text_encoders(self.den):
            with torch.no_grad():
                enc(torch.zeros(len(prompts), n, dtype=torch.long, device=M))
        return super().__call__(prompts)


def real_steps(task) -> dict[str, float]:
    """TFLOP per image of `task.step`, the task set up by the training loop's own `prepare`
    (its accelerator, optimizers, gradient checkpointing): a plain step, a step that also
    logs the diagnostics, and their mean over train.log_every steps."""
    train = task.cfg.train
    log_every = train.log_every
    with tempfile.TemporaryDirectory() as run_dir, MetaScalars():
        prepare(task, train, Path(run_dir))
        plain = count(lambda: task.step(0, step_generator(0, 0)))
        logged = count(lambda: task.step(log_every - 1, step_generator(0, log_every - 1)))
    b = train.batch
    return {"plain": plain / b, "logged": logged / b, "mean": ((log_every - 1) * plain + logged) / log_every / b}


def pair(teacher: str):
    """A fresh Student (SD 1.5) and Teacher on meta, frozen as `load_denoiser` leaves them:
    each task gets its own (a task changes its models: LoRA, gradient checkpointing, what trains)."""
    return frozen(build_denoiser("sd15", device=M)), frozen(build_denoiser(teacher, device=M))


def stage2_task(teacher: str, s1: BridgeTrainConfig, s2: DistillConfig, recompute: bool, shared_decode: bool = True):
    """The shipped stage-2 config's task on fresh meta models (batch 1, one process); the
    Bridge as stage 1 configures it. `shared_decode=False`: each term that reads the Student
    image decodes it itself (what the task did before it decoded once per pass)."""
    cfg = dataclasses.replace(s2, train=dataclasses.replace(s2.train, batch=1, grad_accumulation=1,
                                                            gradient_checkpointing=recompute))
    s, t = pair(teacher)
    with torch.device(M):
        bridge = Bridge(s.space, t.space, S_RES, T_RES, s1.bridge)
    cls = DistillTask if shared_decode else DecodePerTerm
    return cls([t], s, [bridge], ["a prompt"], cfg, conditioners=(TextCost(s), [TextCost(t)]))


class DecodePerTerm(DistillTask):
    """The step before decoding was shared: the Bridge and the re-encode term each decode."""

    def _decoded(self, z, needed):
        return None

    def _teacher_term(self, side, z, x, ct, t, eps):
        return super()._teacher_term(side, z, None, ct, t, eps)

    def _manifold(self, z, x):
        return super()._manifold(z, None)


def stage1_task(teacher: str, s1: BridgeTrainConfig, recompute: bool):
    """The shipped stage-1 config's task on fresh meta models: a bank of meta latents, batch 1."""
    cfg = dataclasses.replace(s1, train=dataclasses.replace(s1.train, batch=1, grad_accumulation=1,
                                                            gradient_checkpointing=recompute))
    s, t = pair(teacher)
    with torch.device(M):
        bridge = Bridge(s.space, t.space, S_RES, T_RES, cfg.bridge)
    bank = MemoryBank(empty(4, *s.latent_shape(S_RES, S_RES)), empty(4, *t.latent_shape(T_RES, T_RES)), ["a"] * 4)
    return BridgeTask(t, s, bridge, bank, cfg, conditioner=TextCost(t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teachers", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--tflops", type=float, default=400.0, help="assumed sustained TFLOP/s per GPU (bf16)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/measurements/step_flops.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    s = frozen(build_denoiser("sd15", device=M))
    student = student_components(s)
    result = {"assumptions": {
        "student": "sd15", "student_res": S_RES, "teacher_res": T_RES, "tflops_per_gpu": args.tflops,
        "units": "TFLOP (1e12 FLOPs) per image; per_step for the config's global batch; gpu_hours = FLOPs / "
                 "tflops_per_gpu for the config's steps (bank: data.images)",
        "counted": "matmul, conv, attention (FlopCounterMode on meta); not elementwise ops, norms, softmax, "
                   "optimizer, EMA, sample grids",
        "steps": "stage 1 and stage 2: the real BridgeTask.step / DistillTask.step of the shipped configs on the "
                 "meta models (mean over log_every steps, one of which logs the diagnostics); the bank: "
                 "bank_formula over the components",
        "model_vs_recompute": "recompute: the configs' gradient checkpointing on (forward reruns in backward)"},
        "teachers": {}}
    rows = []
    for name in args.teachers:
        s1 = load_config(BridgeTrainConfig, f"bridge_sd15_from_{CONFIGS[name]}")
        s2 = load_config(DistillConfig, f"sd15_from_{CONFIGS[name]}")
        t = frozen(build_denoiser(name, device=M))
        c = {**student, **projector_components(s, t, s1.bridge),
             **teacher_components(t, s1.attn.layers, s2.fake.rank)}
        info = {k: c.pop(k) for k in ("captured_layers", "lora_params_M")}
        entry = {"components_TFLOP": {k: round(v, 4) for k, v in c.items()}}
        b1, b2, n1, n2, bank = s1.train.batch, s2.train.batch, s1.train.steps, s2.train.steps, s1.data.images
        for mode in ("model", "recompute"):
            r = mode == "recompute"
            st1 = real_steps(stage1_task(name, s1, r))
            st2 = real_steps(stage2_task(name, s1, s2, r))
            p = {"stage1_step": st1["mean"], "stage1_bank": bank_formula(c, t), "stage2_step": st2["mean"]}
            tflop = {"stage1": p["stage1_step"] * b1 * n1, "stage1_bank": p["stage1_bank"] * bank,
                     "stage2": p["stage2_step"] * b2 * n2}
            hours = {k: v / args.tflops / 3600 for k, v in tflop.items()}
            hours["total"] = sum(hours.values())
            entry[mode] = {
                "per_image_TFLOP": {k: round(v, 2) for k, v in p.items()},
                "stage2_step_plain_logged_TFLOP": [round(st2["plain"], 2), round(st2["logged"], 2)],
                "per_step_TFLOP": {"stage1": round(p["stage1_step"] * b1, 1), "stage2": round(p["stage2_step"] * b2, 1)},
                "gpu_hours": {k: round(v, 1) for k, v in hours.items()}}
            rows.append((name, mode, p, b1, b2, hours))
        entry["settings"] = {"stage1_batch": b1, "stage1_steps": n1, "bank_images": bank, "stage2_batch": b2,
                             "stage2_steps": n2, "fake_updates": s2.fake.updates, "log_every": s2.train.log_every,
                             "stage2_guidance": s2.teachers[0].guidance, "fake_rank": s2.fake.rank, **info}
        result["teachers"][name] = entry

    # what decoding once per pass saves (stage 2, the model count): the shipped recipe reads
    # the Student image in the Bridge only; the shapes recipe adds the re-encode manifold term
    name = args.teachers[0]
    s1 = load_config(BridgeTrainConfig, f"bridge_sd15_from_{CONFIGS[name]}")
    s2 = load_config(DistillConfig, f"sd15_from_{CONFIGS[name]}")
    share = {}
    for label, cfg in (("shipped (Bridge only)", s2),
                       ("+ re-encode manifold term", dataclasses.replace(s2, manifold=ManifoldConfig("reencode", 1.0)))):
        now, before = (real_steps(stage2_task(name, s1, cfg, False, shared))["mean"]
                       for shared in (True, False))
        share[label] = {"before_TFLOP": round(before, 3), "now_TFLOP": round(now, 3),
                        "saved_TFLOP": round(before - now, 3), "saved_fraction": round(1 - now / before, 4),
                        "saved_student_unet_calls": round((before - now) / student["U.f"], 2)}
    result["decode_once"] = {"teacher": name, "per_image_stage2_step": share}

    names = list(result["teachers"])
    print("components, TFLOP per image (batch 1):")
    print(f"{'':16}" + "".join(f"{n:>13}" for n in names))
    for k in result["teachers"][names[0]]["components_TFLOP"]:
        print(f"{k:16}" + "".join(f"{result['teachers'][n]['components_TFLOP'][k]:13.3f}" for n in names))
    print(f"\nTFLOP per image (the real steps) and per step (global batch: stage 1 {b1}, stage 2 {b2}); "
          f"GPU-hours at {args.tflops:g} TFLOP/s sustained ({n1} + {n2} steps, {bank} bank images):")
    print(f"{'teacher':11}{'count':10}{'s1 /img':>9}{'s1 /step':>10}{'s1 h':>7}{'bank /img':>10}{'bank h':>7}"
          f"{'s2 /img':>9}{'s2 /step':>10}{'s2 h':>7}{'total h':>9}")
    for name, mode, p, b1, b2, h in rows:
        print(f"{name:11}{mode:10}{p['stage1_step']:9.1f}{p['stage1_step'] * b1:10.0f}{h['stage1']:7.0f}"
              f"{p['stage1_bank']:10.0f}{h['stage1_bank']:7.0f}{p['stage2_step']:9.1f}"
              f"{p['stage2_step'] * b2:10.0f}{h['stage2']:7.0f}{h['total']:9.0f}")
    print(f"\ndecoding each Student latent once per pass, stage-2 step of sd15 <- {result['decode_once']['teacher']} "
          f"(TFLOP per image, no recompute):")
    for label, r in share.items():
        print(f"  {label:28} before {r['before_TFLOP']:8.2f}  now {r['now_TFLOP']:8.2f}  saved {r['saved_TFLOP']:6.2f} "
              f"({100 * r['saved_fraction']:.1f} %, {r['saved_student_unet_calls']:.1f} Student UNet calls)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
