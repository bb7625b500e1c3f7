"""Stage 2: one-step cross-space distillation, DMD2 in Teacher space through the Bridge.

  config.py       the typed config (DistillConfig and its parts)
  run.py          distill(cfg, run_dir): the entry point, resume checks
  task.py         DistillTask: one generator step and its fake-score updates
  teachers.py     each Teacher's side (Bridge, conditioning, fake score) and the Teacher times
  fake.py         the fake score: a full copy of the Teacher or a LoRA on it
  adversarial.py  the optional GAN terms behind one interface
  gan.py          the GAN networks (feature head, pixel discriminator)
  generator.py    the one- or few-step Student generator and its exported scheduler
  losses.py       each loss as a function of tensors
  diagnostics.py  what is logged about the generated latents
  export.py       RUN/student
"""

from .config import DistillConfig, TeacherConfig
from .run import distill

__all__ = ["DistillConfig", "TeacherConfig", "distill"]
