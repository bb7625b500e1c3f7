"""Latent spaces: constants from the VAE config, shapes, Flux packing; full-size presets."""

import pytest
import torch

from crossdistill.denoisers import build_denoiser

# published normalisation constants, read back from the presets' VAE configs
CONSTANTS = {"sd15": (0.18215, 0.0, 1), "sdxl": (0.13025, 0.0, 1), "sd35-large": (1.5305, 0.0609, 1),
             "sd35-medium": (1.5305, 0.0609, 1), "flux-dev": (0.3611, 0.1159, 2)}
# published parameter counts of the denoising networks (billions) and latent shapes
PARAMS = {"sd15": 0.860, "sdxl": 2.567, "sd35-medium": 2.24, "sd35-large": 8.06, "flux-dev": 11.9}
LATENT = {"sd15": (4, 64, 64), "sdxl": (4, 128, 128), "sd35-medium": (16, 128, 128),
          "sd35-large": (16, 128, 128), "flux-dev": (16, 128, 128)}


@pytest.fixture(scope="module")
def full():
    return {n: build_denoiser(n, device="meta") for n in PARAMS}


@pytest.mark.parametrize("name", list(PARAMS))
def test_full_size_presets_on_meta(full, name):
    den = full[name]
    n = sum(p.numel() for p in den.model.parameters()) / 1e9
    assert n == pytest.approx(PARAMS[name], rel=0.01)
    assert all(p.device.type == "meta" for p in den.model.parameters())
    res = den.defaults.resolution
    assert den.latent_shape(res, res) == LATENT[name]
    scale, shift, patch = CONSTANTS[name]
    assert (den.space.scale, den.space.shift, den.space.patch) == (scale, shift, patch)


def test_real_pairs_student_512_teacher_1024(full):
    student = full["sd15"].latent_shape(512, 512)
    for teacher in ("sd35-large", "flux-dev", "sdxl"):
        t = full[teacher].latent_shape(1024, 1024)
        assert t[1] // student[1] == 2  # 64x64 student latents map to 128x128 teacher latents
    assert full["flux-dev"].space.pack(torch.empty(1, 16, 128, 128, device="meta")).shape == (1, 4096, 64)


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sd3", "tiny-flux"])
def test_encode_decode_shapes(tiny_models, name):
    space = tiny_models(name).space
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = space.encode(x)
    assert z.shape == (2,) + space.latent_shape(32, 32)
    assert space.decode(z).shape == x.shape


def test_normalisation_inverts(tiny_models):
    space = tiny_models("tiny-flux").space
    raw = torch.randn(2, 16, 8, 8)
    assert torch.allclose(space.denormalize(space.normalize(raw)), raw, atol=1e-6)
    assert torch.allclose(space.normalize(raw), (raw - 0.1159) * 0.3611)


def test_flux_pack_roundtrip(tiny_models):
    space = tiny_models("tiny-flux").space
    z = torch.randn(3, 16, 8, 12)
    tokens = space.pack(z)
    assert tokens.shape == (3, 4 * 6, 64)
    assert torch.equal(space.unpack(tokens, 8, 12), z)
    # token 0 is the top-left 2x2 patch, channel-major
    assert torch.equal(tokens[0, 0].view(16, 2, 2), z[0, :, :2, :2])
