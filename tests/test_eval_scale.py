"""Evaluation at scale through its real code path, with small local networks: a tiny
random CLIP (transformers, safetensors) stands in for the FID feature network and the CLIP
scorer; the real-model generations come from a tiny SD 1.5 pipeline."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from crossdistill.eval import fid as fidlib
from crossdistill.eval.scale import ScaleConfig, VisionFeatures, clean_resize, evaluate_scale



@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, tiny_pair):
    from transformers import CLIPConfig, CLIPModel

    root = tmp_path_factory.mktemp("clip") / "tiny-clip"
    torch.manual_seed(0)
    tok = json.loads((tiny_pair / "student" / "text_encoder" / "config.json").read_text())
    cfg = CLIPConfig(text_config=dict(vocab_size=tok["vocab_size"], hidden_size=32, intermediate_size=37,
                                      num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                      bos_token_id=tok["bos_token_id"], eos_token_id=tok["eos_token_id"],
                                      pad_token_id=tok["pad_token_id"]),
                     vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4),
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(root, safe_serialization=True)
    shutil.copytree(tiny_pair / "student" / "tokenizer", root, dirs_exist_ok=True)
    return root


def _folder(path, images, prompts):
    path.mkdir(parents=True)
    with open(path / "manifest.jsonl", "w") as f:
        for i, (im, p) in enumerate(zip(images, prompts)):
            Image.fromarray(im).save(path / f"{i:05d}.png")
            f.write(json.dumps({"file": f"{i:05d}.png", "prompt": p}) + "\n")
    return path


def _images(seed, n=12, size=48, bright=0):
    rng = np.random.default_rng(seed)
    return [np.clip(rng.integers(0, 200, (size, size, 3)) + bright, 0, 255).astype(np.uint8) for _ in range(n)]


PROMPTS = ["a red circle", "a dog", "a blue square"] * 4


def test_fid_and_clip_score_follow_their_conventions(tiny_clip, tmp_path):
    gens = _folder(tmp_path / "gens", _images(0), PROMPTS)
    same = _folder(tmp_path / "same", _images(0), PROMPTS)
    other = _folder(tmp_path / "other", _images(1, bright=120), PROMPTS)
    paths = sorted(gens.glob("*.png"))
    cfg = ScaleConfig(("fid", "clip"), same, None, str(tiny_clip))
    m_same = evaluate_scale(paths, PROMPTS, cfg)
    m_other = evaluate_scale(paths, PROMPTS, ScaleConfig(("fid", "clip"), other, None, str(tiny_clip)))
    assert abs(m_same["fid_tiny_clip"]) < 1e-6 * max(1.0, m_other["fid_tiny_clip"])   # identical sets: 0
    assert m_other["fid_tiny_clip"] > 1e-3                                          # a shifted set: > 0
    assert m_same["n_reference"] == 12 and m_same["fid_features"] == str(tiny_clip)
    assert m_same["reference_stats"] == "computed"
    again = evaluate_scale(paths, PROMPTS, cfg)   # the reference's statistics come from the cache ...
    assert again["reference_stats"] == "cached" and again["fid_tiny_clip"] == m_same["fid_tiny_clip"]
    Image.fromarray(_images(9, n=1)[0]).save(same / "00000.png")   # ... until the folder changes
    changed = evaluate_scale(paths, PROMPTS, cfg)
    assert changed["reference_stats"] == "computed" and changed["fid_tiny_clip"] > m_same["fid_tiny_clip"]

    # CLIP score as torchmetrics defines it, computed here independently of ClipScore
    from transformers import AutoTokenizer, CLIPModel

    model, tok = CLIPModel.from_pretrained(tiny_clip).eval(), AutoTokenizer.from_pretrained(tiny_clip)
    x = torch.stack([torch.from_numpy(np.stack([np.asarray(Image.fromarray(np.array(Image.open(p))[..., c]
                                                .astype(np.float32), mode="F").resize((32, 32), Image.BICUBIC))
                                                for c in range(3)], 0)) for p in paths]).clamp(0, 255) / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        fi = model.get_image_features(pixel_values=(x - mean) / std)
        ft = model.get_text_features(**tok(PROMPTS, padding=True, return_tensors="pt"))
        fi, ft = (getattr(f, "pooler_output", f) for f in (fi, ft))
    ref = (100 * torch.nn.functional.cosine_similarity(fi, ft, dim=-1).clamp(min=0)).mean().item()
    assert m_same["clip_score"] == pytest.approx(ref, rel=1e-4, abs=1e-4)
    assert 0 <= m_same["clip_score"] <= 100


def test_clean_resize_is_float_bicubic():
    img = _images(3, n=1, size=40)[0]
    out = clean_resize(img, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    uint8_path = np.asarray(Image.fromarray(img).resize((24, 24), Image.BICUBIC)).astype(np.float32)
    assert np.abs(out - uint8_path).max() < 2                  # the same bicubic filter ...
    assert (np.abs(out - out.round()) > 0.01).mean() > 0.5     # ... without 8-bit rounding (clean-fid's point)


def test_fid_uses_the_shared_frechet_code(tiny_clip, tmp_path):
    """The scale FID is fid.frechet_distance on fid.moments of the feature network's features."""
    a, b = _images(4), _images(5, bright=60)
    net = VisionFeatures(str(tiny_clip), torch.device("cpu"))
    ga, gb = _folder(tmp_path / "a", a, PROMPTS), _folder(tmp_path / "b", b, PROMPTS)
    m = evaluate_scale(sorted(ga.glob("*.png")), PROMPTS, ScaleConfig(("fid",), gb, str(tiny_clip), str(tiny_clip)))
    direct = fidlib.fid([a[:5], a[5:]], [b], net)
    assert m["fid_tiny_clip"] == pytest.approx(direct, rel=1e-6)


def _cli(*args):
    from conftest import run_cli

    r = run_cli(*args)
    return r.returncode, r.stdout, r.stderr


def test_cli_generates_then_scores_a_real_model(tiny_pair, tiny_clip, tmp_path):
    ref = _folder(tmp_path / "ref", _images(6, size=32), PROMPTS)
    (tmp_path / "captions.txt").write_text("a red circle\na dog on a beach\n")
    rc, out, err = _cli("eval", "--model", tiny_pair / "student", "--prompts-file", tmp_path / "captions.txt",
                        "--out", tmp_path / "gens", "--n-per-prompt", "2", "--reference", ref,
                        "--clip-model", tiny_clip, "--threads", "1")
    assert rc == 0, err[-2000:]
    m = json.loads((tmp_path / "gens" / "metrics.json").read_text())
    assert m["n_images"] == 4 and m["fid_tiny_clip"] > 0 and 0 <= m["clip_score"] <= 100
    assert "fid_tiny_clip" in out and "clip_score" in out


@pytest.mark.parametrize("args,expect", [
    (["--metrics", "hpsv2"], "pip install hpsv2"),
    (["--metrics", "imagereward"], "pip install image-reward"),
    (["--metrics", "hpsv3"], "pip install hpsv3"),
    (["--metrics", "fid"], "fid needs --reference"),
    (["--metrics", "fidd"], "fidd"),
    (["--metrics", "fid", "--reference", "{tmp}/one"], "holds 1 images"),
    (["--metrics", "clip", "--clip-model", "{tmp}/nowhere"], "model folder not found"),
    (["--metrics", "clip", "--clip-model", "someone/not-cached"], "cannot load 'someone/not-cached'"),
])
def test_cli_scale_errors_are_one_line(tmp_path, args, expect):
    gens = _folder(tmp_path / "gens", _images(7, n=3), PROMPTS[:3])
    (tmp_path / "one").mkdir()
    Image.fromarray(_images(8, n=1)[0]).save(tmp_path / "one" / "a.png")
    rc, out, err = _cli("eval", gens, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert rc == 2 and expect in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (gens / "metrics.json").exists()


def test_fid_inception_architecture_converter_and_fid(tmp_path):
    """The FID Inception-v3 (random weights here: the published ones cannot be downloaded
    on this machine): torchvision's layout has 27,161,264 parameters with its auxiliary
    head (3,326,696) and a 1000-way fc; the FID graph has no auxiliary head and a 1008-way
    fc (+16,392): 23,850,960. The converter takes a plain .pth state dict to safetensors
    (refusing anything else) and `--features FILE.safetensors` scores with it."""
    from crossdistill.eval.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 16_392
    for m in net.modules():   # calibrate the batch-norm statistics so random features are O(1), not 1e-8
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(8, 3, 299, 299) * 2 - 1)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 299, 299)).shape == (2, 2048)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception.pth")
    rc, out, err = _cli("convert-inception", tmp_path / "pt_inception.pth", tmp_path / "inception.safetensors")
    assert rc == 0, err
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    rc, _, err = _cli("convert-inception", tmp_path / "other.pth", tmp_path / "x.safetensors")
    assert rc == 2 and "not the FID Inception-v3" in err and not (tmp_path / "x.safetensors").exists()
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")             # a pickled object, not tensors
    rc, _, err = _cli("convert-inception", tmp_path / "module.pth", tmp_path / "y.safetensors")
    assert rc == 2 and "cannot read" in err and len(err.strip().splitlines()) == 1

    gens = _folder(tmp_path / "gens", _images(0, n=6), PROMPTS[:6])
    ref = _folder(tmp_path / "ref", _images(1, n=6, bright=90), PROMPTS[:6])
    rc, out, err = _cli("eval", gens, "--metrics", "fid", "--reference", ref,
                        "--features", tmp_path / "inception.safetensors", "--threads", "1")
    assert rc == 0, err[-2000:]
    m = json.loads((gens / "metrics.json").read_text())
    from crossdistill.eval.scale import InceptionFeatures

    feats = InceptionFeatures(str(tmp_path / "inception.safetensors"), torch.device("cpu"))
    direct = fidlib.fid([_images(0, n=6)], [_images(1, n=6, bright=90)], feats)
    assert m["fid_inception"] == pytest.approx(direct, rel=1e-6) and m["fid_inception"] > 0
