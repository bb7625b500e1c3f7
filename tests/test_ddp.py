"""Data parallelism: 2 CPU processes (gloo) through `accelerate launch` train exactly what
1 process trains with the same global batch (every process draws the global batch's
randomness and keeps its slice; gradients are averaged across processes)."""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

# Float reduction order differs (mean of two half-batch gradients vs one full batch), and
# Adam's first steps divide by |g|, so entries with g ~ 0 amplify that rounding: the bound
# is on the whole update, ||w_2proc - w_1proc|| <= TOL * ||w_1proc - w_init||.
TOL = 1e-3


def _generator_weights(run):
    ckpt = sorted(run.glob("ckpt-*"))[-1]
    state = load_file(str(ckpt / "state.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("module/generator/")}


def _run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_two_processes_equal_one(tiny_pair, tmp_path, kind):
    cfg = {"teacher": str(tiny_pair / "teacher"), "student": str(tiny_pair / "student"), "bridge": "roundtrip", "lr": 1e-3,
           "prompts": str(tmp_path / "prompts.txt"),
           "fake": {"kind": kind, "updates": 2},
           "train": {"steps": 3, "batch": 4, "checkpoint_every": 3, "log_every": 1}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "prompts.txt").write_text("a red circle\na dog\na blue square\n")
    cli = ["-m", "crossdistill.cli", "distill", str(path), "--threads", "1"]
    _run([sys.executable, *cli, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
          *cli, "--out", str(tmp_path / "two")])
    one, two = _generator_weights(tmp_path / "one"), _generator_weights(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 10
    init = load_file(str(tiny_pair / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    moved = sum((one[k] - init[k.removeprefix("module/generator/")]).pow(2).sum() for k in one).sqrt().item()
    diff = sum((one[k] - two[k]).pow(2).sum() for k in one).sqrt().item()
    print(f"{kind}: ||update|| {moved:.4g}; ||1 proc - 2 procs|| {diff:.3g} ({diff / moved:.2g} relative)")
    assert moved > 0.01             # training did something the comparison can see
    assert diff <= TOL * moved
