"""The Bridge (Student latents -> Teacher latents), its baselines, stage-1 training and evaluation."""

from .model import KINDS, TAPS, Bridge, BridgeConfig, Projector, resolution_ratio

__all__ = ["KINDS", "TAPS", "Bridge", "BridgeConfig", "Projector", "resolution_ratio"]
