import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# cached FID reference statistics go to a throwaway folder, not the user's ~/.cache
import tempfile  # noqa: E402

os.environ["CROSSDISTILL_CACHE"] = tempfile.mkdtemp(prefix="crossdistill-cache-")
# the machine's cores (2 at most), shared among pytest-xdist's workers when the suite runs on several
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

TINY = ["tiny-sd15", "tiny-sdxl", "tiny-sd3", "tiny-sd35", "tiny-flux"]


@pytest.fixture(scope="session")
def tiny_models():
    from crossdistill.denoisers import build_denoiser

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_denoiser(name, seed=0)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """A saved tiny SD 1.5 Student and SD 3.5 Teacher (different latent spaces)."""
    from crossdistill.denoisers import build_denoiser

    root = tmp_path_factory.mktemp("pair")
    build_denoiser("tiny-sd15", seed=1).save_pretrained(root / "student")
    build_denoiser("tiny-sd35", seed=2).save_pretrained(root / "teacher")
    return root


def count_steps(monkeypatch, task_cls) -> list[int]:
    """The steps a task class executes from now on (its `step` wrapped)."""
    seen, step = [], task_cls.step

    def counted(self, i, gen):
        seen.append(i)
        return step(self, i, gen)

    monkeypatch.setattr(task_cls, "step", counted)
    return seen


def invocations(run_dir) -> list[dict]:
    """Each training invocation of a run folder: the step it started at and the checkpoint it loaded."""
    import json

    rows = [json.loads(x) for x in (run_dir / "invocations.jsonl").read_text().splitlines()]
    return [{"start_step": r["start_step"], "checkpoint": r["checkpoint"]} for r in rows]


def run_cli(*args):
    """`crossdistill ARGS` run in this process, as `main()` runs it: the exit status, stdout
    and stderr of a `subprocess.run`, without starting an interpreter and importing torch,
    diffusers and transformers again (about 9 s a call on 2 cores). Torch's thread count
    (which `--threads` sets) is restored afterwards; an exception main() does not turn into
    one line propagates, as a traceback would."""
    import contextlib
    import io
    import subprocess
    import sys

    from crossdistill.cli import main

    argv, threads = sys.argv, torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["crossdistill", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())
