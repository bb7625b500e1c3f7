"""Stage 2 as a `train.Task` (docs/design.md, "Stage 2").

Per generator step: one generator update along the normalised difference of fake and
real x0 predictions at a Teacher time (`losses.dmd_generator_loss`), backpropagated
through the Bridge and the frozen Student decoder into G; then `fake.updates` updates of
each fake score with the Teacher's own denoising loss on stopgrad(B(G(noise))) (two
time-scale rule), the first on the generator step's own samples (as DMD2 does), the rest
on fresh ones. Each Student latent is decoded once per pass: the Bridges, the manifold
term and a pixel GAN share the pixels.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from ..bridge import Bridge
from ..data.conditioning import PromptConditioner
from ..data.sources import hf_captions, read_prompts
from ..denoisers import Denoiser, load_denoiser
from ..errors import CrossdistillError
from ..train import (Task, average_gradients, default_device, ema_update, local_part, mean_logs, micro_batches,
                     optimizer_step, weights_dtype)
from .adversarial import make_gan
from .config import DistillConfig
from .diagnostics import bridge_drift, latent_diagnostics, reencoded
from .fake import TrainableView, add_lora
from .generator import StudentGenerator, one_step_scheduler
from .regress import BasePairs, draw_rows, regression_loss
from .losses import dmd_disagreement, dmd_generator_loss, latent_std_loss, reencode_loss
from .teachers import TeacherSide, TeacherTimes, make_bridge


def _rows(cond, part: slice):
    """Rows `part` of a batch's conditioning (a micro-batch)."""
    return cond.index(torch.arange(len(cond))[part])


def cast_frozen(student: Denoiser, dtype: torch.dtype | None) -> Denoiser:
    """The Student's frozen parts (VAE, text encoders) in `dtype`; the backbone, which
    becomes the generator, stays as loaded (fp32: it trains)."""
    for name, m in student.modules():
        if name != student.backbone and dtype is not None:
            m.to(dtype=dtype)
    return student


class DistillTask(Task):
    """Built from its objects: the frozen Teacher(s), the Student (its backbone becomes the
    generator), the Bridge(s) between their spaces and the prompts (`from_config` loads
    them). Several Teachers: one Bridge, fake score, guidance and weight each; the
    generator's loss sums their weighted DMD terms."""

    name = "distill"
    SAMPLES = 16   # images per sample grid (train.sample_every)

    def __init__(self, teachers: list[Denoiser], student: Denoiser, bridges: list[Bridge], prompts: list[str],
                 cfg: DistillConfig,
                 conditioners: tuple[PromptConditioner, list[PromptConditioner]] | None = None):
        """`teachers`, `bridges`: in the order of `cfg.teachers`. `conditioners`: the
        (Student's, Teachers') conditioning of a batch's prompts (default: their own text
        encoders, per batch: nothing is encoded ahead)."""
        if not len(teachers) == len(bridges) == len(cfg.teachers):
            raise CrossdistillError(f"stage 2 got {len(teachers)} Teachers and {len(bridges)} Bridges for the "
                                    f"{len(cfg.teachers)} Teachers of its config")
        if len({b.student_res for b in bridges}) > 1:
            raise CrossdistillError(f"the Bridges start from different Student resolutions "
                                    f"{[b.student_res for b in bridges]}: one Student, one resolution")
        if not prompts:
            raise CrossdistillError("stage 2 needs at least one prompt")
        self.cfg, self.student, self.prompts = cfg, student, prompts
        self.device = next(student.model.parameters()).device
        # the resolutions the Bridge was built for are the run's (a Bridge trained at another
        # resolution than the models' defaults carries them)
        self.s_res, self.t_res = bridges[0].student_res, bridges[0].teacher_res
        self.text_s, text_t = conditioners or (PromptConditioner(student), [PromptConditioner(t) for t in teachers])
        self.sides = [TeacherSide(t, b, c, tc, cfg.fake, self.device, i)
                      for i, (t, b, c, tc) in enumerate(zip(teachers, bridges, text_t, cfg.teachers))]
        self.base_student = student   # the Student base as loaded: the regression term's pairs are its samples
        self.pairs = None             # made in `setup` (regress.weight > 0), one share per process
        self.times = TeacherTimes(cfg, len(self.sides))   # its slices' running means stay on the CPU (a few
        # numbers, updated alike and deterministically on every process)
        self._disagreement: list[list[torch.Tensor]] = [[] for _ in self.sides]   # a step's, per Teacher
        if cfg.generator.final_alpha_bar is not None:   # the one-step generator's gentler x0 map
            self.student = student = student.with_components(
                scheduler=one_step_scheduler(student, cfg.generator.final_alpha_bar))
        self.lora = cfg.generator.kind == "lora"
        if self.lora:   # only the adapter trains; the Student base stays as it is
            self.student.model.requires_grad_(False)
            add_lora(self.student, cfg.generator.rank, "student")
        else:
            self.student.model.requires_grad_(True)
        self.student.model.train()
        self.generator = StudentGenerator(self.student, cfg.generator.steps)
        self.ema = copy.deepcopy(self.student.model).eval().requires_grad_(False)
        for side in self.sides:
            side.make_fake()
        self.gan = make_gan(self)
        # the terms of a generator pass that read the decoded Student image
        self.bridges_read_pixels = any(s.bridge.reads_pixels for s in self.sides)
        self.reads_pixels = (self.bridges_read_pixels or self.gan.pixels
                             or (cfg.manifold.weight > 0 and cfg.manifold.kind == "reencode"))

    @classmethod
    def from_config(cls, cfg: DistillConfig, prompts: list[str] | None = None) -> "DistillTask":
        """Load the models named in `cfg` (frozen parts in `cfg.weights_dtype`), the Bridges
        and the prompts (`cfg.prompts` unless given)."""
        device, frozen = default_device(), weights_dtype(cfg.weights_dtype, cast_fp32=False)
        teachers = [load_denoiser(tc.model, dtype=frozen, device=device) for tc in cfg.teachers]
        student = cast_frozen(load_denoiser(cfg.student, device=device), frozen)
        if prompts is None:   # the first Teacher's domain
            prompts = hf_captions(cfg.prompts, cfg.prompts_split, cfg.prompts_column) if cfg.prompts_column else \
                read_prompts(cfg.prompts, teachers[0])
        bridges = [make_bridge(tc.bridge_dir, student, t) for tc, t in zip(cfg.teachers, teachers)]
        return cls(teachers, student, bridges, prompts, cfg)

    # -- what the loop asks of a task -------------------------------------------------
    def shard_targets(self):
        """The Teacher side, sharded under FSDP (train/parallel.py)."""
        self.gan.check_sharding()
        return [m for side in self.sides for m in (side.den.model, side.fake.model)]

    def _fake_params(self, side: TeacherSide):
        """What a Teacher's fake-score optimizer updates (+ a GAN head's)."""
        return list(side.fake_module.parameters()) + self.gan.fake_params(side)

    def _gen_params(self) -> list[torch.nn.Parameter]:
        """What the generator's optimizer updates: the whole backbone, or the LoRA only."""
        return [p for p in self.student.model.parameters() if p.requires_grad]

    def setup(self, acc) -> None:
        """Optimizers, built over the parameters as the loop left them (sharded or not)."""
        self.acc = acc
        for side in self.sides:
            side.fake_module = side.fake.module
        opt_g = self.cfg.train.optimizer(self._gen_params(), self.cfg.lr)
        opts_f = [self.cfg.train.optimizer(self._fake_params(side), self.cfg.fake.lr) for side in self.sides]
        self.opt_g, *opts_f = acc.prepare(opt_g, *opts_f)
        for side, opt in zip(self.sides, opts_f):
            side.opt = opt
        self.gan_opts = self.gan.setup(acc)
        if self.cfg.regress.weight > 0:   # before any update: the base's own samples (a resumed run draws them again)
            if self.cfg.regress.pairs < acc.num_processes:
                raise CrossdistillError(f"regress.pairs={self.cfg.regress.pairs} leaves some of the "
                                        f"{acc.num_processes} processes without pairs; use at least one per process")
            self.pairs = BasePairs(self.base_student, self.prompts, self.cfg.regress, self.s_res,
                                   self.cfg.train.seed + 7919, acc.process_index, acc.num_processes)

    def modules(self):
        gen, ema = (TrainableView(self.student.model), TrainableView(self.ema)) if self.lora else \
            (self.student.model, self.ema)   # a LoRA Student's checkpoints hold the adapter only
        return {"generator": gen, "ema": ema, **{side.key: side.fake_module for side in self.sides},
                **self.gan.modules(), **({"t_bins": self.times.bins} if self.times.adaptive else {})}

    def optimizers(self):
        return {"generator": self.opt_g, **{side.key: side.opt for side in self.sides}, **self.gan_opts}

    def checkpointing_targets(self):
        return [self.student.model] + [m for side in self.sides for m in (side.den.model, side.fake.den.model,
                                                                           side.bridge)]

    # -- one step ---------------------------------------------------------------------
    def _batch(self, gen: torch.Generator):
        """Prompts and the generator's randomness (noise; few-step: each row's step and its
        re-noising) for the global batch; this process keeps its part."""
        n, res = self.cfg.train.batch, self.s_res
        rows = local_part(self.acc, torch.randint(0, len(self.prompts), (n,), generator=gen))
        draw = local_part(self.acc, self.generator.draw(n, self.student.latent_shape(res, res), gen))
        prompts = [self.prompts[i] for i in rows.tolist()]
        return draw.to(self.device), self.text_s(prompts), [side.text(prompts) for side in self.sides]

    def _decoded(self, z: torch.Tensor, needed: bool) -> torch.Tensor | None:
        """D_s(z), once for every term that reads it (None: not `needed`)."""
        return self.student.space.decode(z) if needed else None

    def _fake_update(self, side: TeacherSide, z_hat: torch.Tensor, ct, gen: torch.Generator,
                     step: int) -> dict[str, float]:
        """One update of a Teacher's fake score on stopgrad(B(G(noise))), in its own space."""
        t, eps = self.times.draw(side.den, z_hat, gen, step, self.acc, index=side.index)
        real = self.gan.draw_real(gen, step)
        parts = micro_batches(self.cfg.train, len(z_hat))
        total, rows = 0.0, []
        params = self._fake_params(side)
        with side.fake.active() as fake:   # LoRA on: forward, backward and update
            side.opt.zero_grad(set_to_none=True)
            for part in parts:   # gradient accumulation: each micro-batch's share of the batch mean
                loss_f, loss, ld = self.gan.fake_loss(fake, z_hat, _rows(ct, part), t, eps, real, part)
                self.acc.backward(loss / len(parts))
                total, rows = total + loss.detach() / len(parts), rows + [{"fake": loss_f.item(), **ld}]
            average_gradients(self.acc, params)
            logs = mean_logs(rows)
            lo = optimizer_step(side.opt, total, params, self.cfg.train, step, self.cfg.fake.lr, side.key, logs)
        return side.logs({**logs, **{f"fake_{k}": v for k, v in lo.items()}})

    def _manifold(self, z: torch.Tensor, x: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        if self.cfg.manifold.kind == "std":
            return latent_std_loss(z)
        return reencode_loss(z, reencoded(self.student.space, z, x))

    def _teacher_term(self, side: TeacherSide, z: torch.Tensor, x: torch.Tensor | None, ct, t, eps):
        """One Teacher's DMD term (+ a GAN loss read on its fake pass) for the latents z
        (decoded: x): the loss, its logs and B(z) in that Teacher's space."""
        teacher = side.den
        z_hat = side.bridge(z, clamp=self.cfg.clamp, decoded=x)
        eps = eps.to(z_hat.dtype)
        x_t = teacher.add_noise(z_hat, t, eps)
        with torch.no_grad():
            real = teacher.predict_x0(x_t, t, ct, guidance=side.guidance_at(t), uncond=side.uncond.expand(len(z)))
        fake_x0, gan_loss, lgan = self.gan.fake_x0(side, x_t, t, ct)
        loss, logs = dmd_generator_loss(z_hat, real, fake_x0)
        if self.times.adaptive:   # where real and fake disagree: what the adaptive Teacher times follow
            one = torch.ones(len(t), 1, 1, 1, device=z_hat.device)   # the family's alpha_t, sigma_t at these times
            self._disagreement[side.index].append(dmd_disagreement(
                real, fake_x0, teacher.add_noise(one, t, 0 * one), teacher.add_noise(0 * one, t, one),
                units=self.cfg.t_adaptive.signal))
        if not math.isfinite(logs["dmd"]):   # a Bridge gone non-finite is named, not just its loss (it makes dmd
            bad = (~torch.isfinite(z_hat)).float().mean().item()   # non-finite; nothing to look for otherwise)
            if bad > 0:
                logs["bridge_nonfinite"] = bad
        if gan_loss is not None:
            loss = loss + gan_loss
            logs.update(lgan)
        return loss, side.logs(logs), z_hat

    def _generator_loss(self, noise, cs, cts, noisings):
        """DMD (+ the optional GAN and manifold terms) on one micro-batch: the weighted sum of
        each Teacher's term (`cts`, `noisings`: its conditioning and (t, eps)); returns the
        loss, its logs, the latents z = G(noise), B(z) per Teacher and the decoded pixels."""
        cfg = self.cfg
        z = self.generator(noise, cs)
        x = self._decoded(z, self.reads_pixels)
        loss_g, logs, z_hats = 0.0, {}, []
        for side, ct, (t, eps) in zip(self.sides, cts, noisings):
            loss, lt, z_hat = self._teacher_term(side, z, x, ct, t, eps)
            loss_g = loss_g + side.weight * loss
            logs.update(lt)
            z_hats.append(z_hat)
        gan_g, lgan = self.gan.generator_loss(x)
        if gan_g is not None:
            loss_g = loss_g + gan_g
            logs.update(lgan)
        if cfg.manifold.weight > 0:
            loss_m, lm = self._manifold(z, x)
            loss_g = loss_g + cfg.manifold.weight * loss_m
            logs.update(lm)
        return loss_g, logs, z, z_hats, x

    def _regression(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """regress.weight(step) * ||G(n) - z_base(n)||^2 on pairs drawn by `gen`, backpropagated
        micro-batch by micro-batch; returns the weighted loss and its logs."""
        w = self.cfg.regress.weight_at(step)
        rows = draw_rows(self.acc, len(self.pairs), self.cfg.train.batch, gen)   # drawn even at weight 0: the
        total, logs = torch.zeros((), device=self.device), []                    # same random stream every step
        if w == 0:
            return total, {"regress_weight": 0.0}
        parts = micro_batches(self.cfg.train, len(rows))
        for part in parts:
            idx = rows[part].to(self.pairs.z.device)
            pred = self.generator(self.pairs.noise[idx], self.text_s([self.pairs.prompts[i] for i in idx.tolist()]))
            loss, lr_ = regression_loss(pred, self.pairs.z[idx])
            self.acc.backward(w * loss / len(parts))
            total, logs = total + w * loss.detach() / len(parts), logs + [lr_]
        return total, {**mean_logs(logs), "regress_weight": w}

    def step(self, step: int, gen: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        noise, cs, cts = self._batch(gen)
        noisings = [self.times.draw(side.den, torch.empty(1, *side.bridge.teacher_shape, device=self.device),
                                    gen, step, self.acc, index=side.index, remember=True) for side in self.sides]
        self._disagreement = [[] for _ in self.sides]
        parts = micro_batches(cfg.train, len(noise))
        total, rows, zs, z_hats, pixels = 0.0, [], [], [[] for _ in self.sides], []
        self.opt_g.zero_grad(set_to_none=True)
        for part in parts:   # gradient accumulation: each micro-batch's share of the batch mean
            loss_g, logs, z, zh, x = self._generator_loss(noise[part], _rows(cs, part),
                                                          [_rows(ct, part) for ct in cts],
                                                          [(t[part], eps[part]) for t, eps in noisings])
            self.acc.backward(loss_g / len(parts))
            total, rows = total + loss_g.detach() / len(parts), rows + [logs]
            zs += [z.detach()]
            for acc_, z_hat in zip(z_hats, zh):
                acc_.append(z_hat.detach())
            pixels += [] if x is None else [x.detach()]
        if self.pairs is not None:   # the regression term, on a batch of pairs of its own
            loss_r, lr_ = self._regression(step, gen)
            total, rows = total + loss_r.detach(), rows + [lr_]
        average_gradients(self.acc, self._gen_params())
        logs = mean_logs(rows)
        # adaptive times: this step's measurements, unless the step will be skipped (the fixed rule
        # skips the check, a device sync per step)
        if self.times.adaptive and math.isfinite(float(total)):
            for side, d in zip(self.sides, self._disagreement):
                logs.update(side.logs(self.times.observe(side.index, torch.cat(d), self.acc) if d else {}))
        logs.update(optimizer_step(self.opt_g, total, self._gen_params(), cfg.train, step, cfg.lr, "generator", logs))
        ema_update(self.ema, self.student.model, cfg.ema, step)
        z, z_hats = torch.cat(zs), [torch.cat(zh) for zh in z_hats]
        logs.update(self.gan.update(torch.cat(pixels) if pixels else None, gen, step))
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps:   # what gets logged
            logs.update(latent_diagnostics(z, self.student.space))
            for side, z_hat in zip(self.sides, z_hats):   # each Bridge's drift from the exact round-trip
                if side.roundtrip is not None:
                    logs.update(side.logs({"bridge_drift": bridge_drift(z, z_hat, side.roundtrip)}))

        # two time-scale rule: each fake score keeps up with the generator
        for side, z_hat, ct in zip(self.sides, z_hats, cts):
            logs.update(self._fake_update(side, z_hat, ct, gen, step))
        for _ in range(cfg.fake.updates - 1):
            noise, cs, cts = self._batch(gen)
            with torch.no_grad():
                z = [self.generator(noise[p], _rows(cs, p)) for p in parts]
                x = [self._decoded(zp, self.bridges_read_pixels) for zp in z]
            for side, ct in zip(self.sides, cts):
                with torch.no_grad():
                    z_hat = torch.cat([side.bridge(zp, clamp=cfg.clamp, decoded=xp) for zp, xp in zip(z, x)])
                logs.update(self._fake_update(side, z_hat, ct, gen, step))
        return logs

    # -- samples and export ----------------------------------------------------------
    def sample_prompts(self) -> list[str]:
        """The first SAMPLES prompts (cycled)."""
        return [self.prompts[i % len(self.prompts)] for i in range(self.SAMPLES)]

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """EMA samples (every generator step) for `sample_prompts()`, fixed noise (the same every time)."""
        res, prompts = self.s_res, self.sample_prompts()
        ema = StudentGenerator(self.student.with_components(**{self.student.backbone: self.ema}), self.generator.steps)
        draw = ema.draw(len(prompts), self.student.latent_shape(res, res), torch.Generator().manual_seed(0))
        draw.step = None   # inference: the whole chain
        return self.student.space.decode(ema(draw.to(self.device), self.text_s(prompts)))

    def export(self, run_dir: Path) -> None:
        from .export import export_run

        export_run(self, Path(run_dir))
