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


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl", "tiny-sd3", "tiny-sd35", "tiny-flux"])
def test_captured_maps_equal_the_attention_each_layer_computes(tiny_models, name, monkeypatch):
    """The reference is recorded from the layer itself: every `scaled_dot_product_attention`
    call diffusers makes (queries and keys after its norms and RoPE, its scale and mask),
    turned into softmax(QK^T * scale + mask) and tagged with the attention module that made
    it. Our capture recomputes queries and keys on its own; both must agree on every site
    (SD 1.5 / SDXL cross- and self-attention, SD 3 joint, SD 3.5 joint + dual, Flux
    double- and single-stream with RoPE)."""
    import torch.nn.functional as F

    den = tiny_models(name)
    x, t, c = _inputs(den)
    text_len = c.embeds.shape[1]
    sdpa, current, ref = F.scaled_dot_product_attention, [None], {}

    def recording(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        q, k = query, key
        if current[0] is not None:
            logits = (q.float() @ k.float().transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
            if attn_mask is not None:
                logits = logits + attn_mask if attn_mask.dtype != torch.bool else \
                    logits.masked_fill(~attn_mask, float("-inf"))
            ref[current[0]] = logits.softmax(-1).mean(1)       # (B, S_q, S_k), heads averaged
        return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    sites = den.attention_sites()
    hooks = [s.module.register_forward_pre_hook(lambda m, a, n=s.name: current.__setitem__(0, n)) for s in sites]
    hooks += [s.module.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)) for s in sites]
    try:
        with AttentionCapture(den, CaptureSpec(image_to_image=True)) as cap:
            _, maps = cap.run(lambda: den.model_output(x, t, c), text_len=text_len)
    finally:
        for h in hooks:
            h.remove()
    assert set(maps) == {s.name for s in cap.sites} and set(maps) <= set(ref)
    kinds = {s.name: s.kind for s in sites}
    for site, m in maps.items():
        p, n_img = ref[site], next(iter(m.values())).shape[1]     # image-query rows of this layer
        kind = kinds[site]
        if kind == "joint_img_first":       # [image; text] queries and keys
            groups = {"image": p[:, :n_img, :n_img], "text": p[:, :n_img, n_img:]}
        elif kind in ("joint_txt_first", "single_txt_first"):   # [text; image]
            tl = p.shape[-1] - n_img
            groups = {"text": p[:, tl:, :tl], "image": p[:, tl:, tl:]}
        elif kind == "cross":
            groups = {"text": p}
        else:
            groups = {"image": p}
        for g, want in groups.items():
            assert g in m, (site, g)
            assert m[g].shape == want.shape, (site, g, m[g].shape, want.shape)
            assert torch.allclose(m[g], want, atol=1e-5), (site, g, (m[g] - want).abs().max())
    assert {kinds[s] for s in maps} == {"tiny-sd15": {"cross", "self"}, "tiny-sdxl": {"cross", "self"},
                                         "tiny-sd3": {"joint_img_first"}, "tiny-sd35": {"joint_img_first", "self"},
                                         "tiny-flux": {"joint_txt_first", "single_txt_first"}}[name]


def _joint_ids(den, prompt):
    """The token ids along the family's text sequence, written out per family."""
    c = den.components

    def ids(tok, n):
        return tok(prompt, padding="max_length", max_length=n, truncation=True).input_ids

    if den.family == "flux":
        return ids(c["tokenizer_2"], den.encode_prompt([prompt]).embeds.shape[1])
    clip = c["tokenizer"] or c["tokenizer_2"]
    if den.family == "sd3":   # [CLIP tokens; T5 tokens]
        n = den.encode_prompt([prompt]).embeds.shape[1]
        return ids(clip, clip.model_max_length) + ids(c["tokenizer_3"], n - clip.model_max_length)
    return ids(clip, clip.model_max_length)


@pytest.mark.parametrize("name", FAMILIES)
def test_word_positions_point_at_each_words_tokens(tiny_models, name):
    """Every family places a prompt's words on its text sequence: the ids there are the
    word's own; CLIP is causal, so replacing word k changes the states first at word k."""
    den = tiny_models(name)
    prompt, other = "a red circle on the left", "a red square on the left"
    pos = den.word_positions(prompt)
    joint = _joint_ids(den, prompt)
    assert len(joint) == den.encode_prompt([prompt]).embeds.shape[1] and len(pos) == 6
    toks = [den.components[k] for k in ("tokenizer", "tokenizer_2", "tokenizer_3") if den.components.get(k)]
    for w, word in enumerate(prompt.split()):
        want = {i for tok in toks for i in tok(word, add_special_tokens=False).input_ids}
        assert pos[w] and {joint[p] for p in pos[w]} <= want, (word, pos[w])
    if den.family == "sd3":   # a word sits once in the CLIP part and once in the T5 part
        assert all(len(p) == 2 for p in pos)
    if den.family in ("sd15", "sdxl"):
        a, b = den.encode_prompt([prompt]).embeds[0], den.encode_prompt([other]).embeds[0]
        changed = (a - b).abs().amax(-1) > 1e-6
        assert int(changed.nonzero()[0]) == pos[2][0]


def test_object_map_distance_known_values():
    from crossdistill.bridge.losses import object_map_distance

    rows = torch.zeros(1, 4, 3)          # 4 image positions, 3 text tokens
    rows[0, 0, 1] = rows[0, 3, 2] = 1.0  # token 1 attended at position 0, token 2 at position 3
    swapped = rows[:, [3, 1, 2, 0]]      # the same maps with positions 0 and 3 exchanged
    masks = torch.tensor([[[0.0, 1, 0], [0, 0, 1]]])   # object 1: token 1, object 2: token 2
    assert object_map_distance(rows, rows, masks).item() == 0.0
    assert object_map_distance(swapped, rows, masks).item() == pytest.approx(2.0)   # disjoint maps
    # a map that is the reference at half strength everywhere reads the same (normalised)
    assert object_map_distance(rows * 0.5, rows, masks).item() == pytest.approx(0.0)


def test_object_masks_mark_each_objects_tokens_or_give_up():
    from types import SimpleNamespace

    from crossdistill.bridge.evaluate import object_masks
    from crossdistill.domains import get

    prompts = ["a red circle above a blue square", "a red circle left of a blue square"]
    places = {p: [[1 + i] for i in range(len(p.split()))] for p in prompts}   # word i -> token i + 1
    teacher = SimpleNamespace(word_positions=lambda p: places[p])
    m = object_masks(teacher, prompts, get("pairs"), 12)
    assert m.shape == (2, 2, 12)
    assert m[0, 0].nonzero().flatten().tolist() == [2, 3] and m[0, 1].nonzero().flatten().tolist() == [6, 7]
    assert m[1, 1].nonzero().flatten().tolist() == [7, 8]   # "left of" moves the second object
    empty = SimpleNamespace(word_positions=lambda p: [[] for _ in p.split()])
    assert object_masks(empty, prompts, get("pairs"), 12) is None   # no tokens: no per-object score, not 0


def test_word_positions_stop_where_truncation_puts_the_end_token():
    from crossdistill.text import word_positions, word_tokenizer

    prompt = "a red circle on the left"
    for style, first in (("clip", 1), ("t5", 0)):
        tok = word_tokenizer(prompt.split(), style, model_max_length=4)
        ids = tok(prompt, padding="max_length", max_length=4, truncation=True).input_ids
        pos = word_positions(tok, prompt, 4)
        kept = [p for w in pos for p in w]
        assert kept == list(range(first, 3))            # the last slot holds the end token
        assert all(ids[p] == tok(prompt.split()[i], add_special_tokens=False).input_ids[0]
                   for i, w in enumerate(pos) for p in w)
