"""The bad-input table of docs/bad_input.md, one test per row: a clear one-line error,
exit status 2, no traceback, and nothing overwritten (the output folder is untouched)."""

import shutil

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_pair):
    root = tmp_path_factory.mktemp("bad")
    for side in ("student", "teacher"):   # the session's tiny pair, copied: the rows below alter copies of it
        shutil.copytree(tiny_pair / side, root / side)
    (root / "yaml").mkdir()
    (root / "yaml" / "malformed.yaml").write_text("teacher: shapes-teacher\nfake: [updates: 3\n")
    no_vae = root / "no_vae"
    shutil.copytree(root / "student", no_vae)
    shutil.rmtree(no_vae / "vae")
    pickled = root / "pickled"
    shutil.copytree(root / "student", pickled)
    w = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    w.rename(w.with_suffix(".bin"))
    foreign = root / "foreign_pipe"
    shutil.copytree(root / "student", foreign)
    (foreign / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    (root / "empty.txt").write_text("\n\n")
    (root / "latin1.txt").write_bytes("une café rouge\n".encode("latin-1"))
    gens = root / "gens"
    gens.mkdir()
    (gens / "manifest.jsonl").write_text('{"file": "a.png", "prompt": "a cat"}\n')
    from PIL import Image
    Image.new("RGB", (8, 8)).save(gens / "a.png")
    uncaptioned = root / "uncaptioned"      # images without a manifest: no prompts
    uncaptioned.mkdir()
    Image.new("RGB", (32, 32)).save(uncaptioned / "a.png")
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("my files")
    return root


# (row id, command line; {r} is the fixture folder, {o} a fresh output folder, expected message part)
ROWS = [
    ("malformed YAML", "distill {r}/yaml/malformed.yaml --out {o}", "malformed YAML"),
    ("unknown config key", "distill distill_shapes --out {o} --set fake.updatez=3",
     "did you mean 'updates'"),
    ("wrong type", "distill distill_shapes --out {o} --set train.steps=many", "must be int"),
    ("negative learning rate", "distill distill_shapes --out {o} --set lr=-1", "lr must be in (0, 1], got -1"),
    ("guidance < 0", "generate --model {r}/student --prompt 'a red circle' --guidance -1 --out {o}",
     "--guidance must be in [0, 100], got -1"),
    ("resolution not divisible", "bridge train bridge_shapes --out {o} --set teacher={r}/teacher "
     "--set student={r}/student --set student_resolution=31", "not a positive multiple of 2"),
    ("pair the Bridge can't map", "bridge train bridge_shapes --out {o} --set teacher={r}/teacher "
     "--set student={r}/student --set student_resolution=32 --set teacher_resolution=48",
     "not an integer resolution ratio"),
    ("stage 1 on images without captions", "bridge train bridge_shapes --out {o} --set teacher={r}/teacher "
     "--set student={r}/student --set data.source=folder --set data.path={r}/uncaptioned",
     "1 of the bank's 1 images have an empty prompt"),
    ("data-free stage 1 without captions", "bridge bank bridge_shapes --out {o} --set teacher={r}/teacher "
     "--set student={r}/student --set data.source=teacher --set data.domain=null", "samples the Teacher on captions"),
    ("unknown family (pipeline class)", "generate --model {r}/foreign_pipe --prompt 'a cat' --out {o}",
     "unknown pipeline class 'KandinskyPipeline'"),
    ("unknown choice", "distill distill_shapes --out {o} --set fake.kind=lorra",
     "did you mean 'lora'"),
    ("missing model folder", "generate --model {r}/nowhere --prompt 'a cat' --out {o}", "model folder not found"),
    ("missing component", "generate --model {r}/no_vae --prompt 'a cat' --out {o}",
     "cannot load component 'vae' (AutoencoderKL)"),
    ("weights missing while offline", "generate --model someone/not-cached --prompt 'a cat' --out {o}",
     "offline"),
    ("pickle weights (.bin) refused", "generate --model {r}/pickled --prompt 'a cat' --out {o}",
     "has only pickle weights (diffusion_pytorch_model.bin); refused"),
    ("prompts file empty", "generate --model {r}/student --prompts-file {r}/empty.txt --out {o}", "has no prompts"),
    ("prompts file not UTF-8", "generate --model {r}/student --prompts-file {r}/latin1.txt --out {o}",
     "not UTF-8"),
    ("out dir exists, not a run (generate)", "generate --model {r}/student --prompt 'a cat' --out {r}/mine",
     "not a crossdistill output"),
    ("out dir exists, not a run (train)", "distill distill_shapes --out {r}/mine",
     "not a crossdistill run"),
    ("prompt outside the shapes grammar", "generate --model shapes-teacher --prompt 'a pink hexagon' --out {o}",
     "unknown color 'pink'"),
    ("unknown parallelism", "distill distill_shapes --out {o} --set train.parallel=zero3",
     "train.parallel"),
    ("eval: metric needing a missing package", "eval {r}/gens --metrics hpsv2", "pip install hpsv2"),
    ("device this machine lacks", "generate --model {r}/student --prompt 'a cat' --out {o} --device cuda:7",
     "--device cuda:7"),
    ("unknown dtype", "generate --model {r}/student --prompt 'a cat' --out {o} --dtype fp8",
     "unknown --dtype 'fp8'"),
    ("architecture preset as a model", "generate --model sd15 --prompt 'a cat' --out {o}",
     "is an architecture preset"),
    ("unknown flag", "bench --json {o}/x.json", "No such option: --json (see `crossdistill bench --help`)"),
    ("unknown tracker", "distill distill_shapes --out {o} --set train.report_to=mlflow",
     "unknown train.report_to 'mlflow'"),
    ("few-step with the one-step map", "distill distill_shapes --out {o} --set generator.steps=4",
     "generator.final_alpha_bar must be in (0, 1) and needs generator.steps=1"),
]


@pytest.mark.parametrize("row,cmd,expected", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(models, tmp_path, row, cmd, expected):
    import shlex

    out = tmp_path / "out"
    before = sorted(p.name for p in (models / "mine").iterdir())
    args = shlex.split(cmd.format(r=models, o=out))
    p = run_cli(*args)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert expected in err[0], err[0]
    assert not out.exists() or not any(out.iterdir())                      # nothing written
    assert sorted(p.name for p in (models / "mine").iterdir()) == before     # nothing overwritten
