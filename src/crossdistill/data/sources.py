"""Where training images and prompts come from.

Images: `renders` (the reference renders of the Teacher's domain, see `domains`), `folder`
(PNG/JPEG files, prompts from a manifest.jsonl when present), `hf` (a Hugging Face
dataset: image column + optional caption column) or `teacher` (data-free: sampled from
the Teacher with its own sampler). Prompts: `domain` (every prompt of the model's domain)
or a text file with one prompt per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CrossdistillError, choice_error
from .images import to_batch

SOURCES = ("renders", "folder", "hf", "teacher")


@dataclass
class DataConfig:
    source: str = "renders"        # renders | folder | hf (a Hugging Face dataset) | teacher (data-free)
    domain: str | None = None      # "renders": whose renders (default: the Teacher's domain)
    path: str | None = None        # "folder": images (+ manifest.jsonl for prompts); "hf": dataset id or path
    split: str = "train"           # "hf": split
    image_column: str = "image"    # "hf": column holding images
    caption_column: str | None = None   # "hf": column holding prompts (None: empty prompts)
    images: int = 4000             # images whose latents are cached for training
    seed: int = 12345              # render seed / teacher sampling seed

    def validate(self):
        if self.source not in SOURCES:
            raise choice_error("data.source", self.source, SOURCES, renamed={"shapes": "renders"})
        if self.source in ("folder", "hf") and not self.path:
            raise CrossdistillError(f"data.source={self.source} needs data.path")
        if self.images < 1:
            raise CrossdistillError(f"data.images must be >= 1, got {self.images}")
        return self


def domain_of(model) -> "object | None":
    """The registered domain a model names in its defaults, or None (a real model)."""
    from ..domains import get

    name = model.defaults.domain
    return None if name is None else get(name)


def load_images(cfg: DataConfig, teacher, t_res: int, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """n images at the Teacher's resolution in [-1, 1] and their prompts."""
    if cfg.source == "renders":
        return _renders(cfg.domain, teacher, n, seed)
    if cfg.source == "folder":
        return _folder_images(Path(cfg.path), t_res, n)
    if cfg.source == "hf":
        return _hf_images(cfg, t_res, n)
    return _teacher_images(teacher, t_res, n, seed)


def _renders(name: str | None, teacher, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    from ..domains import get
    from ..domains.data import SceneDataset

    domain = get(name) if name is not None else domain_of(teacher)
    if domain is None:
        raise CrossdistillError("data.source=renders needs data.domain (e.g. shapes) or a Teacher of a domain "
                                "(e.g. shapes-teacher); for a real Teacher use folder, hf or teacher")
    ds = SceneDataset(domain, n, domain.size, seed, domain.prompts())
    items = [ds[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), [p for _, p in items]


def _folder_images(folder: Path, t_res: int, n: int) -> tuple[torch.Tensor, list[str]]:
    from PIL import Image

    if not folder.is_dir():
        raise CrossdistillError(f"data.path {folder} is not a folder")
    manifest = folder / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()][:n]
        files, prompts = [folder / r["file"] for r in rows], [r.get("prompt", "") for r in rows]
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:n]
        prompts = [""] * len(files)
    if not files:
        raise CrossdistillError(f"no images in {folder}")
    return to_batch([Image.open(f) for f in files], t_res), prompts


def _hf_images(cfg: DataConfig, t_res: int, n: int) -> tuple[torch.Tensor, list[str]]:
    try:
        import datasets
    except ImportError:
        raise CrossdistillError("data.source=hf needs the `datasets` package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as e:
        raise CrossdistillError(f"cannot load dataset {cfg.path!r} split {cfg.split!r}: "
                                f"{str(e).splitlines()[0][:200]}") from None
    for col in (cfg.image_column, cfg.caption_column):
        if col is not None and col not in ds.column_names:
            raise CrossdistillError(f"dataset {cfg.path!r} has no column {col!r}; columns: {', '.join(ds.column_names)}")
    ds = ds.select(range(min(n, len(ds))))
    prompts = [str(x) for x in ds[cfg.caption_column]] if cfg.caption_column else [""] * len(ds)
    return to_batch(ds[cfg.image_column], t_res), prompts


def _teacher_images(teacher, t_res: int, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Data-free: images sampled from the Teacher with its default sampler, on its
    domain's prompts (a real Teacher without a domain: the empty prompt)."""
    domain = domain_of(teacher)
    base = domain.prompts() if domain is not None else [""]
    prompts = (base * (n // len(base) + 1))[:n]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, 32):
        z = teacher.sample(prompts[i:i + 32], generator=g, height=t_res, width=t_res)
        out.append(teacher.space.decode(z).clamp(-1, 1))
    return torch.cat(out), prompts


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line; blank lines ignored; UTF-8 required."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise CrossdistillError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CrossdistillError(f"prompts file {path} is not UTF-8 (byte {e.start})") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise CrossdistillError(f"prompts file {path} has no prompts")
    return prompts


def read_prompts(spec: str, model=None) -> list[str]:
    """`domain`: every prompt of `model`'s domain; a domain's name (`shapes`, `pairs`):
    every prompt of that domain; otherwise a file, one prompt per line."""
    from ..domains import get, names

    if spec == "domain":
        domain = domain_of(model) if model is not None else None
        if domain is None:
            raise CrossdistillError("prompts=domain needs a model of a domain (e.g. shapes-teacher); name a "
                                    f"domain ({', '.join(names())}) or give a prompts file, one prompt per line")
        return domain.prompts()
    if spec in names():
        return get(spec).prompts()
    return read_prompt_file(Path(spec))


def check_prompts(model, prompts: list[str]) -> None:
    """Every prompt must be inside the grammar of the model's domain (if it has one)."""
    if not prompts:
        raise CrossdistillError("no prompts given (use --prompt or --prompts-file)")
    domain = domain_of(model)
    if domain is not None:
        domain.check_prompts(prompts)


__all__ = ["DataConfig", "SOURCES", "check_prompts", "domain_of", "load_images", "read_prompt_file", "read_prompts"]
