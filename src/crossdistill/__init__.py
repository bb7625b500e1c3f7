"""crossdistill: one-step text-to-image Students from Teachers in a different latent space.

The Python API (imported on first use, so `import crossdistill` stays light):

    from crossdistill import Stage1Config, Stage2Config, load_config, train_bridge, train_student

(`train_student` is `crossdistill.distill.stage2.distill` and `generate_images` is
`crossdistill.generate.generate`: the subpackages `distill` and `generate` keep their names.)
"""

__version__ = "0.1.0"

# name -> (module, attribute): the public API, imported lazily
_API = {
    "load_config": ("crossdistill.config", "load_config"),
    "Stage1Config": ("crossdistill.bridge.stage1", "Stage1Config"),
    "train_bridge": ("crossdistill.bridge.stage1", "train_bridge"),
    "Stage2Config": ("crossdistill.distill.stage2", "Stage2Config"),
    "train_student": ("crossdistill.distill.stage2", "distill"),
    "load_denoiser": ("crossdistill.denoisers", "load_denoiser"),
    "GenerateConfig": ("crossdistill.generate", "GenerateConfig"),
    "generate_images": ("crossdistill.generate", "generate"),
    "evaluate": ("crossdistill.eval.harness", "evaluate"),
    "push": ("crossdistill.hub", "push"),
    "CrossdistillError": ("crossdistill.errors", "CrossdistillError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'crossdistill' has no attribute {name!r}")
