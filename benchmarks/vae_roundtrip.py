"""Adherence and PSNR of decode(encode(x)) for both shapes-world latent spaces.

    python benchmarks/vae_roundtrip.py     # 720 held-out renders (90 prompts x 8) per space
"""

from __future__ import annotations

import torch

from crossdistill.denoisers import load_denoiser
from crossdistill.toy.data import ShapesDataset, to_uint8
from crossdistill.toy.judge import adherence
from crossdistill.toy.shapes import all_prompts


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(2)
    for name in ("shapes-student-base", "shapes-teacher"):
        den = load_denoiser(name)
        res = den.defaults.resolution
        ds = ShapesDataset(720, res, seed=99, prompts=all_prompts())
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        rec = torch.cat([den.space.decode(den.space.encode(x[i:i + 120])) for i in range(0, len(x), 120)])
        psnr = 10 * torch.log10(4 / (rec.clamp(-1, 1) - x).pow(2).mean())
        a = adherence(list(to_uint8(rec)), [ds[i][1] for i in range(len(ds))])
        print(f"{name:20s} {res} px  latent {tuple(den.latent_shape(res, res))}  PSNR {psnr:.2f} dB  "
              f"adherence color {a['color']:.3f} shape {a['shape']:.3f} position {a['position']:.3f} "
              f"all {a['all']:.3f}")


if __name__ == "__main__":
    main()
