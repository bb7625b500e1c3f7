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
from crossdistill.train.loop import NonFiniteStep, optimizer_step

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

    def __init__(self, fail=lambda step: None, lr=0.1):
        self.w = torch.nn.Linear(1, 1)
        torch.nn.init.constant_(self.w.weight, 0.5), torch.nn.init.constant_(self.w.bias, 0.1)   # same start every time
        self.opt = torch.optim.SGD(self.w.parameters(), lr=lr)
        self.fail, self.steps, self.lr = fail, [], lr

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
        logs = {"square": loss.item()}
        optimizer_step(self.opt, loss, self.w.parameters(), TrainConfig(), step, self.lr, "w", logs)   # the rule
        return logs

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


def test_an_exploding_learning_rate_is_named_and_stops_with_the_last_good_checkpoint(tmp_path, capsys):
    """SGD at lr 1e30 on w^2: the weight overflows within a few steps; every later step is
    refused by name (the optimizer and the non-finite term), never applied; after
    max_bad_steps in a row the run stops, its newest checkpoint finite and loadable."""
    from crossdistill.train.checkpoint import load_latest

    cfg = TrainConfig(steps=50, batch=1, checkpoint_every=1, max_bad_steps=3)
    with pytest.raises(CrossdistillError, match="3 non-finite steps in a row at step (\\d+); stopped") as e:
        run(_Toy(lr=1e30), cfg, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "skipped: w: loss is inf; non-finite terms: square" in out, out
    bad = int(str(e.value).split("at step ")[1].split(";")[0])
    newest = sorted(tmp_path.glob("ckpt-*"))[-1]
    assert newest.name == f"ckpt-{bad - 2:07d}"          # the last step that trained
    fresh = _Toy()
    assert load_latest(tmp_path, fresh.modules(), fresh.optimizers())[0] == bad - 2
    assert all(torch.isfinite(p).all() for p in fresh.w.parameters())   # what it holds is finite


class _NaNBridge:
    """A stage-2 Bridge whose output is NaN at the steps in `bad` (else the Bridge's own)."""

    def __init__(self, bridge, task, bad):
        self.bridge, self.task, self.bad = bridge, task, bad

    def __getattr__(self, name):
        return getattr(self.bridge, name)

    def __call__(self, z, **kw):
        out = self.bridge(z, **kw)
        return out * float("nan") if self.task.current in self.bad else out


def _faulty_distill(root, run_dir, bad):
    """A tiny stage-2 run whose Bridge goes non-finite at the steps in `bad`."""
    from crossdistill.config import load_config
    from crossdistill.distill.config import DistillConfig
    from crossdistill.distill.task import DistillTask

    cfg = load_config(DistillConfig, "distill_shapes", [
        f"student={root / 'student'}", f"teachers.0.model={root / 'teacher'}", "teachers.0.bridge_dir=roundtrip",
        "fake.updates=1", "train.batch=2", "train.steps=8", "train.checkpoint_every=1", "train.sample_every=0",
        "train.log_every=1", "train.max_bad_steps=2", "manifold.weight=0"])
    task = DistillTask.from_config(cfg, ["a red circle in the center"])
    step = task.step

    def counted(i, gen):
        task.current = i
        return step(i, gen)
    task.step = counted
    task.sides[0].bridge = _NaNBridge(task.sides[0].bridge, task, bad)
    return run(task, cfg.train, run_dir, progress=False)


def test_a_bridge_gone_non_finite_is_named_skipped_stopped_then_resumed(tiny_pair, tmp_path, capsys):
    """Stage 2 with a Bridge whose output turns NaN: a lone bad step is skipped, naming the
    generator and the Bridge; two in a row stop the run with the last good checkpoint;
    rerunning with a sound Bridge resumes from it and finishes."""
    with pytest.raises(CrossdistillError, match="2 non-finite steps in a row at step 5; stopped"):
        _faulty_distill(tiny_pair, tmp_path, bad={1, 4, 5})
    out = capsys.readouterr().out
    assert "step 1 skipped: generator: loss is nan; non-finite terms: dmd" in out and "bridge_nonfinite" in out, out
    assert sorted(p.name for p in tmp_path.glob("ckpt-*"))[-1] == "ckpt-0000004"
    assert not (tmp_path / "student").exists()
    _faulty_distill(tiny_pair, tmp_path, bad=set())
    assert invocations(tmp_path)[-1] == {"start_step": 4, "checkpoint": "ckpt-0000004"}
    assert (tmp_path / "student" / "model_index.json").exists()


def _disk_full_after(monkeypatch, nbytes: int):
    """safetensors' save_file writes `nbytes` of the file, then fails as it does on a full
    disk: its own SafetensorError (not an OSError), worded as its Rust writer words it."""
    import safetensors
    import safetensors.torch

    def full(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * nbytes)
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')
    monkeypatch.setattr(safetensors.torch, "save_file", full)


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint_and_resumes(tmp_path, monkeypatch):
    """The disk fills while step 2's checkpoint is written: one line saying how much was
    needed and how much is free; nothing half-written is left (no temporary folder, no
    ckpt-0000002); ckpt-0000001 still loads; rerunning with space resumes from it."""
    cfg = TrainConfig(steps=3, batch=1, checkpoint_every=1)
    straight = tmp_path / "straight"
    run(_Toy(), cfg, straight, progress=False)
    run_dir = tmp_path / "run"
    run(_Toy(), TrainConfig(steps=1, batch=1, checkpoint_every=1), run_dir, progress=False)
    with monkeypatch.context() as m:
        _disk_full_after(m, 10)
        with pytest.raises(CrossdistillError) as e:
            run(_Toy(), cfg, run_dir, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "could not write checkpoint ckpt-0000002" in msg and "No space left" in msg, msg
    assert "it needed about 0.0 MB" in msg and "free there" in msg and "rerun the same command" in msg, msg
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith((".ckpt", "ckpt"))) == ["ckpt-0000001"]
    task = _Toy()
    run(task, cfg, run_dir, progress=False)
    assert task.steps == [1, 2] and invocations(run_dir)[-1]["checkpoint"] == "ckpt-0000001"
    a, b = (load_file(str(d / "ckpt-0000003" / "state.safetensors")) for d in (straight, run_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # as if nothing had happened


def test_a_full_disk_while_exporting_leaves_the_previous_export(tmp_path, monkeypatch):
    """An export (an atomic folder) that hits a full disk: the previous folder is as it
    was, no temporary folder is left, and the line says how much the folder needed."""
    from crossdistill.io import atomic_dir

    out = tmp_path / "student"
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("v1")
    with monkeypatch.context() as m:
        _disk_full_after(m, 1000)
        with pytest.raises(CrossdistillError) as e:
            with atomic_dir(out, overwrite=True, needed=5 * 2**20) as tmp:
                import safetensors.torch
                safetensors.torch.save_file({}, str(tmp / "weights"))
    msg = str(e.value)
    assert "could not write student" in msg and "it needed about 5.0 MB" in msg and "student is as it was" in msg, msg
    assert (out / "weights").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["student"]
