"""Peak memory against data size: stage 1 and stage 2 on the shapes world at 1x and 10x
the demo's data (stage 1: 2,000 vs 20,000 images in its bank; stage 2: the domain's
prompts vs a caption list 10x as long), a few steps each, every run in its own process.

    python benchmarks/memory_scaling.py            # prints one line per run, then
    peak_rss_ratio=<10x / 1x, the worse stage>      # target <= 1.15

Memory that grows with the dataset shows up as a ratio well above 1: a bank held in
memory, or every caption's embeddings encoded up front. Runs on 2 CPU cores in a few
minutes; `--scale` changes the 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_IMAGES = 2000     # the demo's stage-1 bank (DemoConfig.bridge_images)


def child(stage: str, scale: int, out: Path) -> dict:
    import torch

    torch.set_num_threads(2)
    from crossdistill.domains import get
    from crossdistill.train import TrainConfig

    train = TrainConfig(steps=4, batch=16, checkpoint_every=4, log_every=1)
    t0 = time.time()
    if stage == "stage1":
        from crossdistill.bridge.stage1 import BridgeTrainConfig, train_bridge
        from crossdistill.data.sources import DataConfig

        dom = get("shapes")
        cfg = BridgeTrainConfig(teacher=dom.teacher, student=dom.student, data=DataConfig(images=DEMO_IMAGES * scale),
                                train=train)
        train_bridge(cfg, out / "run", progress=False)
        size = cfg.data.images
    else:
        from crossdistill.distill.config import DistillConfig, TeacherConfig
        from crossdistill.distill.run import distill

        prompts = get("shapes").prompts() * scale
        (out / "prompts.txt").write_text("\n".join(prompts))
        dom = get("shapes")
        cfg = DistillConfig(student=dom.student, teachers=[TeacherConfig(dom.teacher, "roundtrip")],
                            prompts=str(out / "prompts.txt"), train=train)
        distill(cfg, out / "run", progress=False)
        size = len(prompts)
    return {"stage": stage, "scale": scale, "data": size, "seconds": round(time.time() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--child", nargs=2, metavar=("STAGE", "SCALE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(args.child[0], int(args.child[1]), Path(tmp))))
        return
    rows = []
    for stage in ("stage1", "stage2"):
        for scale in (1, args.scale):
            r = subprocess.run([sys.executable, __file__, "--child", stage, str(scale)], capture_output=True, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="2"))
            if r.returncode:
                sys.exit(f"{stage} x{scale} failed:\n{r.stderr[-3000:]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    ratios = {}
    for stage in ("stage1", "stage2"):
        one, big = (next(r for r in rows if r["stage"] == stage and r["scale"] == s) for s in (1, args.scale))
        ratios[stage] = big["peak_rss_mb"] / one["peak_rss_mb"]
        print(f"{stage}: peak RSS {one['peak_rss_mb']:.0f} MB at {one['data']} -> {big['peak_rss_mb']:.0f} MB at "
              f"{big['data']} (x{ratios[stage]:.3f})")
    print(f"peak_rss_ratio={max(ratios.values()):.3f}")


if __name__ == "__main__":
    main()
