"""Does a pooled image of the Teacher's noise decide the Teacher's picture? (the variety
issue: can DMD (v1)'s regression pairs be carried across latent spaces by pooling the
Teacher's noise down to the Student's latent shape?)

For each prompt, 6 Teacher samples whose noise shares one pooled image P n (2x2 spatial
average x 4-channel average, scaled to unit variance: the Student's 4 x 8 x 8 from the
Teacher's 16 x 16 x 16; P has orthonormal rows, so P n is exactly the Student's noise
distribution) and differs in the rest, against 6 samples from free noise. If P n decided the
picture, the first set's within-prompt spread would be near 0.

    python benchmarks/noise_pairing.py [--prompts 24] [--out docs/measurements/variety/noise_pairing.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import stats


def pool(n: torch.Tensor) -> torch.Tensor:
    b, c, h, w = n.shape
    return n.view(b, 4, c // 4, h // 2, 2, w // 2, 2).mean((2, 4, 6)) * 4


def lift(ns: torch.Tensor) -> torch.Tensor:
    return ns.repeat_interleave(4, 1).repeat_interleave(2, 2).repeat_interleave(2, 3) / 4


def main():
    from crossdistill.denoisers import load_denoiser
    from crossdistill.domains import get

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    teacher, dom = load_denoiser("shapes-teacher"), get("shapes")
    shape = teacher.latent_shape(dom.size, dom.size)
    gen = torch.Generator().manual_seed(0)
    per = {"pooled fixed": [], "free": []}
    for p in dom.eval_prompts()[:args.prompts]:
        ns = torch.randn(1, shape[0] // 4, shape[1] // 2, shape[2] // 2, generator=gen).repeat(args.n, 1, 1, 1)
        rest = torch.randn(args.n, *shape, generator=gen)
        fixed = rest - lift(pool(rest)) + lift(ns)   # the same P n, the rest free
        assert torch.allclose(pool(fixed), ns, atol=1e-5)
        for name, noise in (("pooled fixed", fixed), ("free", torch.randn(args.n, *shape, generator=gen))):
            z = teacher.sample([p] * args.n, latents=noise)
            im = ((teacher.space.decode(z).float() / 2 + 0.5).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
            per[name].append(dom.variety(list(im), [p] * args.n))
    out = {}
    for f in per["free"][0]:
        ratio = np.array([a[f] for a in per["pooled fixed"]]).mean() / np.array([a[f] for a in per["free"]]).mean()
        diff = np.array([a[f] - b[f] for a, b in zip(per["pooled fixed"], per["free"])])
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        out[f] = {"pooled_fixed": float(np.mean([a[f] for a in per["pooled fixed"]])),
                  "free": float(np.mean([a[f] for a in per["free"]])), "ratio": float(ratio),
                  "diff_mean": float(diff.mean()), "diff_ci95": float(half)}
        print(f"{f:12} spread with P n fixed {out[f]['pooled_fixed']:6.2f}, free {out[f]['free']:6.2f}: "
              f"ratio {ratio:.2f} (paired difference {diff.mean():+.2f} +- {half:.2f}, {len(diff)} prompts)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"prompts": args.prompts, "n_per_prompt": args.n, "factors": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
