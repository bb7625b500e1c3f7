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

from ..checks import SEED, Checked, accepts
from ..errors import CrossdistillError
from .images import to_batch

SOURCES = ("renders", "folder", "hf", "teacher")


@dataclass
class DataConfig(Checked):
    KEY = "data."
    source: str = accepts("renders", choices=SOURCES)   # renders | folder | hf (a Hugging Face dataset) | teacher
                                                      # (data-free)
    domain: str | None = None      # "renders": whose renders; "teacher": whose prompts (default: the Teacher's domain)
    path: str | None = None        # "folder": images (+ manifest.jsonl for prompts); "hf": dataset id or path;
                                   # "teacher": optional, a dataset whose caption_column holds the captions
    split: str = "train"           # "hf": split
    image_column: str = "image"    # "hf": column holding images
    caption_column: str | None = None   # "hf" / "teacher" with a path: column holding the captions
    captions: str = "domain"       # "teacher" without a path: the captions the Teacher is sampled on:
                                   # "domain" (data.domain's or the Teacher's domain's prompts), a domain's
                                   # name, or a text file (one caption per line)
    images: int = accepts(4000, ge=1, le=10**9)   # images whose latents are cached for training
    seed: int = accepts(12345, **SEED)   # render seed / teacher sampling seed
    shard_size: int = accepts(64, ge=1, le=10**6)   # images per bank shard (stage 1 writes its bank shard by shard)

    def validate(self):
        if self.source in ("folder", "hf") and not self.path:
            raise CrossdistillError(f"data.source={self.source} needs data.path")
        if self.source == "teacher" and self.path and not self.caption_column:
            raise CrossdistillError(f"data.source=teacher with data.path={self.path} samples the Teacher on that "
                                    "dataset's captions: set data.caption_column")
        return self


def domain_of(model) -> "object | None":
    """The registered domain a model names in its defaults, or None (a real model)."""
    from ..domains import get

    name = model.defaults.domain
    return None if name is None else get(name)


class ImageSource:
    """`n` images (at the Teacher's resolution, in [-1, 1]) and their prompts, read by
    index range: image i is the same whoever reads it and in whichever range, so
    processes can each read their own disjoint part."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def read(self, lo: int, hi: int) -> tuple[torch.Tensor, list[str]]:
        raise NotImplementedError

    def prompts(self) -> list[str]:
        """Every image's prompt, without reading an image."""
        raise NotImplementedError


def image_source(cfg: DataConfig, teacher, t_res: int, n: int, seed: int) -> ImageSource:
    if cfg.source == "renders":
        return RenderSource(cfg.domain, teacher, n, seed)
    if cfg.source == "folder":
        return FolderSource(Path(cfg.path), t_res, n)
    if cfg.source == "hf":
        return HfSource(cfg, t_res, n)
    return TeacherSource(teacher, t_res, n, seed, teacher_captions(cfg, teacher))


def load_images(cfg: DataConfig, teacher, t_res: int, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """n images at the Teacher's resolution in [-1, 1] and their prompts, all in memory
    (evaluation sets and the GAN's real images; stage 1 streams `image_source` instead)."""
    src = image_source(cfg, teacher, t_res, n, seed)
    return src.read(0, len(src))


class RenderSource(ImageSource):
    def __init__(self, name: str | None, teacher, n: int, seed: int):
        from ..domains import get
        from ..domains.data import SceneDataset

        domain = get(name) if name is not None else domain_of(teacher)
        if domain is None:
            raise CrossdistillError("data.source=renders needs data.domain (e.g. shapes) or a Teacher of a domain "
                                    "(e.g. shapes-teacher); for a real Teacher use folder, hf or teacher")
        super().__init__(n)
        self.ds = SceneDataset(domain, n, domain.size, seed, domain.prompts())

    def read(self, lo, hi):
        items = [self.ds[i] for i in range(lo, hi)]
        return torch.stack([x for x, _ in items]), [p for _, p in items]

    def prompts(self):
        return [self.ds.scene(i).prompt for i in range(len(self))]


class FolderSource(ImageSource):
    def __init__(self, folder: Path, t_res: int, n: int):
        if not folder.is_dir():
            raise CrossdistillError(f"data.path {folder} is not a folder")
        manifest = folder / "manifest.jsonl"
        if manifest.is_file():
            rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()][:n]
            self.files, self.captions = [folder / r["file"] for r in rows], [r.get("prompt", "") for r in rows]
        else:
            self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:n]
            self.captions = [""] * len(self.files)
        if not self.files:
            raise CrossdistillError(f"no images in {folder}")
        super().__init__(len(self.files))
        self.t_res = t_res

    def read(self, lo, hi):
        from PIL import Image

        return to_batch([Image.open(f) for f in self.files[lo:hi]], self.t_res), self.captions[lo:hi]

    def prompts(self):
        return list(self.captions)


def hf_dataset(path: str, split: str, columns: tuple):
    """A Hugging Face dataset (id or local path) that must hold `columns` (None entries skipped)."""
    try:
        import datasets
    except ImportError:
        raise CrossdistillError("reading a Hugging Face dataset needs the `datasets` package "
                                "(pip install datasets)") from None
    try:
        ds = datasets.load_dataset(path, split=split)
    except Exception as e:
        raise CrossdistillError(f"cannot load dataset {path!r} split {split!r}: "
                                f"{str(e).splitlines()[0][:200]}") from None
    for col in columns:
        if col is not None and col not in ds.column_names:
            raise CrossdistillError(f"dataset {path!r} has no column {col!r}; columns: {', '.join(ds.column_names)}")
    return ds


def hf_captions(path: str, split: str, column: str) -> list[str]:
    """The non-empty strings of one column of a dataset (only that column is read)."""
    ds = hf_dataset(path, split, (column,)).select_columns([column])
    captions = [str(x).strip() for x in ds[column] if x is not None and str(x).strip()]
    if not captions:
        raise CrossdistillError(f"dataset {path!r} column {column!r} holds no captions")
    return captions


class HfSource(ImageSource):
    """A Hugging Face dataset (memory-mapped Arrow): only the rows read are decoded."""

    def __init__(self, cfg: DataConfig, t_res: int, n: int):
        self.ds = hf_dataset(cfg.path, cfg.split, (cfg.image_column, cfg.caption_column))
        self.cfg, self.t_res = cfg, t_res
        super().__init__(min(n, len(self.ds)))

    def read(self, lo, hi):
        rows = self.ds.select(range(lo, hi))
        col = self.cfg.caption_column
        prompts = [str(x) for x in rows[col]] if col else [""] * (hi - lo)
        return to_batch(rows[self.cfg.image_column], self.t_res), prompts

    def prompts(self):
        col = self.cfg.caption_column
        if not col:
            return [""] * len(self)
        return [str(x) for x in self.ds.select_columns([col]).select(range(len(self)))[col]]


def teacher_captions(cfg: DataConfig, teacher) -> list[str]:
    """What the data-free source samples the Teacher on: a dataset's caption column, a
    prompts file, or a domain's prompts. Never the empty prompt: the Bridge's attention
    fidelity reads the Teacher's maps on these captions' tokens."""
    if cfg.path:
        return hf_captions(cfg.path, cfg.split, cfg.caption_column)
    spec = cfg.domain if cfg.captions == "domain" and cfg.domain is not None else cfg.captions
    if spec == "domain" and domain_of(teacher) is None:
        raise CrossdistillError("data.source=teacher samples the Teacher on captions: set data.captions to a text "
                                "file (one caption per line) or data.path + data.caption_column (a Hugging Face "
                                "dataset)")
    return read_prompts(spec, teacher)


class TeacherSource(ImageSource):
    """Data-free: images sampled from the Teacher with its default sampler, caption i
    being captions[i % len(captions)]; each block of `batch` images has its own seed."""

    batch = 16

    def __init__(self, teacher, t_res: int, n: int, seed: int, captions: list[str]):
        super().__init__(n)
        self.teacher, self.t_res, self.seed, self.captions = teacher, t_res, seed, captions

    def prompts(self):
        return [self.captions[i % len(self.captions)] for i in range(len(self))]

    def read(self, lo, hi):
        out, prompts = [], [self.captions[i % len(self.captions)] for i in range(lo, hi)]
        for start in range(lo, hi, self.batch):
            stop = min(hi, start + self.batch)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
            z = self.teacher.sample(prompts[start - lo:stop - lo], generator=g, height=self.t_res, width=self.t_res)
            out.append(self.teacher.space.decode(z).clamp(-1, 1).float().cpu())
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


__all__ = ["DataConfig", "ImageSource", "SOURCES", "check_prompts", "domain_of", "hf_captions", "hf_dataset",
           "image_source", "load_images", "read_prompt_file", "read_prompts", "teacher_captions"]
