"""Typed configs: YAML + dotted overrides."""

import pytest

from crossdistill.config import load_config
from crossdistill.distill.config import DistillConfig
from crossdistill.errors import CrossdistillError

MODELS = ["student=s", "teachers=[t]"]   # the two keys every stage-2 config must set


def test_floats_written_without_a_dot_are_floats(tmp_path):
    """YAML 1.1 reads `1e-4` as a string; a float key takes it as the number it is."""
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-4\nfake:\n  lr: 5e-5\n")
    cfg = load_config(DistillConfig, f, MODELS + ["train.max_grad_norm=1e1"])
    assert cfg.lr == 1e-4 and cfg.fake.lr == 5e-5 and cfg.train.max_grad_norm == 10.0
    with pytest.raises(CrossdistillError, match="'lr' must be float, got 'fast'"):
        load_config(DistillConfig, None, MODELS + ["lr=fast"])


def test_trainer_knobs_are_validated():
    cfg = load_config(DistillConfig, None, MODELS + ["train.warmup_steps=10", "train.adam_betas=[0.0, 0.99]",
                                           "train.weight_decay=0.01"])
    assert cfg.train.adam_betas == (0.0, 0.99) and cfg.train.warmup_steps == 10
    for bad, msg in (("train.adam_betas=[0.9]", "adam_betas"), ("train.max_grad_norm=-1", "max_grad_norm"),
                     ("clamp=soft", "clamp"), ("manifold.kind=l2", "manifold.kind"), ("gan.head=mlp", "gan.head")):
        with pytest.raises(CrossdistillError, match=msg):
            load_config(DistillConfig, None, MODELS + [bad])


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
    """Each shipped config (the library's and the domains') loads into its stage's typed
    config by name (a renamed key or a bad value in a shipped file fails here, not in a
    user's run), and every model and Bridge a domain's config names is shipped."""
    from pathlib import Path

    from crossdistill.artifacts import resolve
    from crossdistill.bridge.stage1 import BridgeTrainConfig
    from crossdistill.config import named_configs

    shipped = named_configs()
    assert {"distill_shapes", "distill_pairs", "bridge_shapes", "sd15_from_sd35", "bridge_sd15_from_flux"} <= set(shipped)
    for name, path in shipped.items():
        cls = BridgeTrainConfig if name.startswith("bridge_") else DistillConfig
        cfg = load_config(cls, name)
        assert load_config(cls, path) == cfg   # by name or by path: the same file
        if "domains" in path.parts:   # every model and Bridge it names is shipped
            names = [cfg.teacher, cfg.student] if cls is BridgeTrainConfig else \
                [cfg.student] + [x for t in cfg.teachers for x in (t.model, t.bridge_dir)]
            for model in set(names) - {"identity", "roundtrip"}:
                assert Path(resolve(model)).is_dir(), (name, model)
    two = load_config(DistillConfig, "distill_shapes_two_teachers")
    assert [(t.model, t.bridge_dir, t.weight) for t in two.teachers] == [
        ("shapes-teacher", "shapes-bridge", 0.5), ("shapes-teacher-flux", "shapes-bridge-flux", 0.5)]


def test_teachers_take_a_name_alone_and_indexed_overrides(tmp_path):
    """`teachers: [NAME]` is a Teacher with the other fields' defaults; `teachers.0.KEY=V`
    overrides one field of one Teacher; an index past the list, a key under a plain name
    and a config that names no Teacher are refused by name."""
    from crossdistill.distill.config import TeacherConfig

    f = tmp_path / "c.yaml"
    f.write_text("student: s\nteachers: [t1, {model: t2, guidance: 2.0}]\n")
    cfg = load_config(DistillConfig, f, ["teachers.1.weight=0.5"])
    assert cfg.teachers == [TeacherConfig("t1"), TeacherConfig("t2", guidance=2.0, weight=0.5)]
    for sets, msg in ((["teachers.2.weight=1"], "'2' is not an index of 'teachers' \\(0..1\\)"),
                      (["teachers.0.guidance=1"], "'0' is 't1', not a mapping"),
                      (["teachers=[]"], "teachers is required")):
        with pytest.raises(CrossdistillError, match=msg):
            load_config(DistillConfig, f, sets)
    with pytest.raises(CrossdistillError, match="unknown config 'distill_shape'.*did you mean 'distill_shapes'"):
        load_config(DistillConfig, "distill_shape")
