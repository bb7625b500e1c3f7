"""Full-size plumbing for the real pairs: the shipped configs (configs/sd15_from_*.yaml and
their stage-1 configs) run one stage-1 and one stage-2 step on the published architectures
with every width divided by 32 and every depth kept (38 SD 3.5-large joint blocks; 19 + 38
Flux blocks; SD 1.5's UNet), at 64 / 128 px (the 512 / 1024 ratio); the shapes at the
real resolutions are checked on the meta device. SD 3.5 runs in the configs' bf16 (autocast
+ bf16 frozen weights; slow on CPU) on shapes renders; Flux in fp32, data-free (the
Teacher samples the stage-1 images, as the configs say)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.bridge import Bridge, BridgeConfig
from crossdistill.bridge.stage1 import Stage1Config, train_bridge
from crossdistill.config import load_config
from crossdistill.denoisers import build_denoiser
from crossdistill.distill.stage2 import Stage2Config, distill
from crossdistill.presets import narrow

CONFIGS = Path(__file__).parent.parent / "configs"
PAIRS = {"sd15_from_sd35": "sd35-large", "sd15_from_flux": "flux-dev", "sd15_from_sdxl": "sdxl"}
TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")


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

    if pair == "sd15_from_sd35":
        run = ["data.source=shapes"]
    else:
        run = ["weights_dtype=fp32", "train.mixed_precision=no"]
        tiny_run = tiny_run + ["train.mixed_precision=no", "weights_dtype=fp32"]
    s1 = load_config(Stage1Config, CONFIGS / f"bridge_{pair}.yaml",
                     models + tiny_run + run + ["data.images=2", "bridge.width=8"])
    assert s1.train.gradient_checkpointing
    train_bridge(s1, tmp_path / "bridge", progress=False)

    (tmp_path / "captions.txt").write_text("a red circle\na blue square on the left\n")
    s2 = load_config(Stage2Config, CONFIGS / f"{pair}.yaml",
                     models + tiny_run + [f"bridge={tmp_path / 'bridge' / 'bridge'}",
                                          f"prompts={tmp_path / 'captions.txt'}", "fake.updates=1", "fake.rank=4"])
    assert s2.fake.kind == "lora" and s2.train.gradient_checkpointing
    distill(s2, tmp_path / "student_run", progress=False)
    unet = load_file(str(tmp_path / "student_run" / "student" / "unet.safetensors"))
    init = load_file(str(tmp_path / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert unet.keys() == init.keys()
    assert any(not torch.equal(unet[k], init[k]) for k in unet)    # the one generator step moved the Student
    state = load_file(str(next((tmp_path / "student_run").glob("ckpt-*")) / "state.safetensors"))
    assert any(k.startswith("module/fake/") and "lora_" in k for k in state)   # the LoRA fake score was saved
