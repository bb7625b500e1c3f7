"""Evaluation of real-model generations: FID against the user's reference images, CLIP
score, and HPSv2 / ImageReward / HPSv3 when their packages and weights are installed.

FID follows clean-fid's conventions: every image, generated or reference, is read as
8-bit RGB and resized to the feature network's input size with PIL bicubic in float32,
one channel at a time, then normalised as the network expects; the statistic is the
Frechet distance of the float64 feature mean and covariance (`fid.py`, the same code the
shapes world uses). The feature network (`features`) is either the FID's own Inception-v3
(a `.safetensors` file converted once from pytorch-fid's weights, `inception.py`; reported
as `fid_inception`), or a local transformers vision model in safetensors: a CLIP image
tower (clean-fid's CLIP-FID mode, the default, as the CLIP model is loaded for the CLIP
score anyway) or DINOv2 (EDM2's FD-DINOv2), reported as `fid_<model name>`.

CLIP score follows torchmetrics: 100 * max(cos(image, text), 0), averaged over images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CrossdistillError, choice_error
from . import fid as fidlib
from .prdc import K, in_prompt_diversity, prdc

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SCORERS = ("hpsv2", "imagereward", "hpsv3")
METRICS = ("domain", "fid", "clip", *SCORERS)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def parse_metrics(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    for m in names:
        if m not in METRICS:
            raise choice_error("--metrics", m, METRICS, renamed={"shapes": "domain"})
    if not names:
        raise CrossdistillError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    return names


def reference_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CrossdistillError(f"reference folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise CrossdistillError(f"reference folder {folder} holds {len(files)} images "
                                f"({'/'.join(IMAGE_SUFFIXES)}); FID needs at least 2")
    return files


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise CrossdistillError(f"cannot read image {path}: {str(e).splitlines()[0][:120]}") from None


def clean_resize(img: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's resize: PIL bicubic on each channel as float32, clipped to [0, 255]."""
    from PIL import Image

    chans = [np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F")
                        .resize((size, size), resample=Image.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255)


def resized(images: list[np.ndarray], size: int) -> torch.Tensor:
    """(B, 3, size, size) float in [0, 255], clean-resized."""
    return torch.from_numpy(np.stack([clean_resize(im, size) for im in images])).permute(0, 3, 1, 2).float()


# -- networks ------------------------------------------------------------------------------

def _load_transformers(spec: str, cls_name: str = "AutoModel"):
    """A local folder (or a cached hub id) holding a transformers model in safetensors."""
    import transformers

    path = Path(spec)
    if not path.is_dir() and (path.exists() or spec.startswith((".", "/")) or spec.count("/") != 1):
        raise CrossdistillError(f"model folder not found: {spec}")
    try:
        model = getattr(transformers, cls_name).from_pretrained(spec, use_safetensors=True)
    except Exception as e:   # offline / no cache / no safetensors: one line
        raise CrossdistillError(f"cannot load {spec!r} as a transformers model with safetensors weights "
                                f"(local folder or cached hub id; {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160]})") from None
    return model.eval().requires_grad_(False)


def _mean_std(spec: str) -> tuple[tuple, tuple]:
    f = Path(spec) / "preprocessor_config.json"
    if f.is_file():
        cfg = json.loads(f.read_text())
        if "image_mean" in cfg and "image_std" in cfg:
            return tuple(cfg["image_mean"]), tuple(cfg["image_std"])
    return CLIP_MEAN, CLIP_STD


def _as_tensor(out) -> torch.Tensor:
    if torch.is_tensor(out):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise CrossdistillError(f"the network returned {type(out).__name__} without pooled features")


class VisionFeatures:
    """Images (uint8 HWC arrays) -> pooled features of a transformers vision model."""

    def __init__(self, spec: str, device: torch.device, model=None):
        self.model = (model or _load_transformers(spec)).to(device)
        cfg = self.model.config
        self.size = int(getattr(getattr(cfg, "vision_config", cfg), "image_size", 224))
        mean, std = _mean_std(spec)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.device = device

    def pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        return ((resized(images, self.size) / 255 - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        x = self.pixels(images)
        if hasattr(self.model, "get_image_features"):
            return _as_tensor(self.model.get_image_features(pixel_values=x)).float()
        return _as_tensor(self.model(pixel_values=x)).float()


class InceptionFeatures:
    """The FID's Inception-v3 pool3 features: clean resize to 299, [0, 255] -> [-1, 1]."""

    def __init__(self, path: str, device: torch.device):
        from .inception import SIZE, load_inception

        self.model, self.size, self.device = load_inception(Path(path), device), SIZE, device

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        return self.model((resized(images, self.size) / 255 * 2 - 1).to(self.device)).float()


def feature_net(spec: str, device: torch.device):
    """`--features`: a .safetensors file is the FID Inception-v3, a folder a transformers model."""
    if spec.endswith(".safetensors"):
        return InceptionFeatures(spec, device)
    return VisionFeatures(spec, device)


class ClipScore:
    """torchmetrics' CLIP score: 100 * max(cos(image, text), 0) per image."""

    def __init__(self, spec: str, device: torch.device):
        from transformers import AutoTokenizer

        self.images = VisionFeatures(spec, device, _load_transformers(spec, "CLIPModel"))
        self.model = self.images.model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec)
        except Exception as e:
            raise CrossdistillError(f"cannot load the tokenizer of {spec!r} ({type(e).__name__})") from None

    @torch.no_grad()
    def __call__(self, image_features: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Per-image scores from the image features `self.images` gave (shared with FID)."""
        tok = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.images.device)
        t = _as_tensor(self.model.get_text_features(**tok)).float()
        cos = torch.nn.functional.cosine_similarity(image_features.to(t.device), t, dim=-1)
        return 100 * cos.clamp(min=0)


# -- human-preference scorers (their own packages and weights) -------------------------------

SCORER_PACKAGES = {"hpsv2": ("hpsv2", "hpsv2"), "imagereward": ("ImageReward", "image-reward"),
                   "hpsv3": ("hpsv3", "hpsv3")}   # metric: (module, pip package)


def check_scorers(names) -> None:
    """A one-line error for a preference scorer whose package is not installed."""
    import importlib.util

    for name in names:
        module, package = SCORER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise CrossdistillError(f"{name} needs the {package} package; install it with `pip install {package}` "
                                    f"and make its weights available locally, or leave {name} out of --metrics")


def preference_scores(name: str, paths: list[Path], prompts: list[str], device: torch.device) -> list[float]:
    """HPSv2 / ImageReward / HPSv3 through their own packages (which load their own
    checkpoint formats; they run only when named in --metrics)."""
    check_scorers([name])
    try:
        if name == "hpsv2":
            import hpsv2

            return [float(hpsv2.score([str(p)], prompt, hps_version="v2.1")[0]) for p, prompt in zip(paths, prompts)]
        if name == "imagereward":
            import ImageReward

            model = ImageReward.load("ImageReward-v1.0", device=str(device))
            return [float(model.score(prompt, [str(p)])) for p, prompt in zip(paths, prompts)]
        from hpsv3 import HPSv3RewardInferencer

        inferencer = HPSv3RewardInferencer(device=str(device))
        with torch.no_grad():
            rewards = inferencer.reward(prompts=prompts, image_paths=[str(p) for p in paths])
        return [float(r[0]) for r in rewards]
    except Exception as e:   # weights not downloadable offline, wrong versions: one line
        raise CrossdistillError(f"{name} could not run ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                                f"its weights must be available locally") from None


# -- the evaluation ---------------------------------------------------------------------------

@dataclass
class ScaleConfig:
    metrics: tuple[str, ...] = ("fid", "clip")
    reference: Path | None = None               # image folder for FID
    features: str | None = None                 # FID feature network (default: the CLIP model's image tower)
    clip_model: str = "openai/clip-vit-large-patch14"
    batch: int = 32


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _feature_batches(paths: list[Path], batch: int, desc: str):
    from tqdm.auto import tqdm

    for i in tqdm(range(0, len(paths), batch), desc=desc, disable=len(paths) <= batch):
        yield [read_rgb(p) for p in paths[i:i + batch]]


def _net_identity(spec: str) -> str:
    """The feature network for the cache key: its name, and its weight files' size and mtime."""
    path = Path(spec)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors")) if path.is_dir() else []
    return "|".join([str(path.resolve()) if files else spec] +
                    [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files])


def _cache_dir() -> Path:
    return Path(os.environ.get("CROSSDISTILL_CACHE", Path.home() / ".cache" / "crossdistill")) / "fid-stats"


PRDC_MAX = 10_000   # reference features kept for precision / recall (Naeem et al. use 10k a side)


def reference_stats(refs: list[Path], net, features: str, batch: int) -> tuple[np.ndarray, np.ndarray, int, torch.Tensor, bool]:
    """(mean, covariance, n, sample, cached) of the reference images' features; `sample`: the
    features of at most PRDC_MAX of them (evenly spaced), for precision / recall. Cached under
    $CROSSDISTILL_CACHE (default ~/.cache/crossdistill) by feature network and the folder's
    files (path, size, mtime): a changed folder or network is recomputed."""
    h = hashlib.sha256(features.encode())
    for p in refs:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    path = _cache_dir() / f"{h.hexdigest()[:32]}-v2.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["mu"], z["sigma"], int(z["n"]), torch.from_numpy(z["sample"]), True
        except Exception:   # unreadable cache: recompute
            pass
    # running sums: memory holds one batch of features and the sample, whatever the folder's size
    keep = set(np.linspace(0, len(refs) - 1, min(len(refs), PRDC_MAX)).round().astype(int).tolist())
    total, outer, sample, n = 0.0, 0.0, [], 0
    for images in _feature_batches(refs, batch, "reference features"):
        f = net(images).double().cpu()
        total, outer = total + f.sum(0), outer + f.T @ f
        sample += [f[i - n].float() for i in range(n, n + len(f)) if i in keep]
        n += len(f)
    if n < 2:
        raise ValueError("FID needs at least 2 images")
    mu = total / n
    mu, sigma = mu.numpy(), ((outer - n * torch.outer(mu, mu)) / (n - 1)).numpy()
    sample = torch.stack(sample)
    from ..io import atomic_file

    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, n=n, sample=sample.numpy())
    return mu, sigma, n, sample, False


def _feature_name(spec: str) -> str:
    return Path(spec).name.replace("-", "_").lower() or "features"


def _features(paths: list[Path], net, batch: int, desc: str) -> torch.Tensor:
    return torch.cat([net(images) for images in _feature_batches(paths, batch, desc)])


def evaluate_scale(paths: list[Path], prompts: list[str], cfg: ScaleConfig) -> dict:
    """Metrics for generated images `paths` with their `prompts`."""
    device, metrics = _device(), {}
    wanted = set(cfg.metrics)
    check_scorers(n for n in SCORERS if n in wanted)   # cheap checks first, before any network loads
    if "fid" in wanted:
        if cfg.reference is None:
            raise CrossdistillError("fid needs --reference DIR (a folder of real images)")
        refs = reference_images(cfg.reference)
    clip = ClipScore(cfg.clip_model, device) if "clip" in wanted or ("fid" in wanted and not cfg.features) else None
    # the generated images' CLIP features, computed once when FID (default) and CLIP score both use them
    clip_feats = _features(paths, clip.images, cfg.batch, "CLIP image features") if clip is not None else None
    if "fid" in wanted:
        spec = cfg.features or cfg.clip_model
        net = feature_net(cfg.features, device) if cfg.features else clip.images
        name = "inception" if isinstance(net, InceptionFeatures) else _feature_name(spec)
        feats = clip_feats if clip is not None and net is clip.images else _features(paths, net, cfg.batch, "generated features")
        mu_r, sigma_r, n_r, sample, cached = reference_stats(refs, net, _net_identity(spec), cfg.batch)
        metrics[f"fid_{name}"] = fidlib.frechet_distance(*fidlib.moments(feats.cpu()), mu_r, sigma_r)
        metrics.update(fid_features=spec, n_reference=n_r, reference_stats="cached" if cached else "computed")
        step = -(-len(feats) // PRDC_MAX)   # at most PRDC_MAX generated features too
        if min(len(feats[::step]), len(sample)) > K:
            metrics[f"prdc_{name}"] = prdc(sample.to(feats.device), feats[::step])
        space = (name, feats)
    else:
        space = (_feature_name(cfg.clip_model), clip_feats) if clip_feats is not None else None
    if space is not None and len(set(prompts)) < len(prompts):   # variety among each prompt's images (in the
        metrics[f"diversity_{space[0]}"] = in_prompt_diversity(space[1].cpu(), prompts)   # same space)
    if "clip" in wanted:
        scores = torch.cat([clip(clip_feats[i:i + cfg.batch], prompts[i:i + cfg.batch])
                            for i in range(0, len(paths), cfg.batch)])
        metrics["clip_score"] = scores.mean().item()
        metrics["clip_model"] = cfg.clip_model
    for name in SCORERS:
        if name in wanted:
            metrics[name] = float(np.mean(preference_scores(name, paths, prompts, device)))
    return metrics
