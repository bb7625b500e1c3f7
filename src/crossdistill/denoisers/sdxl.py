"""SDXL: UNet with added time ids and pooled text, two CLIP encoders (penultimate layer)."""

from __future__ import annotations

import torch

from .base import Conditioning, Defaults
from .vp import VPDenoiser


class SDXLDenoiser(VPDenoiser):
    family = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    components_used = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")
    optional = ("text_encoder", "tokenizer")   # the refiner has only the second encoder
    family_defaults = Defaults(steps=50, guidance=5.0, resolution=1024)
    force_zeros_for_empty_prompt = True        # SDXL's pipeline default: the uncond is all zeros

    def encode_prompt(self, prompts):
        pairs = [(self.components["tokenizer"], self.components["text_encoder"]),
                 (self.components["tokenizer_2"], self.components["text_encoder_2"])]
        embeds, pooled = [], None
        for tok, enc in pairs:
            if enc is None:
                continue
            out = enc(self._tokens(tok, prompts, tok.model_max_length).to(enc.device), output_hidden_states=True)
            if out[0].ndim == 2:      # the projection model's text_embeds: the pooled vector
                pooled = out[0]
            embeds.append(out.hidden_states[-2])
        return Conditioning(torch.cat(embeds, dim=-1).to(self.dtype), pooled.to(self.dtype))

    def word_positions(self, prompt):
        # both CLIP encoders read the same tokens; their states are concatenated per token
        from ..text import word_positions
        tok = self.components["tokenizer"] or self.components["tokenizer_2"]
        return word_positions(tok, prompt, tok.model_max_length)

    def _encode_uncond(self):
        cond = self.encode_prompt([""])
        if self.force_zeros_for_empty_prompt:
            return Conditioning(torch.zeros_like(cond.embeds), torch.zeros_like(cond.pooled))
        return cond

    def _unet_kwargs(self, x_t, cond):
        # micro-conditioning: original size, crop top-left, target size = the generated size
        h, w = x_t.shape[-2] * self.space.factor, x_t.shape[-1] * self.space.factor
        ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=x_t.dtype, device=x_t.device).repeat(len(x_t), 1)
        return {"text_embeds": cond.pooled, "time_ids": ids}

    def _conditioning_shape(self):
        c = self.model.config
        tok = self.components["tokenizer_2"]
        return (tok.model_max_length if tok is not None else 77), c.cross_attention_dim, c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim

    def pipeline_extras(self):
        return {"force_zeros_for_empty_prompt": self.force_zeros_for_empty_prompt}
