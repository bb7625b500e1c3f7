import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY = ["tiny-sd15", "tiny-sdxl", "tiny-sd3", "tiny-sd35", "tiny-flux"]


@pytest.fixture(scope="session")
def tiny_models():
    from crossdistill.denoisers import build_denoiser

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_denoiser(name, seed=0)
        return cache[name]

    return get
