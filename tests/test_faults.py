"""Faults: kill -9 mid-run and rerun (bit-exact resume), corrupted newest checkpoint,
non-finite steps, out-of-memory (issue "reliability")."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import invocations
from crossdistill.errors import CrossdistillError
from crossdistill.train import TrainConfig, run
from crossdistill.train.loop import NonFiniteStep

ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def _cmd(stage, root, out):
    models = ["--set", f"teacher={root / 'teacher'}", "--set", f"student={root / 'student'}"]
    if stage == "bridge":
        return [sys.executable, "-m", "crossdistill.cli", "bridge", "train", "bridge_shapes", "--out",
                str(out), *models, "--set", "data.images=16", "--set", "train.batch=4", "--set", "train.steps=10",
                "--set", "train.checkpoint_every=1", "--set", "train.log_every=1", "--threads", "1"]
    return [sys.executable, "-m", "crossdistill.cli", "distill", "distill_shapes", "--out", str(out),
            "--set", f"student={root / 'student'}", "--set", f"teachers.0.model={root / 'teacher'}",
            "--set", "teachers.0.bridge_dir=roundtrip", "--set", "fake.updates=1", "--set", "train.batch=4",
            "--set", "train.steps=10", "--set", "train.checkpoint_every=1", "--set", "train.sample_every=0",
            "--set", "train.log_every=1",
            "--threads", "1"]


def _final(stage, out):
    f = (out / "bridge" / "projector.safetensors" if stage == "bridge"
         else out / "student" / "unet" / "diffusion_pytorch_model.safetensors")
    return load_file(str(f)), load_file(str(out / "ckpt-0000010" / "state.safetensors"))


@pytest.mark.parametrize("stage", ["bridge", "distill"])
def test_kill_9_then_rerun_equals_uninterrupted(tiny_pair, tmp_path, stage):
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(_cmd(stage, tiny_pair, a), env=ENV, check=True, capture_output=True, timeout=600)
    k = random.Random(stage).randint(2, 7)              # a random step, reproducible per stage
    p = subprocess.Popen(_cmd(stage, tiny_pair, b), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (b / f"ckpt-{k:07d}").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (b / "student").exists() and not (b / "bridge" / "projector.safetensors").exists()
    newest = max(int(c.name[5:]) for c in b.glob("ckpt-*"))     # k, or k + 1 if written before the kill
    subprocess.run(_cmd(stage, tiny_pair, b), env=ENV, check=True, capture_output=True, timeout=600)
    assert invocations(b)[-1] == {"start_step": newest, "checkpoint": f"ckpt-{newest:07d}"}   # resumed, not redone
    hist = [json.loads(x)["step"] for x in (b / "history.jsonl").read_text().splitlines()]
    assert hist[-(10 - newest):] == list(range(newest + 1, 11))     # the rerun logged only the remaining steps
    (wa, sa), (wb, sb) = _final(stage, a), _final(stage, b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[x], wb[x]) for x in wa)      # bit for bit
    assert sa.keys() == sb.keys() and all(torch.equal(sa[x], sb[x]) for x in sa)      # optimizer state too


class _Toy:
    """A one-parameter task whose steps can be made to fail."""
    name = "toy"

    def __init__(self, fail=lambda step: None):
        self.w = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(self.w.weight, 0.5), torch.nn.init.constant_(self.w.bias, 0.1)   # same start every time
        self.opt = torch.optim.SGD(self.w.parameters(), lr=0.1)
        self.fail, self.steps = fail, []

    def setup(self, acc):
        self.acc = acc

    def modules(self):
        return {"w": self.w}

    def optimizers(self):
        return {"w": self.opt}

    def step(self, step, gen):
        self.steps.append(step)
        self.fail(step)
        loss = self.w(torch.ones(1, 1)).pow(2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def export(self, run_dir):
        (run_dir / "exported").write_text("ok")


def test_non_finite_steps_are_skipped_then_stop_keeping_the_last_good_checkpoint(tmp_path, capsys):
    def fail(step):
        if step in (2,) or step >= 5:
            raise NonFiniteStep("loss is nan")
    cfg = TrainConfig(steps=20, batch=1, checkpoint_every=1, max_bad_steps=3)
    with pytest.raises(CrossdistillError, match="3 non-finite steps in a row at step 7; stopped.*last good checkpoint"):
        run(_Toy(fail), cfg, tmp_path, progress=False)
    assert "step 2 skipped" in capsys.readouterr().out      # one bad step alone: skipped, training went on
    assert sorted(p.name for p in tmp_path.glob("ckpt-*"))[-1] == "ckpt-0000005"   # last good one kept
    assert not (tmp_path / "exported").exists()


def test_out_of_memory_is_one_clear_message_with_the_knobs(tmp_path):
    def fail(step):
        if step == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(CrossdistillError) as e:
        run(_Toy(fail), TrainConfig(steps=4, batch=8, checkpoint_every=1), tmp_path, progress=False)
    msg = str(e.value)
    assert "out of memory at step 1" in msg and "\n" not in msg
    for knob in ("train.batch", "train.gradient_checkpointing", "train.mixed_precision", "weights_dtype"):
        assert knob in msg
    assert (tmp_path / "ckpt-0000001").exists()


def test_corrupted_newest_checkpoint_warns_and_resumes_from_the_one_before(tmp_path):
    cfg = TrainConfig(steps=3, batch=1, checkpoint_every=1, keep_checkpoints=3)
    straight, run_dir = tmp_path / "straight", tmp_path / "run"
    run(_Toy(), cfg, straight, progress=False)
    run(_Toy(), cfg, run_dir, progress=False)
    state = run_dir / "ckpt-0000003" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])            # truncated newest checkpoint
    task = _Toy()
    with pytest.warns(UserWarning, match="ckpt-0000003.*unreadable"):
        run(task, cfg, run_dir, progress=False)
    assert task.steps == [2]                                # resumed from step 2: only step 3 redone
    assert invocations(run_dir)[-1] == {"start_step": 2, "checkpoint": "ckpt-0000002"}
    a = load_file(str(straight / "ckpt-0000003" / "state.safetensors"))
    b = load_file(str(run_dir / "ckpt-0000003" / "state.safetensors"))   # rewritten, equal to the straight run
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
