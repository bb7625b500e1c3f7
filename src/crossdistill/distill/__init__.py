"""Stage 2: one-step cross-space distillation, DMD2 in Teacher space through the Bridge
(`stage2.py`: config, task, export; `losses.py`; `generator.py`; `gan.py`; `diagnostics.py`)."""
