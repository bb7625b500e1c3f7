"""Differentiable capture of a Teacher's attention maps, through diffusers processors.

Each adapter lists its attention sites (`Denoiser.attention_sites()`), each of one
`kind`; capture wraps the site's processor: the original processor still computes the
layer's output (so outputs are bit-identical with capture on), and the wrapper
recomputes image queries and keys to record only what the attention-fidelity loss
needs: image-query rows, heads averaged, image->text (and optionally image->image,
spatially pooled). Rows are normalised over *all* keys the layer attends to (the
joint softmax), in query chunks under activation checkpointing, so the full joint map
is never materialised (4096 image tokens at 1024 px).

Kinds:
  joint_img_first   SD3/3.5 joint attention: hidden = image, encoder = text
  joint_txt_first   Flux double-stream: sequence [text; image], RoPE
  single_txt_first  Flux single-stream: hidden = [text; image], RoPE; needs text_len
  cross             UNet cross-attention: image queries, text keys
  self              UNet self-attention, SD3.5 dual attention: image -> image
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .errors import CrossdistillError

KINDS = ("joint_img_first", "joint_txt_first", "single_txt_first", "cross", "self")


@dataclass
class AttentionSite:
    name: str
    module: torch.nn.Module
    kind: str
    rope: bool = False


@dataclass
class CaptureSpec:
    layers: tuple[int, ...] | None = None   # indices into the sites that have text keys (None: all)
    image_to_image: bool = False            # also keep image->image rows (pooled)
    pool: int = 1                           # spatial pooling of image tokens for image->image
    chunk: int = 1024                       # query rows per checkpointed chunk


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, S, H*D) -> (B, S, H, D)"""
    return x.unflatten(-1, (heads, -1))


def _rope(x: Tensor, emb, lo: int, hi: int) -> Tensor:
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = emb
    return apply_rotary_emb(x, (cos[lo:hi], sin[lo:hi]), sequence_dim=1)


def _norm(mod, x):
    return mod(x) if mod is not None else x


def _qk(site: AttentionSite, hidden: Tensor, encoder: Tensor | None, text_len: int | None, rope_emb):
    """Image queries and the keys this layer attends to, all (B, S, H, D)."""
    a = site.module
    h = a.heads
    if site.kind == "single_txt_first":
        if text_len is None:
            raise CrossdistillError("single-stream attention capture needs the text length")
        q = _norm(a.norm_q, _heads(a.to_q(hidden), h))
        k = _norm(a.norm_k, _heads(a.to_k(hidden), h))
        if rope_emb is not None:
            q, k = _rope(q, rope_emb, 0, q.shape[1]), _rope(k, rope_emb, 0, k.shape[1])
        return q[:, text_len:], {"text": k[:, :text_len], "image": k[:, text_len:]}
    q = _norm(a.norm_q, _heads(a.to_q(hidden), h))
    keys = {}
    if site.kind in ("joint_img_first", "joint_txt_first", "self"):
        keys["image"] = _norm(a.norm_k, _heads(a.to_k(hidden), h))
    if site.kind in ("joint_img_first", "joint_txt_first"):
        keys["text"] = _norm(a.norm_added_k, _heads(a.add_k_proj(encoder), h))
    if site.kind == "cross":
        keys["text"] = _norm(a.norm_k, _heads(a.to_k(encoder), h))
    if site.kind == "joint_txt_first" and rope_emb is not None:
        t, n = keys["text"].shape[1], q.shape[1]
        q = _rope(q, rope_emb, t, t + n)
        keys["image"] = _rope(keys["image"], rope_emb, t, t + n)
        keys["text"] = _rope(keys["text"], rope_emb, 0, t)
    return q, keys


def _pool_tokens(x: Tensor, grid: tuple[int, int], pool: int, dim: int) -> Tensor:
    """Average-pool image tokens (row-major on `grid`) along `dim` by `pool` x `pool`."""
    if pool == 1:
        return x
    gh, gw = grid
    x = x.movedim(dim, -1)
    shape = x.shape[:-1]
    x = x.reshape(-1, 1, gh, gw)
    x = F.avg_pool2d(x, pool).flatten(1)
    return x.reshape(*shape, -1).movedim(-1, dim)


def _rows(q: Tensor, keys: dict[str, Tensor], scale: float, spec: CaptureSpec,
          grid: tuple[int, int] | None) -> dict[str, Tensor]:
    """Joint-softmax rows of image queries, heads averaged, split by key group."""
    names = list(keys)
    sizes = [keys[k].shape[1] for k in names]
    k_all = torch.cat([keys[k] for k in names], dim=1).transpose(1, 2)      # (B, H, S, D)
    want = [n for n in names if n == "text" or spec.image_to_image]

    def chunk_fn(qc: Tensor):
        logits = (qc.transpose(1, 2) @ k_all.transpose(-1, -2)) * scale      # (B, H, c, S)
        p = logits.float().softmax(-1).mean(1)                               # heads averaged
        parts = dict(zip(names, p.split(sizes, dim=-1)))
        return tuple(parts[n] for n in want)

    outs = []
    for qc in q.split(spec.chunk, dim=1):
        if torch.is_grad_enabled() and (qc.requires_grad or k_all.requires_grad):
            outs.append(checkpoint(chunk_fn, qc, use_reentrant=False))
        else:
            outs.append(chunk_fn(qc))
    res = {n: torch.cat([o[i] for o in outs], dim=1) for i, n in enumerate(want)}
    if spec.pool > 1:   # image queries pooled for every group, image keys too: memory stays bounded
        n = q.shape[1]
        g = grid or (math.isqrt(n), math.isqrt(n))
        if g[0] * g[1] != n:
            raise CrossdistillError(f"cannot pool {n} image tokens without the token grid")
        res = {k: _pool_tokens(v, g, spec.pool, 1) for k, v in res.items()}
        if "image" in res:
            res["image"] = _pool_tokens(res["image"], g, spec.pool, 2)
    return res


class _CaptureProcessor:
    def __init__(self, inner, site: AttentionSite, capture: "AttentionCapture"):
        self.inner, self.site, self.capture = inner, site, capture

    def __getattr__(self, name):   # behave like the wrapped processor for diffusers' checks
        if name in ("inner", "site", "capture") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, attn, *args, **kwargs):
        out = self.inner(attn, *args, **kwargs)   # the layer's output, untouched
        c = self.capture
        if c.recording:
            # diffusers calls processors as (attn, hidden, encoder, mask, [rope]) positionally or by name
            names = ("hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb")
            a = dict(zip(names, args), **kwargs)
            q, keys = _qk(self.site, a["hidden_states"], a.get("encoder_hidden_states"), c.text_len,
                          a.get("image_rotary_emb") if self.site.rope else None)
            scale = getattr(attn, "scale", None) or q.shape[-1] ** -0.5
            c.maps[self.site.name] = _rows(q, keys, scale, c.spec, c.grid)
        return out


class AttentionCapture:
    """Context manager installing capture on chosen attention sites of a denoiser.

    >>> with AttentionCapture(teacher, CaptureSpec(layers=(0, 1))) as cap:
    ...     out, maps = cap.run(lambda: teacher.model_output(x_t, t, cond), text_len=cond.embeds.shape[1])
    ...     loss(maps).backward()   # inside the block if the Teacher uses gradient checkpointing
    """

    def __init__(self, den, spec: CaptureSpec | None = None):
        self.spec = spec or CaptureSpec()
        sites = den.attention_sites()
        texty = [s for s in sites if s.kind != "self"]
        chosen = texty if self.spec.layers is None else [texty[i] for i in self._check(self.spec.layers, texty)]
        if self.spec.image_to_image:   # dual-attention / UNet self-attention layers of the chosen blocks
            chosen += [s for s in sites if s.kind == "self" and s.name.rsplit(".", 1)[0] in
                       {c.name.rsplit(".", 1)[0] for c in chosen}]
        self.sites = chosen
        self.recording = False
        self.maps: dict[str, dict[str, Tensor]] = {}
        self.text_len: int | None = None
        self.grid: tuple[int, int] | None = None
        self._saved: list = []

    @staticmethod
    def _check(layers, texty):
        for i in layers:
            if not -len(texty) <= i < len(texty):
                raise CrossdistillError(f"attention layer {i} out of range; the model has {len(texty)} "
                                        f"text-attending layers (0..{len(texty) - 1})")
        return layers

    def __enter__(self) -> "AttentionCapture":
        # Recording stays on while installed: under gradient checkpointing the backward
        # pass recomputes each block, and must redo exactly what the forward did.
        self.recording = True
        for s in self.sites:
            self._saved.append((s.module, s.module.processor))
            s.module.set_processor(_CaptureProcessor(s.module.processor, s, self))
        return self

    def __exit__(self, *exc) -> None:
        self.recording = False
        for module, proc in self._saved:
            module.set_processor(proc)
        self._saved.clear()

    def run(self, fn: Callable[[], Tensor], text_len: int | None = None,
            grid: tuple[int, int] | None = None) -> tuple[Tensor, dict[str, dict[str, Tensor]]]:
        """Call `fn` (a model forward); returns (its output, the maps it recorded)."""
        self.maps, self.text_len, self.grid = {}, text_len, grid
        out = fn()
        return out, dict(self.maps)


@contextmanager
def captured(den, spec: CaptureSpec | None = None):
    with AttentionCapture(den, spec) as cap:
        yield cap


def noised_maps(den, cap: AttentionCapture, z: Tensor, t: Tensor, noise: Tensor, cond):
    """The attention maps `cap` records when `den` denoises z noised to t with `noise`."""
    x_t = den.add_noise(z, t, noise)
    p = den.token_patch
    _, maps = cap.run(lambda: den.model_output(x_t, t, cond), text_len=cond.embeds.shape[1],
                      grid=(z.shape[-2] // p, z.shape[-1] // p))
    return maps
