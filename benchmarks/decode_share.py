"""What decoding each Student latent once per stage-2 step saves at full size.

Stage 2 reads the decoded Student image D_s(z) in up to three terms: the Bridge (its
frozen decoder, with gradient), the re-encode manifold term (its target, without
gradient) and the pixel GAN (with gradient). The task decodes once and shares the pixels;
before, each term decoded for itself. This counts, on the meta device (no weights, no
memory), the FLOPs of one SD 1.5 VAE decode at 512 px (forward, and forward + backward)
against one UNet call, and what each recipe's step spends on decodes before and now,
per image of the batch.

    python benchmarks/decode_share.py [--student sd15] [--res 512] [--out docs/measurements/decode_share.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from crossdistill.denoisers import build_denoiser


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="sd15")
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    den = build_denoiser(args.student, device="meta", omit=("text_encoder", "text_encoder_2", "text_encoder_3"))
    z = torch.randn(1, *den.latent_shape(args.res, args.res), device="meta")
    fwd = flops(lambda: den.space.decode(z))
    zg = z.clone().requires_grad_(True)
    fwd_bwd = flops(lambda: den.space.decode(zg).sum().backward())
    t, cond = den.time_at(torch.tensor([0.5])).to("meta"), den.dummy_conditioning(1)
    unet = flops(lambda: den.model_output(z, t, cond))
    # (before, now) decode FLOPs per image of one generator pass; the manifold target has no gradient
    recipes = {"Bridge only (the shipped real-model configs)": (fwd_bwd, fwd_bwd),
               "+ re-encode manifold term (the shapes configs)": (fwd_bwd + fwd, fwd_bwd),
               "+ pixel GAN (gan.space: student)": (2 * fwd_bwd, fwd_bwd),
               "+ both": (2 * fwd_bwd + fwd, fwd_bwd)}
    row = {"student": args.student, "resolution": args.res, "decode_forward_GFLOP": fwd / 1e9,
           "decode_forward_backward_GFLOP": fwd_bwd / 1e9, "unet_call_GFLOP": unet / 1e9,
           "decode_over_unet_call": fwd / unet,
           "recipes": {k: {"before_GFLOP": b / 1e9, "now_GFLOP": n / 1e9, "saved_unet_calls": (b - n) / unet}
                       for k, (b, n) in recipes.items()}}
    print(f"{args.student} @ {args.res} px: one decode {fwd / 1e9:.0f} GFLOP forward, {fwd_bwd / 1e9:.0f} forward + "
          f"backward; one UNet call {unet / 1e9:.0f} GFLOP (a decode = {fwd / unet:.2f} UNet calls)")
    print("| generator pass, per image | decodes before (GFLOP) | now (GFLOP) | saved (UNet calls) |\n|---|---|---|---|")
    for k, v in row["recipes"].items():
        print(f"| {k} | {v['before_GFLOP']:.0f} | {v['now_GFLOP']:.0f} | {v['saved_unet_calls']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
