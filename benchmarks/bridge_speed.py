"""Forward+backward time of the Bridge vs the pixel round-trip (E_t(up(D_s(z)))), same batch.

    python benchmarks/bridge_speed.py            # shapes pair + full-size SD1.5-512 -> SD3.5-1024 VAEs

Random weights for the full-size pair (CPU, batch 1); the committed shapes models for
the shapes pair. Prints ms per call and the ratio from one run. Both variants need the
gradient to reach z_s (stage 2 backpropagates through the Bridge into the generator).
"""

from __future__ import annotations

import argparse
import time

import torch

from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.denoisers import build_denoiser, load_denoiser


def time_fb(bridge: Bridge, z: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + (repeats > 1)):   # a warm-up call unless a single (large) one is asked for
        zi = z.clone().requires_grad_(True)
        t0 = time.perf_counter()
        bridge(zi).float().pow(2).mean().backward()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def compare(name: str, student, teacher, s_res: int, t_res: int, batch: int, repeats: int) -> None:
    z = torch.randn(batch, *student.latent_shape(s_res, s_res))
    ms = {}
    for kind in ("bridge", "roundtrip"):
        torch.manual_seed(0)
        ms[kind] = time_fb(Bridge(student.space, teacher.space, s_res, t_res, BridgeConfig(kind)), z, repeats)
    print(f"{name:38s} batch {batch}: bridge {ms['bridge']:9.1f} ms  round-trip {ms['roundtrip']:9.1f} ms  "
          f"round-trip / bridge = {ms['roundtrip'] / ms['bridge']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--skip-shapes", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads, best of {args.repeats} (fwd+bwd)")
    if not args.skip_shapes:
        s, t = load_denoiser("shapes-student-base"), load_denoiser("shapes-teacher")
        compare("shapes 32 px -> 64 px", s, t, 32, 64, 32, args.repeats)
    if not args.skip_full:
        s, t = build_denoiser("sd15", omit=("unet", "text_encoder")), build_denoiser("sd35-large", omit=(
            "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"))
        compare("SD1.5 512 px -> SD3.5 1024 px (VAEs)", s, t, 512, 1024, 1, 1)


if __name__ == "__main__":
    main()
