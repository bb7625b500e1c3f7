"""Data parallelism: 2 CPU processes (gloo) through `accelerate launch` train exactly what
1 process trains with the same global batch (every process draws the global batch's
randomness and keeps its slice; gradients are averaged across processes)."""

import os
from pathlib import Path
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
    return r.stdout + r.stderr


def _config(tiny_pair, tmp_path, kind, parallel, steps=3):
    cfg = {"teacher": str(tiny_pair / "teacher"), "student": str(tiny_pair / "student"), "bridge_dir": "roundtrip", "lr": 1e-3,
           "prompts": str(tmp_path / "prompts.txt"),
           "fake": {"kind": kind, "updates": 2},
           "train": {"steps": steps, "batch": 4, "checkpoint_every": 1, "log_every": 1, "parallel": parallel}}
    path = tmp_path / f"cfg-{steps}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "prompts.txt").write_text("a red circle\na dog\na blue square\n")
    return ["-m", "crossdistill.cli", "distill", str(path), "--threads", "1"]


LAUNCH_2 = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


@pytest.mark.parametrize("parallel,kind", [("ddp", "full"), ("ddp", "lora"), ("fsdp", "full"), ("fsdp", "lora")])
def test_two_processes_equal_one(tiny_pair, tmp_path, parallel, kind):
    cli = _config(tiny_pair, tmp_path, kind, parallel)
    _run([sys.executable, *cli, "--out", str(tmp_path / "one")])
    log = _run([sys.executable, *LAUNCH_2, *cli, "--out", str(tmp_path / "two")])
    assert ("units sharded over 2 processes" in log) == (parallel == "fsdp")
    one, two = _generator_weights(tmp_path / "one"), _generator_weights(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 10
    init = load_file(str(tiny_pair / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    moved = sum((one[k] - init[k.removeprefix("module/generator/")]).pow(2).sum() for k in one).sqrt().item()
    diff = sum((one[k] - two[k]).pow(2).sum() for k in one).sqrt().item()
    print(f"{parallel} {kind}: ||update|| {moved:.4g}; ||1 proc - 2 procs|| {diff:.3g} ({diff / moved:.2g} relative)")
    assert moved > 0.01             # training did something the comparison can see
    assert diff <= TOL * moved

    if parallel == "fsdp":   # the Teacher side was sharded; the checkpoint holds it whole
        fake = {k: v for k, v in load_file(str(sorted((tmp_path / "two").glob("ckpt-*"))[-1] / "state.safetensors"))
                .items() if k.startswith("module/fake/")}
        ref = {k: v for k, v in load_file(str(sorted((tmp_path / "one").glob("ckpt-*"))[-1] / "state.safetensors"))
               .items() if k.startswith("module/fake/")}
        assert fake.keys() == ref.keys() and all(fake[k].shape == ref[k].shape for k in ref)


def test_fsdp_resume_is_exact(tiny_pair, tmp_path):
    """2 processes, Teacher side sharded: stop after step 2, rerun to 3 = 3 steps straight
    (the checkpoint gathers the shards, the resume lays them out again)."""
    logs = [_run([sys.executable, *LAUNCH_2, *_config(tiny_pair, tmp_path, "full", "fsdp", steps=steps),
                  "--out", str(tmp_path / out)])
            for steps, out in ((3, "straight"), (2, "resumed"), (3, "resumed"))]
    assert all("units sharded over 2 processes" in log for log in logs)   # the sharded path is what resumed
    a = load_file(str(tmp_path / "straight" / "ckpt-0000003" / "state.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "ckpt-0000003" / "state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("optim/fake/") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_two_processes_equal_one(tiny_pair, tmp_path):
    """Stage 1 under train.parallel=fsdp runs data-parallel (nothing of the Teacher trains)."""
    models = ["--set", f"teacher={tiny_pair / 'teacher'}", "--set", f"student={tiny_pair / 'student'}"]
    cli = ["-m", "crossdistill.cli", "bridge", "train", "configs/bridge_shapes.yaml", *models, "--set", "data.images=16",
           "--set", "train.batch=4", "--set", "train.steps=3", "--set", "train.checkpoint_every=3",
           "--set", "train.parallel=fsdp", "--threads", "1"]
    _run([sys.executable, *cli, "--out", str(tmp_path / "one")])
    log = _run([sys.executable, *LAUNCH_2, *cli, "--out", str(tmp_path / "two")])
    assert "nothing to shard in this stage" in log
    one, two = (load_file(str(tmp_path / d / "ckpt-0000003" / "state.safetensors")) for d in ("one", "two"))
    w = [k for k in one if k.startswith("module/bridge/") and one[k].is_floating_point()]
    diff = max((one[k] - two[k]).abs().max().item() for k in w)
    print(f"stage 1: max |1 proc - 2 procs| {diff:.3g}")
    assert len(w) > 5 and diff <= 1e-4


def test_accelerate_presets_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from crossdistill.train.parallel import uses_fsdp

    kinds = {}
    for f in sorted(Path("configs/accelerate").glob("*.yaml")):
        cfg = load_config_from_file(str(f))
        kinds[f.stem] = cfg.distributed_type
        if cfg.distributed_type == DistributedType.FSDP:
            assert cfg.fsdp_config["fsdp_version"] == 2
    assert kinds["fsdp_8gpu"] == DistributedType.FSDP and kinds["ddp_8gpu"] == DistributedType.MULTI_GPU

    class Acc:   # what Accelerate reports under an FSDP config (GPUs only), or a DDP one
        num_processes = 8

        def __init__(self, kind):
            self.distributed_type = kind

    assert uses_fsdp(Acc(DistributedType.FSDP), "ddp") and uses_fsdp(Acc(DistributedType.MULTI_GPU), "fsdp")
    assert not uses_fsdp(Acc(DistributedType.MULTI_GPU), "ddp")
