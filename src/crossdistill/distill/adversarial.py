"""The optional GAN terms of stage 2 behind one interface (`make_gan`).

`GanTerm` (gan.weight = 0) does nothing at each hook; `FeatureGan` (gan.space: teacher)
is DMD2's head on the fake score's middle features, trained with the fake score on noised
real Teacher-space latents against noised bridged samples; `PixelGan` (gan.space: student)
is a discriminator on the decoded Student images with its own optimizer. The task calls
the hooks in a fixed order, so each term's random draws come at the same place of a step.
"""

from __future__ import annotations

import torch

from ..bridge.model import clamp_pixels
from ..data.sources import load_images
from ..errors import CrossdistillError
from ..train import average_gradients, local_part, optimizer_step
from .gan import FeatureTap, GanHead, PixelDiscriminator
from .losses import gan_discriminator_loss, gan_generator_loss


class GanTerm:
    """No adversarial term. `task`: the `DistillTask` it belongs to (models, sides, times)."""

    pixels = False   # its generator term reads the decoded Student images

    def __init__(self, task):
        self.task, self.cfg = task, task.cfg.gan

    def modules(self) -> dict[str, torch.nn.Module]:
        """What it adds to checkpoints."""
        return {}

    def fake_params(self, side) -> list[torch.nn.Parameter]:
        """What it adds to a Teacher's fake-score optimizer."""
        return []

    def setup(self, acc) -> dict[str, torch.optim.Optimizer]:
        """Its own optimizers (prepared by `acc`)."""
        return {}

    def check_sharding(self) -> None:
        """Raise if it cannot run with the Teacher side sharded (FSDP)."""

    def draw_real(self, gen: torch.Generator, step: int):
        """Its random draws for one fake-score update (before the micro-batches)."""
        return None

    def fake_loss(self, fake, z_hat, ct, t, eps, real, part: slice):
        """The fake score's loss on a micro-batch `part` (+ its classifier's): (loss_f, loss, logs)."""
        loss_f, _ = fake.loss(z_hat[part], ct, t=t[part], noise=eps[part])
        return loss_f, loss_f, {}

    def fake_x0(self, side, x_t, t, ct):
        """The fake score's x0 for the generator's DMD term (+ a GAN loss read on that pass):
        (fake_x0, loss or None, logs). Conditioned exactly as `fake.loss` trains it: one call,
        the model's own inputs (Flux: the same embedded guidance), no CFG."""
        with torch.no_grad(), side.fake.active() as fake:
            return fake.to_x0(x_t, t, fake.model_output(x_t, t, ct)), None, {}

    def generator_loss(self, pixels: torch.Tensor | None):
        """Its generator term on the decoded images (`pixels`): (loss or None, logs)."""
        return None, {}

    def update(self, pixels: torch.Tensor | None, gen: torch.Generator, step: int) -> dict[str, float]:
        """Its own training step after the generator's."""
        return {}


class FeatureGan(GanTerm):
    """DMD2's GAN (sec. 4.3): a head on the first Teacher's fake-score features."""

    def __init__(self, task):
        super().__init__(task)
        side, data = task.sides[0], self.cfg.data
        self.side = side
        imgs, prompts = load_images(data, side.den, task.t_res, data.images, data.seed)
        with torch.no_grad():
            self.real_z = torch.cat([side.den.space.encode(imgs[i:i + 64].to(task.device, side.den.dtype))
                                     for i in range(0, len(imgs), 64)]).float()
            self.real_prompts = prompts
        self.tap = FeatureTap(side.fake.den.model)
        with torch.no_grad(), side.fake.active() as fake, self.tap.recording():   # one probe pass sizes the head
            t = side.den.time_at(torch.tensor([0.5])).to(task.device)
            fake.model_output(self.real_z[:1].to(side.den.dtype), t, side.text(prompts[:1]))
        self.head = GanHead(self.tap.feats.shape[1], self.cfg.head).to(task.device)

    def modules(self):
        return {"gan_head": self.head}

    def fake_params(self, side):
        return list(self.head.parameters()) if side.index == 0 else []

    def check_sharding(self):
        # the head's gradient enters the fake score mid-block (FeatureTap), past FSDP's hooks
        raise CrossdistillError("gan.weight > 0 is not supported with FSDP (train.parallel=fsdp); "
                                "use train.parallel=ddp or gan.weight=0")

    def draw_real(self, gen, step):
        """Rows of the real Teacher-space latents, their timesteps and noise."""
        task = self.task
        rows = local_part(task.acc, torch.randint(0, len(self.real_z), (task.cfg.train.batch,), generator=gen))
        t, eps = task.times.draw(self.side.den, self.real_z[rows.to(self.real_z.device)], gen, step, task.acc)
        return rows, t, eps

    def _real_logits(self, rows, t, eps):
        """The head on the fake score's features of noised real Teacher-space latents."""
        teacher = self.side.den
        z = self.real_z[rows.to(self.real_z.device)]
        with self.tap.recording():
            self.side.fake.den.model_output(teacher.add_noise(z, t, eps), t,
                                            self.side.text([self.real_prompts[i] for i in rows.tolist()]))
        return self.head(self.tap.feats)

    def fake_loss(self, fake, z_hat, ct, t, eps, real, part):
        with self.tap.recording():
            loss_f, _ = fake.loss(z_hat[part], ct, t=t[part], noise=eps[part])
        logits_fake = self.head(self.tap.feats)
        loss_d, logs = gan_discriminator_loss(self._real_logits(*(x[part] for x in real)), logits_fake)
        return loss_f, loss_f + self.cfg.d_weight * loss_d, logs

    def fake_x0(self, side, x_t, t, ct):
        # the fake pass keeps its graph: the head's logit backpropagates into G
        with side.fake.active() as fake, self.tap.recording():
            fake_x0 = fake.to_x0(x_t, t, fake.model_output(x_t, t, ct)).detach()
        loss, logs = gan_generator_loss(self.head(self.tap.feats))
        return fake_x0, self.cfg.weight * loss, logs


class PixelGan(GanTerm):
    """A discriminator on what users see: real images at the Student's resolution against
    the clamped Student decodes of the generator's samples."""

    pixels = True

    def __init__(self, task):
        super().__init__(task)
        data, res = self.cfg.data, task.s_res
        imgs, _ = load_images(data, task.sides[0].den, task.t_res, data.images, data.seed)
        if imgs.shape[-1] != res:
            imgs = torch.nn.functional.interpolate(imgs.float(), size=(res, res), mode="area")
        self.real_px = imgs.float().clamp(-1, 1).to(task.device)
        self.disc = PixelDiscriminator().to(task.device)

    def modules(self):
        return {"pixel_disc": self.disc}

    def setup(self, acc):
        self.opt = acc.prepare(self.task.cfg.train.optimizer(self.disc.parameters(), self.cfg.lr))
        return {"pixel_disc": self.opt}

    def generator_loss(self, pixels):
        loss, logs = gan_generator_loss(self.disc(clamp_pixels(pixels, "straight_through")))
        return self.cfg.weight * loss, logs

    def update(self, pixels, gen, step):
        """One discriminator step: real Student-resolution images vs this step's samples."""
        task, n = self.task, self.task.cfg.train.batch
        x_fake = clamp_pixels(pixels, "straight_through").detach()
        rows = local_part(task.acc, torch.randint(0, len(self.real_px), (n,), generator=gen))
        loss, logs = gan_discriminator_loss(self.disc(self.real_px[rows.to(self.real_px.device)]),
                                            self.disc(x_fake))
        self.opt.zero_grad(set_to_none=True)
        task.acc.backward(loss)
        average_gradients(task.acc, self.disc.parameters())
        optimizer_step(self.opt, loss, self.disc.parameters(), task.cfg.train, step, self.cfg.lr, "discriminator", logs)
        return logs


GAN_TERMS = {"teacher": FeatureGan, "student": PixelGan}


def make_gan(task) -> GanTerm:
    """The term `task.cfg.gan` asks for (weight 0: none)."""
    cfg = task.cfg.gan
    return GAN_TERMS[cfg.space](task) if cfg.weight > 0 else GanTerm(task)
