"""SD 3 / 3.5: SD3Transformer2DModel (incl. 3.5 dual attention and qk-norm), rectified
flow with shift, CLIP-L + CLIP-G + T5, any of which may be absent (zeros stand in)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Conditioning, Defaults
from .flow import FlowDenoiser


class SD3Denoiser(FlowDenoiser):
    family = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    components_used = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                       "text_encoder_3", "tokenizer_3", "scheduler")
    optional = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
    family_defaults = Defaults(steps=28, guidance=3.5, resolution=1024, max_sequence_length=256)

    def _clip_length(self) -> int:
        for k in ("tokenizer", "tokenizer_2"):
            if self.components[k] is not None:
                return self.components[k].model_max_length
        return 77

    def _clip(self, index: int, prompts: list[str]):
        """Penultimate hidden states and pooled projection of CLIP encoder `index` (0: L, 1: G)."""
        suffix = "" if index == 0 else "_2"
        enc, tok = self.components["text_encoder" + suffix], self.components["tokenizer" + suffix]
        n, length = len(prompts), self._clip_length()
        if enc is None:   # absent encoder: zeros of its share of the pooled width
            other = self.components["text_encoder_2" if index == 0 else "text_encoder"]
            total = self.model.config.pooled_projection_dim
            width = total - other.config.projection_dim if other is not None else total // 2
            z = torch.zeros(n, length, width, device=self.device, dtype=self.dtype)
            return z, torch.zeros(n, width, device=self.device, dtype=self.dtype)
        out = enc(self._tokens(tok, prompts, length).to(enc.device), output_hidden_states=True)
        return out.hidden_states[-2].to(self.dtype), out[0].to(self.dtype)

    def _t5(self, prompts: list[str]):
        enc, tok = self.components["text_encoder_3"], self.components["tokenizer_3"]
        length = self.defaults.max_sequence_length or 256
        if enc is None:
            return torch.zeros(len(prompts), length, self.model.config.joint_attention_dim,
                               device=self.device, dtype=self.dtype)
        return enc(self._tokens(tok, prompts, length).to(enc.device))[0].to(self.dtype)

    def encode_prompt(self, prompts):
        (l_seq, l_pool), (g_seq, g_pool) = self._clip(0, prompts), self._clip(1, prompts)
        t5 = self._t5(prompts)
        clip = torch.cat([l_seq, g_seq], dim=-1)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # zero-pad CLIP to the T5 width
        return Conditioning(torch.cat([clip, t5], dim=-2), torch.cat([l_pool, g_pool], dim=-1))

    def word_positions(self, prompt):
        # the joint text sequence is [CLIP tokens (L and G side by side); T5 tokens]
        from ..text import word_positions
        clip_len = self._clip_length()
        words = [[] for _ in prompt.split()]
        clip_tok = self.components["tokenizer"] or self.components["tokenizer_2"]
        if clip_tok is not None:
            words = [a + b for a, b in zip(words, word_positions(clip_tok, prompt, clip_len))]
        if self.components["tokenizer_3"] is not None:
            t5 = word_positions(self.components["tokenizer_3"], prompt,
                                self.defaults.max_sequence_length or 256, offset=clip_len)
            words = [a + b for a, b in zip(words, t5)]
        return words

    def attention_sites(self):
        from ..attention import AttentionSite

        sites = []
        for i, block in enumerate(self.model.transformer_blocks):
            sites.append(AttentionSite(f"transformer_blocks.{i}.attn", block.attn, "joint_img_first"))
            if getattr(block, "attn2", None) is not None:   # SD3.5 dual attention: image-only
                sites.append(AttentionSite(f"transformer_blocks.{i}.attn2", block.attn2, "self"))
        return sites

    def _conditioning_shape(self):
        c = self.model.config
        return self._clip_length() + (self.defaults.max_sequence_length or 256), c.joint_attention_dim, \
            c.pooled_projection_dim

    def model_output(self, x_t, t, cond, guidance=None):
        return self.model(hidden_states=x_t, timestep=t * self.scheduler.config.num_train_timesteps,
                          encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled,
                          return_dict=False)[0]
