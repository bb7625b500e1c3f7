"""SD 1.x / 2.x: UNet2DConditionModel, VP schedule, one CLIP text encoder."""

from __future__ import annotations

from .base import Conditioning, Defaults
from .vp import VPDenoiser


class SD15Denoiser(VPDenoiser):
    family = "sd15"
    pipeline_class = "StableDiffusionPipeline"
    components_used = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    family_defaults = Defaults(steps=50, guidance=7.5, resolution=512)

    def encode_prompt(self, prompts):
        tok, enc = self.components["tokenizer"], self.components["text_encoder"]
        ids = self._tokens(tok, prompts, tok.model_max_length).to(enc.device)
        mask = None
        if getattr(enc.config, "use_attention_mask", False):
            mask = (ids != tok.pad_token_id).long()
        return Conditioning(enc(ids, attention_mask=mask)[0].to(self.dtype))

    def word_positions(self, prompt):
        from ..text import word_positions
        tok = self.components["tokenizer"]
        return word_positions(tok, prompt, tok.model_max_length)

    def _conditioning_shape(self):
        tok = self.components["tokenizer"]
        return (tok.model_max_length if tok is not None else 77), self.model.config.cross_attention_dim, None

    def pipeline_extras(self):
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
