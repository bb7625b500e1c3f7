"""Stage 2: one-step cross-space distillation (DMD2 through the Bridge). In progress:
the losses exist and are tested; the generator, fake score and trainer task do not yet."""
