"""World II: does the Teacher's score, read through the Bridge, prefer the right binding?

Stage 2 moves each one-step sample z along the difference of the Teacher's guided x0
prediction (the real score) and the fake score's, both at B(z) noised to a Teacher time
t. This script builds stage 2 from a config exactly as `crossdistill distill` does, draws
one-step samples for the 120 evaluation prompts, and for each Teacher-time fraction t
judges (world II judge) the relation in:

    sample      the Student sample itself (Student decode)
    real(t)     the Teacher's guided x0 prediction at B(z) noised to t (the real score)
    cond(t)     its conditional prediction without guidance (the fake score at step 0)

"fixes" is, among samples whose relation is swapped, the share whose real(t) has it
right; "breaks": among samples that are right, the share whose real(t) has it swapped.
If real(t) fixes swapped samples at some t, the signal DMD needs is there at that t.

    python benchmarks/pairs_binding_signal.py --config distill_shapes \
        --set teacher=pairs-teacher student=pairs-student-base prompts=pairs \
        bridge_dir=runs/demo-pairs/bridge/bridge --n 2 --json out.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    from crossdistill.config import load_config
    from crossdistill.data.images import to_uint8
    from crossdistill.distill.task import DistillTask
    from crossdistill.distill.config import DistillConfig
    from crossdistill.domains import get
    from crossdistill_worlds.pairs.judge import relation_outcome
    from crossdistill.runtime import set_threads

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--n", type=int, default=2, help="samples per evaluation prompt")
    ap.add_argument("--t", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.85, 0.98])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    set_threads(a.threads)
    cfg = load_config(DistillConfig, a.config, a.set)
    task = DistillTask.from_config(cfg)
    side = task.sides[0]
    teacher = side.den
    prompts = [p for p in get("pairs").eval_prompts() for _ in range(a.n)]
    gen = torch.Generator().manual_seed(a.seed)
    res = task.s_res

    def relations(x: torch.Tensor, ps: list[str]) -> list[str]:   # decoded images' binding reads
        return [relation_outcome(im, p)[0] for im, p in zip(to_uint8(x.float()), ps)]

    rows = {"sample": [], **{f"real({t})": [] for t in a.t}, **{f"cond({t})": [] for t in a.t}}
    with torch.no_grad():
        for i in range(0, len(prompts), 40):
            ps = prompts[i:i + 40]
            draw = task.generator.draw(len(ps), task.student.latent_shape(res, res), gen)
            z = task.generator(draw, task.text_s(ps))
            rows["sample"] += relations(task.student.space.decode(z), ps)
            z_hat = side.bridge(z, clamp=cfg.clamp)
            ct = side.text(ps)
            for t in a.t:
                tt = teacher.time_at(torch.full((len(ps),), t))
                x_t = teacher.add_noise(z_hat, tt, torch.randn(z_hat.shape, generator=gen))
                real = teacher.predict_x0(x_t, tt, ct, guidance=side.guidance, uncond=side.uncond.expand(len(ps)))
                cond = teacher.predict_x0(x_t, tt, ct, guidance=1.0)
                for key, x0 in ((f"real({t})", real), (f"cond({t})", cond)):
                    rows[key] += relations(teacher.space.decode(x0), ps)
    base = np.array(rows["sample"])
    out = {}
    print(f"{len(prompts)} samples; guidance {side.guidance}")
    print("| read | right | swapped | other axis | colour missing | fixes (of swapped) | breaks (of right) |")
    print("|---|---|---|---|---|---|---|")
    for key, r in rows.items():
        r = np.array(r)
        share = {k: float(np.mean(r == k)) for k in ("right", "swapped", "other", "missing")}
        fixes = float(np.mean(r[base == "swapped"] == "right")) if (base == "swapped").any() else float("nan")
        breaks = float(np.mean(r[base == "right"] == "swapped")) if (base == "right").any() else float("nan")
        out[key] = {**share, "fixes": fixes, "breaks": breaks}
        print(f"| {key} | {share['right']:.3f} | {share['swapped']:.3f} | {share['other']:.3f} | "
              f"{share['missing']:.3f} | {fixes:.3f} | {breaks:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"set": a.set, "n": len(prompts), "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
