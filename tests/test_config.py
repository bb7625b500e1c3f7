"""Typed configs: YAML + dotted overrides."""

import pytest

from crossdistill.config import load_config
from crossdistill.distill.stage2 import Stage2Config
from crossdistill.errors import CrossdistillError


def test_floats_written_without_a_dot_are_floats(tmp_path):
    """YAML 1.1 reads `1e-4` as a string; a float key takes it as the number it is."""
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-4\nfake:\n  lr: 5e-5\n")
    cfg = load_config(Stage2Config, f, ["train.max_grad_norm=1e1"])
    assert cfg.lr == 1e-4 and cfg.fake.lr == 5e-5 and cfg.train.max_grad_norm == 10.0
    with pytest.raises(CrossdistillError, match="'lr' must be float, got 'fast'"):
        load_config(Stage2Config, None, ["lr=fast"])


def test_trainer_knobs_are_validated():
    cfg = load_config(Stage2Config, None, ["train.warmup_steps=10", "train.adam_betas=[0.0, 0.99]",
                                           "train.weight_decay=0.01"])
    assert cfg.train.adam_betas == (0.0, 0.99) and cfg.train.warmup_steps == 10
    for bad, msg in (("train.adam_betas=[0.9]", "adam_betas"), ("train.max_grad_norm=-1", "max_grad_norm"),
                     ("clamp=soft", "clamp"), ("manifold.kind=l2", "manifold.kind"), ("gan.head=mlp", "gan.head")):
        with pytest.raises(CrossdistillError, match=msg):
            load_config(Stage2Config, None, [bad])


def test_optimizer_step_clips_and_warms_up():
    import torch

    from crossdistill.train import TrainConfig, optimizer_step

    w = torch.nn.Parameter(torch.zeros(4))
    cfg = TrainConfig(max_grad_norm=1.0, warmup_steps=4, adam_betas=(0.5, 0.9), weight_decay=0.1)
    opt = cfg.optimizer([w], lr=1.0)
    assert opt.defaults["betas"] == (0.5, 0.9) and opt.defaults["weight_decay"] == 0.1
    w.grad = torch.full((4,), 50.0)                       # norm 100
    logs = optimizer_step(opt, torch.tensor(1.0), [w], cfg, step=0, base_lr=1.0)
    assert logs["grad_norm"] == 100.0 and torch.allclose(w.grad.norm(), torch.tensor(1.0))   # clipped to 1
    assert opt.param_groups[0]["lr"] == 0.25                                                 # warm-up 1/4
    optimizer_step(opt, torch.tensor(1.0), [w], cfg, step=10, base_lr=1.0)
    assert opt.param_groups[0]["lr"] == 1.0


def test_every_shipped_config_resolves():
    """Each YAML in configs/ loads into its stage's typed config (a renamed key or a bad
    value in a shipped file fails here, not in a user's run)."""
    from pathlib import Path

    from crossdistill.bridge.stage1 import Stage1Config

    from crossdistill.artifacts import resolve

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        cls = Stage1Config if f.name.startswith("bridge_") else Stage2Config
        cfg = load_config(cls, f)
        if f.name.startswith(("bridge_shapes", "distill_shapes", "distill_pairs")):   # every model and Bridge it names is shipped
            names = [cfg.teacher, cfg.student] if cls is Stage1Config else \
                [cfg.student] + [x for t in cfg.teacher_list() for x in (t.model, t.bridge_dir)]
            for name in set(names) - {"identity", "roundtrip"}:
                assert Path(resolve(name)).is_dir(), (f.name, name)
    two = load_config(Stage2Config, root / "distill_shapes_two_teachers.yaml")
    assert [(t.model, t.bridge_dir, t.weight) for t in two.teacher_list()] == [
        ("shapes-teacher", "shapes-bridge", 0.5), ("shapes-teacher-flux", "shapes-bridge-flux", 0.5)]
