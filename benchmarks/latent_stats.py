"""Reference values for the stage-2 latent diagnostics on the shapes world: the
Student space's data latents, the Student base's one-step output (what the one-step
generator starts from) and its 50-step samples.

    python benchmarks/latent_stats.py     # about a minute on 2 cores
"""

from __future__ import annotations

import torch


def main() -> None:
    from crossdistill.denoisers import load_denoiser
    from crossdistill.distill.diagnostics import latent_diagnostics
    from crossdistill.distill.generator import StudentGenerator
    from crossdistill.domains import get
    from crossdistill.domains.data import SceneDataset

    shapes = get("shapes")
    student = load_denoiser(shapes.student)
    prompts = shapes.prompts()[::6]                                 # 15 prompts, every colour and position
    n = 2 * len(prompts)
    with torch.no_grad():
        cond = student.encode_prompt(prompts * 2)
        noise = torch.randn(n, *student.latent_shape(32, 32), generator=torch.Generator().manual_seed(0))
        ds = SceneDataset(shapes, 256, 32, 0)
        data = student.space.encode(torch.stack([ds[i][0] for i in range(len(ds))]))
        rows = {"data (256 renders, 32 px)": data,
                "Student base, one step (the generator at init)": StudentGenerator(student)(noise, cond),
                "Student base, 50 steps": student.sample(cond, latents=noise)}
        for name, z in rows.items():
            d = latent_diagnostics(z, student.space)
            print(f"{name}: z_std {d['z_std']:.2f}, reencode_err {d['reencode_err']:.2f}, clipped {d['clipped']:.4f}")


if __name__ == "__main__":
    main()
