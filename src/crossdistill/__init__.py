"""crossdistill: one-step text-to-image Students from Teachers in a different latent space.

The Python API (imported on first use, so `import crossdistill` stays light):

    from crossdistill import BridgeTrainConfig, DistillConfig, load_config, train_bridge
    from crossdistill.distill import distill            # stage 2 (the subpackage's entry point)
    from crossdistill.generate import generate           # images from any model the project loads
"""

__version__ = "0.1.0"

# name -> (module, attribute): the public API, imported lazily
_API = {
    "load_config": ("crossdistill.config", "load_config"),
    "BridgeTrainConfig": ("crossdistill.bridge.stage1", "BridgeTrainConfig"),
    "train_bridge": ("crossdistill.bridge.stage1", "train_bridge"),
    "DistillConfig": ("crossdistill.distill.config", "DistillConfig"),
    "load_denoiser": ("crossdistill.denoisers", "load_denoiser"),
    "GenerateConfig": ("crossdistill.generate", "GenerateConfig"),
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
