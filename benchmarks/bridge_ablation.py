"""Stage-1 ablation on the shapes world: Bridge, Bridge with lambda = 0, projector-only
and round-trip, with equal budgets and equal tuning for every learned variant.

    python benchmarks/bridge_ablation.py --out runs/ablation --steps 600 --lrs 3e-4,1e-3,3e-3

Every learned variant trains with the same steps, batch, data and seed at each
learning rate of the grid; each variant's learning rate is chosen by its *own*
training objective on a validation split (so no variant is tuned on a metric another
optimises). The selected runs are then evaluated on held-out images with
`bridge eval`'s metrics, and the round-trip baseline (nothing to train) is added.
Writes OUT/ablation.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from crossdistill.bridge import BridgeConfig
from crossdistill.bridge.evaluate import evaluate_runs
from crossdistill.bridge.io import load_bridge
from crossdistill.bridge.losses import AttnConfig
from crossdistill.bridge.stage1 import BridgeTask, BridgeTrainConfig, train_bridge
from crossdistill.data.sources import DataConfig
from crossdistill.train import TrainConfig

VARIANTS = {
    "bridge": (BridgeConfig("bridge"), 1.0),
    "bridge-lambda0": (BridgeConfig("bridge"), 0.0),
    "projector-only": (BridgeConfig("projector_only"), 0.0),
}
VALIDATION_SEED = 4242


@torch.no_grad()
def validation_loss(run: Path, cfg: BridgeTrainConfig, images: int = 256) -> float:
    """The variant's own objective (L_rec + lambda L_attn) on unseen images."""
    val_cfg = BridgeTrainConfig(**{**cfg.__dict__, "data": DataConfig(images=images, seed=VALIDATION_SEED)})
    torch.manual_seed(0)
    task = BridgeTask.from_config(val_cfg)
    task.bridge = load_bridge(run / "bridge", task.student, task.teacher)
    g = torch.Generator().manual_seed(0)
    total = 0.0
    for i in range(0, images, 32):
        with task._capturing():
            loss, _ = task.losses(torch.arange(i, min(i + 32, images)), g)
        total += loss.item() * min(32, images - i)
    return total / images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    ap.add_argument("--lambda-attn", type=float, default=1.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-images", type=int, default=540)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"steps": args.steps, "batch": args.batch, "lrs": args.lrs, "runs": {}, "selected": {}}
    for name in args.variants.split(","):
        bcfg, lam = VARIANTS[name]
        lam = args.lambda_attn if lam > 0 else 0.0
        best = None
        for lr in map(float, args.lrs.split(",")):
            cfg = BridgeTrainConfig(teacher="shapes-teacher", student="shapes-student-base", lr=lr, bridge=bcfg,
                                    attn=AttnConfig(weight=lam),
                                    train=TrainConfig(steps=args.steps, batch=args.batch, checkpoint_every=100))
            run = args.out / f"{name}-lr{lr:g}"
            train_bridge(cfg, run)
            val = validation_loss(run, cfg)
            results["runs"][run.name] = {"variant": name, "lr": lr, "lambda_attn": lam, "val_objective": val}
            print(f"{run.name}: validation objective {val:.5f}", flush=True)
            if best is None or val < best[0]:
                best = (val, run)
        results["selected"][name] = best[1].name
    selected = [args.out / r for r in results["selected"].values()]
    table = evaluate_runs(selected, "shapes-teacher", "shapes-student-base", args.eval_images, roundtrip=True)
    results["eval"] = table
    (args.out / "ablation.json").write_text(json.dumps(results, indent=1))
    cols = ["latent_mse", "attn_error", "x0_mse@0.25", "x0_mse@0.5", "x0_mse@0.75", "x0_mse@0.95", "psnr"]
    print("| variant | " + " | ".join(cols) + " | adherence (all) |")
    print("|---" * (len(cols) + 2) + "|")
    for name, m in table.items():
        print(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + f" | {m['adherence']['all']:.3f} |")


if __name__ == "__main__":
    main()
