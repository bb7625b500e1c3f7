"""Full-size plumbing for the real pairs: the shipped configs (configs/sd15_from_*.yaml and
their stage-1 configs) run one stage-1 and one stage-2 step on the published architectures
with every width divided by 32 and every depth kept (38 SD 3.5-large joint blocks; 19 + 38
Flux blocks; SD 1.5's UNet), at 64 / 128 px (the 512 / 1024 ratio); the shapes at the
real resolutions are checked on the meta device. SD 3.5 runs in the configs' bf16 (autocast
+ bf16 frozen weights; slow on CPU) on shapes renders; Flux in fp32, data-free (the
Teacher samples the stage-1 images, as the configs say)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.bridge.stage1 import BridgeTrainConfig, train_bridge
from crossdistill.config import load_config
from crossdistill.denoisers import build_denoiser
from crossdistill.distill.config import DistillConfig
from crossdistill.distill.run import distill
from crossdistill.presets import narrow

PAIRS = {"sd15_from_sd35": "sd35-large", "sd15_from_flux": "flux-dev", "sd15_from_sdxl": "sdxl"}
TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


@pytest.mark.parametrize("pair", PAIRS)
def test_real_resolution_shapes_on_meta(pair):
    s = build_denoiser("sd15", device="meta", omit=TEXT)
    t = build_denoiser(PAIRS[pair], device="meta", omit=TEXT)
    with torch.device("meta"):
        bridge = Bridge(s.space, t.space, 512, 1024, BridgeConfig("bridge"))
        z_hat = bridge(torch.empty(2, *s.latent_shape(512, 512)))
    assert s.latent_shape(512, 512) == (4, 64, 64)
    assert tuple(z_hat.shape[1:]) == t.latent_shape(1024, 1024) == ((16 if pair != "sd15_from_sdxl" else 4), 128, 128)


@pytest.mark.parametrize("pair", ["sd15_from_sd35", "sd15_from_flux"])
def test_one_step_of_each_stage_at_real_depth(pair, tmp_path):
    build_denoiser(narrow("sd15", resolution=64), seed=0).save_pretrained(tmp_path / "student")
    build_denoiser(narrow(PAIRS[pair], resolution=128), seed=1).save_pretrained(tmp_path / "teacher")
    models = [f"teacher={tmp_path / 'teacher'}", f"student={tmp_path / 'student'}"]
    tiny_run = ["train.steps=1", "train.batch=2", "train.checkpoint_every=1"]

    (tmp_path / "captions.txt").write_text("a red circle\na blue square on the left\n")
    if pair == "sd15_from_sd35":
        run = ["data.source=renders", "data.domain=shapes"]
    else:   # the shipped config's data-free bank, the Teacher sampled on the captions file
        run = ["weights_dtype=fp32", "train.mixed_precision=no", f"data.captions={tmp_path / 'captions.txt'}"]
        tiny_run = tiny_run + ["train.mixed_precision=no", "weights_dtype=fp32"]
    s1 = load_config(BridgeTrainConfig, f"bridge_{pair}",
                     models + tiny_run + run + ["data.images=2", "bridge.width=8"])
    assert s1.train.gradient_checkpointing
    train_bridge(s1, tmp_path / "bridge", progress=False)

    # two generator steps: at step 0 a zero-initialised LoRA fake score equals the real one
    # exactly when both see the same inputs (Flux-dev: guidance embedded, no CFG call), so
    # the first DMD gradient is 0; the second follows one fake-score update
    s2 = load_config(DistillConfig, pair,
                     [f"student={tmp_path / 'student'}", f"teachers.0.model={tmp_path / 'teacher'}"] + tiny_run +
                     ["train.steps=2", f"teachers.0.bridge_dir={tmp_path / 'bridge' / 'bridge'}",
                                          f"prompts={tmp_path / 'captions.txt'}", "fake.updates=1", "fake.rank=4"])
    assert s2.fake.kind == "lora" and s2.train.gradient_checkpointing
    distill(s2, tmp_path / "student_run", progress=False)
    unet = load_file(str(tmp_path / "student_run" / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    init = load_file(str(tmp_path / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert unet.keys() == init.keys()
    assert any(not torch.equal(unet[k], init[k]) for k in unet)    # the generator steps moved the Student
    state = load_file(str(next((tmp_path / "student_run").glob("ckpt-*")) / "state.safetensors"))
    assert any(k.startswith("module/fake/") and "lora_" in k for k in state)   # the LoRA fake score was saved


@pytest.mark.parametrize("teacher", ["sd35-large", "flux-dev"])
def test_per_block_decomposition_is_exact_in_parameters(teacher):
    """bench --full-size on a CPU times the backbone at depth 1 plus one block of each kind:
    the full network is exactly base + (blocks - 1) x block, here in parameter counts."""
    from crossdistill.denoisers import build_denoiser
    from crossdistill.eval.bench import _with_depth, blocks_uniform, depth_keys, family_of
    from crossdistill.presets import load_preset

    p = load_preset(teacher)
    cls = family_of(p)
    count = lambda preset: sum(x.numel() for x in build_denoiser(preset, device="meta", omit=TEXT).model.parameters())
    keys = depth_keys(cls.family)
    base_depth = {k: 1 for k in keys}
    base = count(_with_depth(p, base_depth))
    total = base + sum((p["components"][cls.backbone]["config"][k] - 1) *
                       (count(_with_depth(p, dict(base_depth, **{k: 2}))) - base) for k in keys)
    assert total == count(p) and blocks_uniform(cls.family, p["components"][cls.backbone]["config"])


def test_bench_full_size_cli(tmp_path):
    """The same code path as the full-size run, every width / 32 (the figures come from
    `crossdistill bench --full-size`, docs/bench.md)."""
    out = tmp_path / "full.json"
    r = run_cli("bench", "--full-size", "--narrow", "32", "--threads", "1", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text())
    assert row["teacher_blocks"] == {"num_layers": 38} and row["teacher_steps"] == 28
    assert row["teacher_call_ms"] == pytest.approx(row["teacher_base_ms"] + 37 * row["teacher_block_ms"]["num_layers"],
                                                   abs=2)   # (figures rounded to 0.1 ms)
    assert row["teacher_ms"] == pytest.approx(28 * row["teacher_call_ms"] + row["teacher_decode_ms"], abs=2)
    assert row["speedup"] == pytest.approx(row["teacher_ms"] / row["student_ms"], rel=0.01)
    assert "speed-up" in r.stdout
    r = run_cli("bench", "--full-size", "--narrow", "32", "--teacher-preset", "sd35-medium", "--device", "cpu")
    assert r.returncode == 2 and "mixes block kinds" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_full_scale_benchmark_gpu_path_runs_narrowed(tmp_path):
    """benchmarks/full_scale.py's GPU code path (stage-1 step, stage-2 generator step + LoRA
    fake update, inference timings) on a CPU, SD 3.5 large with widths / 32."""
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, "benchmarks/full_scale.py", "--device", "cpu", "--narrow", "32",
                        "--teacher-res", "128", "--student-res", "64", "--teachers", "sd35-large", "--steps", "1",
                        "--dtype", "float32", "--json", str(out)], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["stage1_s_per_step"] > 0 and row["stage2_s_per_step"] > 0 and row["speedup"] > 1
    assert row["teacher_params_B"] > 8 and row["stage2_state_GiB_total"] > row["stage2_state_GiB"]["teacher_bf16"]
