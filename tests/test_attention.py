"""Attention capture: outputs untouched, processors restored, maps well-formed and differentiable."""

import pytest
import torch

from crossdistill.attention import AttentionCapture, CaptureSpec
from crossdistill.denoisers import build_denoiser
from crossdistill.errors import CrossdistillError

FAMILIES = ["tiny-sd15", "tiny-sdxl", "tiny-sd35", "tiny-flux"]


def _inputs(den, b=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, *den.latent_shape(32, 32), generator=g)
    t = den.sample_timesteps(b, g)
    return x, t, den.encode_prompt(["a red circle", "a dog"][:b])


@pytest.mark.parametrize("name", FAMILIES)
def test_capture_leaves_outputs_bit_identical_and_restores(tiny_models, name):
    den = tiny_models(name)
    x, t, c = _inputs(den)
    before = [s.module.processor for s in den.attention_sites()]
    ref = den.model_output(x, t, c)
    with AttentionCapture(den, CaptureSpec(image_to_image=True)) as cap:
        out, maps = cap.run(lambda: den.model_output(x, t, c), text_len=c.embeds.shape[1])
        again = den.model_output(x, t, c)   # a second forward while installed
    assert torch.equal(out, ref) and torch.equal(again, ref)
    assert [s.module.processor for s in den.attention_sites()] == before
    assert torch.equal(den.model_output(x, t, c), ref)
    assert maps and all(v.shape[:2] == (2, 64) for m in maps.values() for v in m.values())
    # rows of the joint softmax sum to 1 over everything the layer attends to
    for m in maps.values():
        total = sum(v.sum(-1) for v in m.values())
        if "image" in m or den.family in ("sd15", "sdxl"):
            assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_maps_are_differentiable_and_chunking_exact(tiny_models, name):
    den = tiny_models(name)
    x, t, c = _inputs(den)
    x.requires_grad_(True)
    with AttentionCapture(den, CaptureSpec(chunk=1024)) as cap:
        _, full = cap.run(lambda: den.model_output(x, t, c), text_len=c.embeds.shape[1])
    with AttentionCapture(den, CaptureSpec(chunk=5)) as cap:
        _, chunked = cap.run(lambda: den.model_output(x, t, c), text_len=c.embeds.shape[1])
    for k in full:
        assert torch.allclose(full[k]["text"], chunked[k]["text"], atol=1e-6)
    sum(m["text"].pow(2).sum() for m in chunked.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_layer_selection_and_pooling(tiny_models):
    den = tiny_models("tiny-sd35")
    x, t, c = _inputs(den)
    with AttentionCapture(den, CaptureSpec(layers=(1,), image_to_image=True, pool=2)) as cap:
        _, maps = cap.run(lambda: den.model_output(x, t, c), grid=(8, 8))
    assert set(maps) == {"transformer_blocks.1.attn"}
    assert maps["transformer_blocks.1.attn"]["image"].shape == (2, 16, 16)   # 64 tokens pooled 2x2
    assert maps["transformer_blocks.1.attn"]["text"].shape[1] == 16
    with pytest.raises(CrossdistillError, match="out of range"):
        AttentionCapture(den, CaptureSpec(layers=(5,)))


def test_flux_single_stream_needs_text_length(tiny_models):
    den = tiny_models("tiny-flux")
    x, t, c = _inputs(den)
    with AttentionCapture(den) as cap:
        with pytest.raises(CrossdistillError, match="text length"):
            cap.run(lambda: den.model_output(x, t, c))
    assert torch.equal(den.model_output(x, t, c), den.model_output(x, t, c))


@pytest.mark.parametrize("name", ["tiny-sd35", "tiny-flux", "tiny-sd15"])
def test_capture_under_gradient_checkpointing(name):
    den = build_denoiser(name)
    x, t, c = _inputs(den)
    grads = []
    for ckpt in (False, True):
        if ckpt:
            den.model.enable_gradient_checkpointing()
        den.model.train()
        xi = x.clone().requires_grad_(True)
        with AttentionCapture(den) as cap:
            _, maps = cap.run(lambda: den.model_output(xi, t, c), text_len=c.embeds.shape[1])
            sum(m["text"].pow(2).sum() for m in maps.values()).backward()
        grads.append(xi.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
