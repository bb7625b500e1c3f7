"""Adherence, clean-image fraction and PSNR of decode(encode(x)) for both latent spaces of a domain's models.

    python benchmarks/vae_roundtrip.py                   # shapes: 720 held-out renders (90 prompts x 8)
    python benchmarks/vae_roundtrip.py --domain pairs    # pairs: 960 (the 120 evaluation prompts x 8)
"""

from __future__ import annotations

import argparse

import torch

from crossdistill.data.images import to_uint8
from crossdistill.denoisers import load_denoiser
from crossdistill.domains import get
from crossdistill.domains.data import SceneDataset


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domain", default="shapes")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dom = get(a.domain)
    prompts = dom.eval_prompts() * 8
    for name in (dom.student, dom.teacher):
        den = load_denoiser(name)
        res = den.defaults.resolution
        ds = SceneDataset(dom, len(prompts), res, seed=99, prompts=prompts)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        rec = torch.cat([den.space.decode(den.space.encode(x[i:i + 120])) for i in range(0, len(x), 120)])
        psnr = 10 * torch.log10(4 / (rec.clamp(-1, 1) - x).pow(2).mean())
        adh = dom.adherence(list(to_uint8(rec)), prompts)
        clean = dom.fidelity(list(to_uint8(rec)))["clean"]   # the ceiling of any model of this latent space
        print(f"{name:20s} {res} px  latent {tuple(den.latent_shape(res, res))}  PSNR {psnr:.2f} dB  adherence "
              + " ".join(f"{k} {v:.3f}" for k, v in adh.items()) + f"  clean {clean:.3f}")


if __name__ == "__main__":
    main()
