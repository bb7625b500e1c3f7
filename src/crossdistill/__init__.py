"""crossdistill: one-step text-to-image Students from Teachers in a different latent space."""

__version__ = "0.1.0"
