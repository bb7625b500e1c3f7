"""Latency: ms per image of a model's own sampler, denoiser calls + VAE decode, nothing else.

Prompts are encoded before the clock starts and the initial noise is drawn beforehand,
so a one-step Student is timed on exactly one denoiser call and one decode (the floor),
and a Teacher on its default sampler (its step count, CFG batch where the family uses
it) and one decode. Every figure of a comparison comes from the same process.
"""

from __future__ import annotations

import time

import torch

from ..denoisers import Denoiser, load_denoiser
from ..errors import CrossdistillError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# Per-block CPU timing of a full-size Teacher (`full_size`): per family, the backbone config
# keys that count repeated identical blocks, and the config keys whose presence means the
# blocks are not all alike (then the extrapolation would not hold).
BLOCK_DEPTH = {"sd3": ("num_layers",), "flux": ("num_layers", "num_single_layers")}
MIXED_BLOCKS = {"sd3": ("dual_attention_layers",)}   # SD 3.5 medium mixes two block kinds


def depth_keys(family: str) -> tuple[str, ...]:
    return BLOCK_DEPTH.get(family, ())


def blocks_uniform(family: str, backbone_config: dict) -> bool:
    """Whether the blocks `depth_keys` counts are all alike (per-block timing holds)."""
    return bool(depth_keys(family)) and not any(backbone_config.get(k) for k in MIXED_BLOCKS.get(family, ()))


def timed(fn, device: torch.device, repeats: int = 3, warmup: bool = True) -> float:
    """Best of `repeats` timed calls of `fn`, in seconds (after one untimed warm-up call)."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def ms_per_image(den: Denoiser, batch: int, repeats: int = 3, prompt: str = "a red circle at the top",
                 height: int | None = None, width: int | None = None) -> float:
    """Best of `repeats` timed runs (after one warm-up) of sampling + decoding `batch` images."""
    h, w = height or den.defaults.resolution, width or den.defaults.resolution
    cond = den.encode_prompt([prompt] * batch)
    noise = torch.randn(batch, *den.latent_shape(h, w), generator=torch.Generator().manual_seed(0))
    return 1000 * timed(lambda: den.space.decode(den.sample(cond, latents=noise, height=h, width=w)),
                        den.device, repeats) / batch


def bench(models: dict[str, str], batches: tuple[int, ...] = (1, 8), repeats: int = 3,
          reference: str | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
          height: int | None = None, width: int | None = None) -> dict[str, dict]:
    """{label: {steps, ms_per_image_b<B>..., speedup_b<B> (vs `reference`)}} from one process."""
    rows = {}
    for label, source in models.items():
        den = load_denoiser(source, dtype=dtype, device=device)
        rows[label] = {"model": str(source), "steps": den.defaults.steps, "guidance": den.defaults.guidance,
                       "device": str(den.device), "dtype": str(den.dtype).removeprefix("torch."),
                       "height": height or den.defaults.resolution, "width": width or den.defaults.resolution}
        for b in batches:
            rows[label][f"ms_per_image_b{b}"] = round(ms_per_image(den, b, repeats, height=height, width=width), 2)
    ref = rows.get(reference) if reference else None
    if ref:
        for row in rows.values():
            for b in batches:
                row[f"speedup_b{b}"] = round(ref[f"ms_per_image_b{b}"] / row[f"ms_per_image_b{b}"], 1)
    return rows


def table(rows: dict[str, dict], batches: tuple[int, ...] = (1, 8)):
    from rich.table import Table

    t = Table(title="Latency (denoiser calls + decode, ms per image)")
    for c in ["model", "steps"] + [f"ms/img b={b}" for b in batches] + [f"speed-up b={b}" for b in batches]:
        t.add_column(c, justify="left" if c == "model" else "right")
    for label, r in rows.items():
        t.add_row(label, str(r["steps"]), *[f"{r[f'ms_per_image_b{b}']:.2f}" for b in batches],
                  *[f"{r[f'speedup_b{b}']:.1f}x" if f"speedup_b{b}" in r else "-" for b in batches])
    return t


def full_size_summary(row: dict) -> str:
    """Three lines of a `full_size` row: the Student's one step, the Teacher's sampler, the speed-up."""
    return (f"{row['student']} @ {row['student_res']} one step: {row['student_ms']:.0f} ms "
            f"(UNet {row['student_call_ms']:.0f} + decode {row['student_decode_ms']:.0f})\n"
            f"{row['teacher']} @ {row['teacher_res']}, {row['teacher_steps']} steps: "
            f"{row['teacher_ms']:.0f} ms ({row['teacher_steps']} calls x {row['teacher_call_ms']:.0f}, "
            f"{row['teacher_call']}, + decode {row['teacher_decode_ms']:.0f})\n"
            f"speed-up {row['speedup']:.1f}x on {row['device']} ({row['dtype']}, batch 1)")


# -- full-size architectures (random weights) ------------------------------------------------

TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def _with_depth(preset: dict, keys: dict[str, int]) -> dict:
    import copy

    p = copy.deepcopy(preset)
    cls = family_of(p)
    p["components"][cls.backbone]["config"].update(keys)
    return p


def family_of(preset: dict):
    from ..denoisers import family_class

    return family_class(preset["family"])


@torch.no_grad()
def _preset_ms(preset: dict, res: int, device, dtype, repeats: int, guidance: float | None = None,
               decode: bool = True) -> tuple[float, float | None]:
    """(ms of one denoiser call at batch 1 as the default sampler makes it, CFG batch 2 where
    used; ms of one VAE decode, if `decode`), from one build of the preset. A CPU call of
    seconds needs no warm-up; a GPU gets one."""
    from ..denoisers import build_denoiser

    den = build_denoiser(preset, device=device, dtype=dtype, omit=TEXT_ENCODERS)
    warm = device.type == "cuda"
    z = torch.randn(1, *den.latent_shape(res, res), device=device, dtype=dtype)
    t = den.time_at(torch.tensor([0.5])).to(device)
    cond, unc = den.dummy_conditioning(1), den.dummy_conditioning(1)
    g = den.defaults.guidance if guidance is None else guidance
    call = 1000 * timed(lambda: den.guided_output(z, t, cond, guidance=g, uncond=unc), device, repeats, warm)
    dec = 1000 * timed(lambda: den.space.decode(z), device, repeats, warm) if decode else None
    return call, dec


def full_size(student: str = "sd15", teacher: str = "sd35-large", student_res: int = 512,
              teacher_res: int = 1024, device: str | None = None, repeats: int = 1, narrow_k: int | None = None,
              progress=print, dtype: torch.dtype | None = None) -> dict:
    """SD 1.5-512 one step (one UNet call + decode) against a full-size Teacher's default
    sampler (its steps x one CFG call + decode), batch 1, random weights, text encoding
    excluded on both sides. On a GPU (bf16) whole models are timed. On a CPU (fp32) the
    Teacher's backbone is too big to run whole (SD 3.5 large: 8B, minutes per call), so it
    is timed at depth 1 and with one more block of each repeated kind, at its real width
    and token count; call = base + sum over kinds of (blocks - 1) x per-block time.
    `narrow_k` divides every width (tests). `dtype`: bf16 on a GPU, fp32 on the CPU if None."""
    from ..presets import load_preset, narrow

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    s_p, t_p = load_preset(student), load_preset(teacher)
    if narrow_k:
        s_p, t_p = narrow(s_p, narrow_k), narrow(t_p, narrow_k)
    s_p.pop("architecture_only", None), t_p.pop("architecture_only", None)
    cls = family_of(t_p)
    backbone_cfg = t_p["components"][cls.backbone]["config"]
    out = {"student": student, "teacher": teacher, "student_res": student_res, "teacher_res": teacher_res,
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "dtype": str(dtype),
           "batch": 1, "narrow": narrow_k or 1}

    progress(f"student {student} @ {student_res}: one UNet call + decode")
    s_call, s_dec = _preset_ms(s_p, student_res, dev, dtype, repeats, guidance=0.0)
    out.update(student_call_ms=round(s_call, 1), student_decode_ms=round(s_dec, 1),
               student_ms=round(s_call + s_dec, 1))

    if dev.type == "cuda":
        progress(f"teacher {teacher} @ {teacher_res}: one call + VAE decode, whole model")
        t_call, t_dec = _preset_ms(t_p, teacher_res, dev, dtype, repeats)
        out["teacher_call"] = "whole model"
    else:
        if not blocks_uniform(cls.family, backbone_cfg):
            raise CrossdistillError(f"{teacher} mixes block kinds; per-block CPU timing would not hold. "
                                    f"Time it whole on a GPU (bench --full-size --device cuda)")
        base_depth = {k: 1 for k in depth_keys(cls.family)}
        # the VAE decoder does not depend on the backbone: timed beside the depth-1 one (the
        # whole 8B backbone in fp32 would not fit in memory)
        progress(f"teacher {teacher} @ {teacher_res}: backbone at depth {base_depth} + VAE decode")
        base, t_dec = _preset_ms(_with_depth(t_p, base_depth), teacher_res, dev, dtype, repeats)
        t_call, per_block = base, {}
        for k in depth_keys(cls.family):
            progress(f"teacher {teacher} @ {teacher_res}: one more {k} block")
            more, _ = _preset_ms(_with_depth(t_p, dict(base_depth, **{k: 2})), teacher_res, dev, dtype, repeats,
                                 decode=False)
            per_block[k] = more - base
            t_call += (backbone_cfg[k] - 1) * per_block[k]
        out.update(teacher_call="per-block extrapolation", teacher_base_ms=round(base, 1),
                   teacher_block_ms={k: round(v, 1) for k, v in per_block.items()},
                   teacher_blocks={k: backbone_cfg[k] for k in depth_keys(cls.family)})
    steps = t_p.get("defaults", {}).get("steps", cls.family_defaults.steps)
    teacher_ms = steps * t_call + t_dec
    out.update(teacher_call_ms=round(t_call, 1), teacher_steps=steps,
               teacher_guidance=t_p.get("defaults", {}).get("guidance", cls.family_defaults.guidance),
               teacher_decode_ms=round(t_dec, 1), teacher_ms=round(teacher_ms, 1),
               speedup=round(teacher_ms / (s_call + s_dec), 1))
    return out
