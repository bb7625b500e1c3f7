"""Flux: FluxTransformer2DModel on 2x2-packed latents with RoPE ids, guidance
embedding (distilled CFG, one call per step), CLIP pooled + T5 sequence."""

from __future__ import annotations

import torch

from .base import Conditioning, Defaults
from .flow import FlowDenoiser, linear_sigmas


class FluxDenoiser(FlowDenoiser):
    family = "flux"
    pipeline_class = "FluxPipeline"
    components_used = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                       "scheduler")
    patch = 2
    family_defaults = Defaults(steps=28, guidance=3.5, resolution=1024, max_sequence_length=512)

    def encode_prompt(self, prompts):
        clip, clip_tok = self.components["text_encoder"], self.components["tokenizer"]
        t5, t5_tok = self.components["text_encoder_2"], self.components["tokenizer_2"]
        pooled = clip(self._tokens(clip_tok, prompts, clip_tok.model_max_length).to(clip.device)).pooler_output
        length = self.defaults.max_sequence_length or 512
        seq = t5(self._tokens(t5_tok, prompts, length).to(t5.device))[0]
        return Conditioning(seq.to(self.dtype), pooled.to(self.dtype))

    def word_positions(self, prompt):
        # the transformer's text tokens are T5's (CLIP gives only the pooled vector)
        from ..text import word_positions
        return word_positions(self.components["tokenizer_2"], prompt, self.defaults.max_sequence_length or 512)

    def attention_sites(self):
        from ..attention import AttentionSite

        double = [AttentionSite(f"transformer_blocks.{i}.attn", b.attn, "joint_txt_first", rope=True)
                  for i, b in enumerate(self.model.transformer_blocks)]
        single = [AttentionSite(f"single_transformer_blocks.{i}.attn", b.attn, "single_txt_first", rope=True)
                  for i, b in enumerate(self.model.single_transformer_blocks)]
        return double + single

    def _conditioning_shape(self):
        c = self.model.config
        return self.defaults.max_sequence_length or 512, c.joint_attention_dim, c.pooled_projection_dim

    @property
    def guidance_embedded(self) -> bool:
        return bool(self.model.config.guidance_embeds)

    def model_output(self, x_t, t, cond, guidance=None):
        b, _, h, w = x_t.shape
        img_ids = torch.zeros(h // 2, w // 2, 3, device=x_t.device, dtype=x_t.dtype)
        img_ids[..., 1] += torch.arange(h // 2, device=x_t.device)[:, None]
        img_ids[..., 2] += torch.arange(w // 2, device=x_t.device)[None, :]
        txt_ids = torch.zeros(cond.embeds.shape[1], 3, device=x_t.device, dtype=x_t.dtype)
        g = None
        if self.guidance_embedded:
            scale = self.defaults.guidance if guidance is None else guidance
            g = scale.to(x_t.device, torch.float32).expand(b) if torch.is_tensor(scale) else \
                torch.full((b,), float(scale), device=x_t.device, dtype=torch.float32)
        out = self.model(hidden_states=self.space.pack(x_t), timestep=t.to(x_t.dtype), guidance=g,
                         pooled_projections=cond.pooled, encoder_hidden_states=cond.embeds,
                         txt_ids=txt_ids, img_ids=img_ids.reshape(-1, 3), return_dict=False)[0]
        return self.space.unpack(out, h, w)

    def guided_output(self, x_t, t, cond, guidance=None, uncond=None):
        # Flux-dev is guidance-distilled: the scale is an input, not a second (uncond) call
        if self.guidance_embedded:
            return self.model_output(x_t, t, cond, guidance)
        return super().guided_output(x_t, t, cond, guidance, uncond)

    def _sigmas(self, steps):
        return linear_sigmas(steps)
