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


def _state(ckpt):
    """A checkpoint's tensors, whole (one file, or the per-process shards joined)."""
    from crossdistill.train.checkpoint import read_checkpoint

    return read_checkpoint(ckpt)


def _generator_weights(run):
    state = _state(sorted(run.glob("ckpt-*"))[-1])
    return {k: v for k, v in state.items() if k.startswith("module/generator/")}


def _run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def _config(tiny_pair, tmp_path, kind, parallel, steps=3):
    cfg = {"student": str(tiny_pair / "student"), "teachers": [{"model": str(tiny_pair / "teacher"), "bridge_dir": "roundtrip"}],
           "lr": 1e-3,
           "prompts": str(tmp_path / "prompts.txt"),
           "fake": {"kind": kind, "updates": 2},
           "train": {"steps": steps, "batch": 4, "checkpoint_every": 1, "log_every": 1, "parallel": parallel}}
    path = tmp_path / f"cfg-{steps}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "prompts.txt").write_text("a red circle\na dog\na blue square\n")
    return ["-m", "crossdistill.cli", "distill", str(path), "--threads", "1"]


LAUNCH_2 = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]


@pytest.fixture(scope="module")
def fsdp_full(tiny_pair, tmp_path_factory):
    """The straight runs three tests compare with: 3 steps of the full-copy fake score on 1
    process (RUN/one) and on 2 with the Teacher side sharded (RUN/two); (RUN, the 2-process log)."""
    root = tmp_path_factory.mktemp("fsdp-full")
    cli = _config(tiny_pair, root, "full", "fsdp")
    _run([sys.executable, *cli, "--out", str(root / "one")])
    return root, _run([sys.executable, *LAUNCH_2, *cli, "--out", str(root / "two")])


@pytest.mark.parametrize("parallel,kind", [("ddp", "full"), ("ddp", "lora"), ("fsdp", "full"), ("fsdp", "lora")])
def test_two_processes_equal_one(tiny_pair, tmp_path, parallel, kind, request):
    if (parallel, kind) == ("fsdp", "full"):
        tmp_path, log = request.getfixturevalue("fsdp_full")
    else:
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

    if parallel == "fsdp":   # the Teacher side was sharded; each process saved its own rows
        ckpt = sorted((tmp_path / "two").glob("ckpt-*"))[-1]
        assert sorted(f.name for f in ckpt.glob("*.safetensors")) == ["rank-00000-of-00002.safetensors",
                                                                     "rank-00001-of-00002.safetensors"]
        fake = {k: v for k, v in _state(ckpt).items() if k.startswith("module/fake/")}
        ref = {k: v for k, v in _state(sorted((tmp_path / "one").glob("ckpt-*"))[-1]).items()
               if k.startswith("module/fake/")}
        assert fake.keys() == ref.keys() and all(fake[k].shape == ref[k].shape for k in ref)


def test_fsdp_resume_is_exact(tiny_pair, tmp_path, fsdp_full):
    """2 processes, Teacher side sharded: stop after step 2, rerun to 3 = 3 steps straight
    (the checkpoint gathers the shards, the resume lays them out again)."""
    straight, log = fsdp_full
    logs = [log] + [_run([sys.executable, *LAUNCH_2, *_config(tiny_pair, tmp_path, "full", "fsdp", steps=steps),
                          "--out", str(tmp_path / "resumed")]) for steps in (2, 3)]
    assert all("units sharded over 2 processes" in log for log in logs)   # the sharded path is what resumed
    a, b = _state(straight / "two" / "ckpt-0000003"), _state(tmp_path / "resumed" / "ckpt-0000003")
    assert a.keys() == b.keys() and any(k.startswith("optim/fake/") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _rows(ckpt, key):
    """Row count of `key` in each per-process file of a sharded checkpoint."""
    from safetensors import safe_open

    out = []
    for f in sorted(ckpt.glob("rank-*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.append(h.get_slice(key).get_shape()[0] if key in h.keys() else None)
    return out


def test_sharded_checkpoints_resume_on_another_number_of_processes(tiny_pair, tmp_path, fsdp_full):
    """FSDP runs save per-process shards (no whole sharded tensor in any file); 2 processes
    -> 1 and 1 -> 2 resume where they left off and land where a straight run lands."""
    def cli(steps):
        return _config(tiny_pair, tmp_path, "full", "fsdp", steps=steps)

    straight, _ = fsdp_full   # the straight runs on 2 processes (two) and on 1 (one)
    _run([sys.executable, *LAUNCH_2, *cli(2), "--out", str(tmp_path / "two-one")])    # 2 processes, then 1
    ckpt = tmp_path / "two-one" / "ckpt-0000002"
    whole = _state(ckpt)
    key = next(k for k in whole if k.startswith("module/fake/") and whole[k].ndim == 2 and whole[k].shape[0] > 1)
    n = whole[key].shape[0]
    assert _rows(ckpt, key) == [-(-n // 2), n - -(-n // 2)]                       # each process its own rows
    assert any(k.startswith("optim/fake/") for k in whole)
    log = _run([sys.executable, *cli(3), "--out", str(tmp_path / "two-one")])
    assert "resuming from ckpt-0000002" in log
    _run([sys.executable, *cli(2), "--out", str(tmp_path / "one-two")])                # 1 process, then 2
    log = _run([sys.executable, *LAUNCH_2, *cli(3), "--out", str(tmp_path / "one-two")])
    assert "resuming from ckpt-0000002" in log
    init = load_file(str(tiny_pair / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    for run, ref in (("two-one", "two"), ("one-two", "one")):
        a, b = _state(tmp_path / run / "ckpt-0000003"), _state(straight / ref / "ckpt-0000003")
        keys = [k for k in b if k.startswith(("module/generator/", "module/fake/"))]
        assert a.keys() == b.keys() and len(keys) > 20
        moved = sum((b[k] - init[k.removeprefix("module/generator/")]).pow(2).sum()
                    for k in keys if k.startswith("module/generator/")).sqrt().item()
        diff = sum((a[k] - b[k]).pow(2).sum() for k in keys).sqrt().item()
        print(f"{run} vs {ref}: ||update|| {moved:.4g}, ||difference|| {diff:.3g}")
        assert moved > 0.01 and diff <= TOL * moved


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


def test_stage1_two_processes_equal_one_and_encode_disjoint_bank_shards(tiny_pair, tmp_path):
    """Stage 1 under train.parallel=fsdp runs data-parallel (nothing of the Teacher trains);
    its bank under 2 processes: each encodes its own shards (k mod 2), together they cover
    the set, and the bank, the checkpoint and the trained Bridge equal one process's."""
    from safetensors import safe_open

    models = ["--set", f"teacher={tiny_pair / 'teacher'}", "--set", f"student={tiny_pair / 'student'}"]
    cli = ["-m", "crossdistill.cli", "bridge", "train", "bridge_shapes", *models, "--set", "data.images=16",
           "--set", "data.shard_size=5", "--set", "train.batch=4", "--set", "train.steps=3",
           "--set", "train.checkpoint_every=3", "--set", "train.parallel=fsdp", "--threads", "1"]
    _run([sys.executable, *cli, "--out", str(tmp_path / "one")])
    log = _run([sys.executable, *LAUNCH_2, *cli, "--out", str(tmp_path / "two")])
    assert "nothing to shard in this stage" in log
    one, two = (load_file(str(tmp_path / d / "ckpt-0000003" / "state.safetensors")) for d in ("one", "two"))
    w = [k for k in one if k.startswith("module/bridge/") and one[k].is_floating_point()]
    diff = max((one[k] - two[k]).abs().max().item() for k in w)
    print(f"stage 1: max |1 proc - 2 procs| {diff:.3g}")
    assert len(w) > 5 and diff <= 1e-4

    def shards(run):
        out = {}
        for f in sorted((run / "bank").glob("shard-*.safetensors")):
            with safe_open(str(f), framework="pt") as h:
                out[f.name] = (int(h.metadata()["process"]), h.get_tensor("z_s"), h.get_tensor("z_t"))
        return out

    one, two = shards(tmp_path / "one"), shards(tmp_path / "two")
    assert sorted(one) == sorted(two) == [f"shard-{k:06d}.safetensors" for k in range(4)]   # 5 + 5 + 5 + 1
    assert {k: v[0] for k, v in two.items()} == {f"shard-{k:06d}.safetensors": k % 2 for k in range(4)}
    assert {v[0] for v in one.values()} == {0}
    for k in one:
        assert torch.equal(one[k][1], two[k][1]) and torch.equal(one[k][2], two[k][2])
    a = load_file(str(tmp_path / "one" / "bridge" / "projector.safetensors"))
    b = load_file(str(tmp_path / "two" / "bridge" / "projector.safetensors"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"bank test: max |1 proc - 2 procs| {diff:.3g}")
    assert diff <= 1e-4          # reduction order and Adam's first steps
