"""Pretraining of a synthetic domain's models (method code: the domain supplies renders,
prompts and its recipe, `Domain.pretrain_recipe`): both VAEs, the Teacher, the Student base
and the metric classifier, from the domain's renders. Every stage is reproducible from the seed, shows a progress
bar, and writes a standard diffusers folder plus `train_log.json` (command, seed, wall
time, final losses). A finished stage is skipped when the command is rerun.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .denoisers import Conditioning, Denoiser, build_denoiser
from .domains import Domain
from .domains.classifier import CONFIG, DomainClassifier
from .domains.data import scene_bank
from .errors import CrossdistillError, choice_error
from .io import atomic_dir
from .presets import build_component
from .train import ema_update
from .train.checkpoint import load_latest, save_checkpoint

STAGES = ("vae-student", "vae-teacher", "teacher", "student-base", "classifier")


def stages_of(domain: Domain) -> tuple[str, ...]:
    """The domain's pretraining stages: STAGES, then each extra Teacher's VAE and Teacher."""
    return STAGES + tuple(s for n in domain.extra_teachers for s in (f"vae-{n}", n))


@dataclass
class StageConfig:
    steps: int
    batch: int
    lr: float


@dataclass
class PretrainConfig:
    seed: int = 0
    scenes: int = 20000                 # rendered training scenes (64 px), shared by all stages
    cfg_dropout: float = 0.1            # prompt -> "" for classifier-free guidance
    ema: float = 0.998
    decay_frac: float = 0.3             # linear LR decay over the last part of a run
    checkpoint_every: int = 250         # denoiser stages: steps between resumable checkpoints
    # denoiser batches: "per_step" draws batch i from a generator seeded (seed, i); "stream"
    # draws every batch from one generator (how the committed shapes-world models were
    # trained); both resume exactly (the stream's state is checkpointed)
    batch_rng: str = "per_step"
    # probability that a Student-base training caption is replaced by the domain's
    # `swapped_caption` (its attributes bound to the wrong objects). 0.5: the base's captions
    # say which colours and shapes a scene holds but not which goes with which, as web
    # alt-text (SD 1.5's data) rarely binds attributes while the Teacher's captions do
    student_caption_swap: float = 0.0
    vae_student: StageConfig = field(default_factory=lambda: StageConfig(1500, 16, 1e-3))
    vae_teacher: StageConfig = field(default_factory=lambda: StageConfig(1200, 16, 1e-3))
    teacher: StageConfig = field(default_factory=lambda: StageConfig(3000, 64, 5e-4))
    student_base: StageConfig = field(default_factory=lambda: StageConfig(750, 64, 5e-4))
    classifier: StageConfig = field(default_factory=lambda: StageConfig(800, 64, 2e-3))

    @classmethod
    def quick(cls, seed: int = 0) -> "PretrainConfig":
        """Budgets for smoke tests: every stage runs end to end in seconds."""
        tiny = lambda: StageConfig(3, 8, 1e-3)   # noqa: E731
        return cls(seed=seed, scenes=300, vae_student=tiny(), vae_teacher=tiny(), teacher=tiny(),
                   student_base=tiny(), classifier=tiny())


def pretrain_config(domain: Domain, seed: int = 0, quick: bool = False) -> PretrainConfig:
    """The domain's recipe (`Domain.pretrain_recipe`, overrides of PretrainConfig's defaults)
    with `seed`; `quick`: the smoke-test budgets instead."""
    from .config import from_dict

    if quick:
        return PretrainConfig.quick(seed)
    return dataclasses.replace(from_dict(PretrainConfig, domain.pretrain_recipe), seed=seed)


def lr_at(step: int, total: int, base: float, decay_frac: float, warmup: int = 50) -> float:
    """Warm-up, constant, then linear decay to 0 over the last `decay_frac` of the run."""
    if step < warmup:
        return base * (step + 1) / warmup
    start = int(total * (1 - decay_frac))
    if step < start:
        return base
    return base * max(0.0, (total - step) / max(1, total - start))


def _images(bank: np.ndarray, idx: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(bank[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    f = bank.shape[1] // size
    return F.avg_pool2d(x, f) if f > 1 else x


def _log(out: Path, name: str, cfg, t0: float, losses: list[float], extra: dict | None = None) -> None:
    tail = losses[-100:]
    (out / "train_log.json").write_text(json.dumps({
        "stage": name, "command": " ".join(sys.argv), "seed": cfg.seed,
        "wall_time_s": round(time.time() - t0, 1), "final_loss_mean_last100": float(np.mean(tail)),
        "config": asdict(cfg), **(extra or {})}, indent=1))


def _stream_seed(cfg: "PretrainConfig", stream: int) -> int:
    """The seed of a stage's weights and batches; stream 0 (the domain's own models): `cfg.seed`."""
    return cfg.seed + 1_000_003 * stream


# -- VAEs ----------------------------------------------------------------------------
def train_vae(domain: Domain, which: str, bank: np.ndarray, cfg: PretrainConfig, out: Path,
              preset_name: str | None = None, stream: int = 0) -> None:
    """Autoencoder (MSE + tiny KL), then the latent normalisation measured on the data:
    Student space scale only (SD 1.5 style), Teacher space shift and scale (SD 3 / Flux style).
    `preset_name`: the preset whose VAE this is (default: the domain's Teacher or Student);
    `stream` > 0 draws other initial weights and batches (an extra Teacher's own VAE)."""
    preset = domain.preset(preset_name or (domain.teacher if which == "teacher" else domain.student))
    size = preset["defaults"]["resolution"]
    st = cfg.vae_teacher if which == "teacher" else cfg.vae_student
    torch.manual_seed(_stream_seed(cfg, stream))
    vae = build_component(preset["components"]["vae"]).train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=st.lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 1] + ([stream] if stream else []))
    losses, t0 = [], time.time()
    bar = tqdm(range(st.steps), desc=f"vae-{which}")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, st.steps, st.lr, cfg.decay_frac)
        x = _images(bank, rng.integers(0, len(bank), st.batch), size)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = F.mse_loss(rec, x)
        loss = mse + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(mse.item())
        bar.set_postfix(mse=f"{np.mean(losses[-20:]):.5f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        n = min(2000, len(bank))
        z = torch.cat([vae.encode(_images(bank, np.arange(i, min(i + 250, n)), size)).latent_dist.mode()
                       for i in range(0, n, 250)])
    if which == "teacher":
        vae.register_to_config(shift_factor=float(z.mean()), scaling_factor=float(1 / z.std()))
    else:
        vae.register_to_config(scaling_factor=float(1 / z.std()))
    with atomic_dir(out, overwrite=True) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        _log(tmp, f"vae-{preset_name or which}", cfg, t0, losses, {"final_mse": float(np.mean(losses[-100:]))})


# -- denoisers ---------------------------------------------------------------------------
def encode_table(den: Denoiser, prompts: list[str]) -> Conditioning:
    """Conditioning of every prompt, plus the empty prompt as the last row."""
    with torch.no_grad():
        cond = den.encode_prompt(prompts)
        return cond.cat(den.uncond(1))


def encode_bank(den: Denoiser, bank: np.ndarray, size: int, batch: int = 250) -> torch.Tensor:
    """Normalised latents of every bank image (cached once: encoding is the slow step)."""
    with torch.no_grad():
        return torch.cat([den.space.encode(_images(bank, np.arange(i, min(i + batch, len(bank))), size))
                          for i in tqdm(range(0, len(bank), batch), desc="encoding latents")])


class _GeneratorState(torch.nn.Module):
    """A torch.Generator's state as a buffer, so checkpoints carry it like weights."""

    def __init__(self, gen: torch.Generator):
        super().__init__()
        self.register_buffer("state", gen.get_state())


def train_denoiser(domain: Domain, which: str, bank: np.ndarray, prompts: list[str], vae_dir: Path,
                   cfg: PretrainConfig, out: Path, preset_name: str | None = None, stream: int = 0) -> None:
    """`preset_name`: the preset to train (default: the domain's Teacher or Student base), on
    the budget of `which`; `stream` > 0: other initial weights and batches (an extra Teacher)."""
    from diffusers import AutoencoderKL

    preset = domain.preset(preset_name or (domain.teacher if which == "teacher" else domain.student))
    st = cfg.teacher if which == "teacher" else cfg.student_base
    seed = _stream_seed(cfg, stream)
    den = build_denoiser(preset, seed=seed)
    den = den.with_components(vae=AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False))
    size = den.defaults.resolution
    latents = encode_bank(den, bank, size)
    grammar = domain.prompts()
    where = {p: i for i, p in enumerate(grammar)}   # a dict, not list.index: linear in the prompts
    pid = torch.tensor([where[p] for p in prompts])
    table = encode_table(den, grammar)
    empty = len(grammar)
    swap = cfg.student_caption_swap if which == "student-base" else 0.0
    swapped = torch.tensor([where[domain.swapped_caption(p)] for p in grammar]) if swap else None

    model = den.model.train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=st.lr, weight_decay=0.01)
    # resumable: checkpoints beside the stage folder; rerunning the command continues
    ckpt_dir = out.parent / f".{out.name}.ckpt"
    stream = torch.Generator().manual_seed(seed)
    rng = _GeneratorState(stream)
    start, name_ = load_latest(ckpt_dir, {"model": model, "ema": ema, "rng": rng}, {"opt": opt})
    stream.set_state(rng.state.clone())
    if name_:
        print(f"{which}: resuming from {ckpt_dir / name_} (step {start})")
    density = "logit_normal" if den.parameterization == "flow" else "uniform"
    losses, t0 = [], time.time()
    bar = tqdm(range(start, st.steps), desc=which, initial=start, total=st.steps)
    for step in bar:
        gen = stream if cfg.batch_rng == "stream" else torch.Generator().manual_seed(seed * 1_000_003 + step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, st.steps, st.lr, cfg.decay_frac)
        idx = torch.randint(0, len(latents), (st.batch,), generator=gen)
        rows = pid[idx].clone()
        if swap:   # drawn only when on, so every other stage's batches stay as they were
            flip = torch.rand(st.batch, generator=gen) < swap
            rows[flip] = swapped[rows[flip]]
        rows[torch.rand(st.batch, generator=gen) < cfg.cfg_dropout] = empty
        loss, _ = den.loss(latents[idx], table.index(rows), gen, density=density)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, cfg.ema, step)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < st.steps:
            rng.state.copy_(stream.get_state())
            save_checkpoint(ckpt_dir, step + 1, {"model": model, "ema": ema, "rng": rng}, {"opt": opt})
    den = den.with_components(**{den.backbone: ema})
    with atomic_dir(out, overwrite=True) as tmp:
        den.save_pretrained(tmp)
        _log(tmp, preset_name or which, cfg, t0, losses, {"resumed_from_step": start})
    shutil.rmtree(ckpt_dir, ignore_errors=True)


# -- feature network ---------------------------------------------------------------------
def labels(domain: Domain, prompts: list[str]) -> dict[str, torch.Tensor]:
    rows = [domain.labels(p) for p in prompts]
    return {k: torch.tensor([r[k] for r in rows]) for k in domain.label_sizes()}


def train_classifier(domain: Domain, bank: np.ndarray, prompts: list[str], cfg, out: Path) -> None:
    st = cfg.classifier
    torch.manual_seed(cfg.seed)
    net = DomainClassifier(domain.label_sizes(), **CONFIG).train()
    y = labels(domain, prompts)
    opt = torch.optim.AdamW(net.parameters(), lr=st.lr)
    rng = np.random.default_rng([cfg.seed, 2])
    losses, t0 = [], time.time()
    bar = tqdm(range(st.steps), desc="classifier")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, st.steps, st.lr, cfg.decay_frac)
        idx = rng.integers(0, len(bank), st.batch)
        x = _images(bank, idx, 32)
        x = x + 0.05 * torch.randn_like(x)   # robustness to generator noise
        out_ = net(x)
        loss = sum(F.cross_entropy(out_[k], y[k][idx]) for k in out_)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    net.eval()
    held, held_prompts = scene_bank(domain, 1000, cfg.seed + 7, progress=False)   # unseen scenes
    with torch.no_grad():
        pred = net(_images(held, np.arange(len(held)), 32))
        yh = labels(domain, held_prompts)
        acc = {k: float((pred[k].argmax(-1) == yh[k]).float().mean()) for k in pred}
    with atomic_dir(out, overwrite=True) as tmp:
        net.save(tmp)
        _log(tmp, "classifier", cfg, t0, losses, {"accuracy_1000_heldout_scenes": acc})


# -- driver ----------------------------------------------------------------------------
def pretrain(domain: Domain, out: Path, stages: list[str] | None = None, cfg: PretrainConfig | None = None,
             threads: int = 1) -> None:
    """Train the stages not yet finished in `out` (a killed denoiser stage resumes from its
    last checkpoint when the same command is rerun)."""
    cfg = cfg or pretrain_config(domain)
    if cfg.batch_rng not in ("per_step", "stream"):
        raise choice_error("batch_rng", cfg.batch_rng, ("per_step", "stream"))
    if not 0 <= cfg.student_caption_swap <= 1:
        raise CrossdistillError(f"student_caption_swap={cfg.student_caption_swap} is not a probability (0 to 1)")
    if cfg.student_caption_swap and domain.swapped_caption(domain.prompts()[0]) is None:
        raise CrossdistillError(f"student_caption_swap={cfg.student_caption_swap}: domain {domain.name!r} has no "
                                "swapped captions (its prompts bind no attributes); use 0")
    every = stages_of(domain)
    stages = stages or list(every)
    for s in stages:
        if s not in every:
            raise choice_error("pretrain stage", s, every)
    from .runtime import set_threads

    set_threads(threads)
    out = Path(out)
    todo = [s for s in stages if not (out / s / "train_log.json").exists()]
    if not todo:
        print(f"all stages done in {out}")
        return
    bank, prompts = scene_bank(domain, cfg.scenes, cfg.seed)
    extras = list(domain.extra_teachers)
    for s in todo:
        if s in extras:   # an extra Teacher: the Teacher's budget, on its own VAE
            train_denoiser(domain, "teacher", bank, prompts, out / f"vae-{s}", cfg, out / s, preset_name=s,
                           stream=1 + extras.index(s))
        elif s.removeprefix("vae-") in extras:
            name = s.removeprefix("vae-")
            train_vae(domain, "teacher", bank, cfg, out / s, preset_name=name, stream=1 + extras.index(name))
        elif s.startswith("vae-"):
            train_vae(domain, s.split("-")[1], bank, cfg, out / s)
        elif s in ("teacher", "student-base"):
            vae = out / ("vae-teacher" if s == "teacher" else "vae-student")
            train_denoiser(domain, s, bank, prompts, vae, cfg, out / s)
        else:
            train_classifier(domain, bank, prompts, cfg, out / s)


def install_artifacts(domain: Domain, out: Path) -> None:
    """Copy finished stage folders into the domain's named artifacts."""
    for stage, name in (("teacher", domain.teacher), ("student-base", domain.student),
                        ("classifier", domain.classifier), *((n, n) for n in domain.extra_teachers)):
        src = Path(out) / stage
        if name is None:
            continue
        if not (src / "train_log.json").exists():
            print(f"skip {name}: stage {stage} not finished in {out}")
            continue
        dst = domain.artifact(name)
        with atomic_dir(dst, overwrite=True) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        print(f"installed {name} -> {dst}")
