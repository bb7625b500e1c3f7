"""The data layer at scale: stage 1's bank streams from disk in shards written by disjoint
processes; the Teacher is sampled on captions and attention fidelity reads only their
tokens; stage 2 encodes each batch's prompts when it draws them."""

import json

import pytest
import torch
from safetensors import safe_open

from crossdistill.bridge.losses import AttnConfig, attention_fidelity, map_distance
from crossdistill.data.banks import ShardBank, build_bank, encode_latents
from crossdistill.data.sources import DataConfig, image_source
from crossdistill.errors import CrossdistillError


@pytest.fixture(scope="module")
def pair(tiny_pair):
    from crossdistill.denoisers import load_denoiser

    return load_denoiser(tiny_pair / "teacher"), load_denoiser(tiny_pair / "student")


def _writers(folder):
    out = {}
    for f in sorted(folder.glob("shard-*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out[f.name] = int(h.metadata()["process"])
    return out


def test_bank_shards_split_across_processes_are_disjoint_and_read_back_exactly(pair, tmp_path):
    teacher, student = pair
    src = image_source(DataConfig(domain="shapes"), teacher, 32, 21, seed=3)
    spec = {"what": "test"}
    written = [build_bank(tmp_path / "bank", src, spec, student, teacher, 32, 32, 4, process=r, processes=2,
                          progress=False) for r in (0, 1)]
    assert written == [[0, 2, 4], [1, 3, 5]]                  # 21 images, 6 shards of <= 4: disjoint, covering
    assert _writers(tmp_path / "bank") == {f"shard-{k:06d}.safetensors": k % 2 for k in range(6)}
    bank = ShardBank(tmp_path / "bank")
    images, prompts = src.read(0, 21)
    ref = encode_latents(images, prompts, student, teacher, 32, 32)
    assert len(bank) == 21 and bank.prompts == prompts and bank.latent_shape == ref.latent_shape
    idx = torch.tensor([20, 0, 5, 5, 13])
    z_s, z_t, p = bank.take(idx)
    torch.testing.assert_close(z_s, ref.z_s[idx], rtol=1e-4, atol=1e-4)   # batch-size rounding only
    torch.testing.assert_close(z_t, ref.z_t[idx], rtol=1e-4, atol=1e-4)
    assert p == [prompts[i] for i in idx.tolist()]
    # a rerun writes nothing new; another spec is refused; a missing shard is reported
    assert build_bank(tmp_path / "bank", src, spec, student, teacher, 32, 32, 4, progress=False) == []
    with pytest.raises(CrossdistillError, match="built from other data or models \\(what differ\\)"):
        build_bank(tmp_path / "bank", src, {"what": "else"}, student, teacher, 32, 32, 4, progress=False)
    (tmp_path / "bank" / "shard-000003.safetensors").unlink()
    with pytest.raises(CrossdistillError, match="1 of 6 shards missing \\(first: shard-000003"):
        ShardBank(tmp_path / "bank")
    assert build_bank(tmp_path / "bank", src, spec, student, teacher, 32, 32, 4, progress=False) == [3]


def test_stage1_reads_its_bank_batch_by_batch_from_disk(tiny_pair, tmp_path, monkeypatch):
    """The task holds no latents: every batch comes from `ShardBank.take`."""
    from crossdistill.bridge.stage1 import BridgeTask, BridgeTrainConfig, train_bridge
    from crossdistill.bridge.model import BridgeConfig
    from crossdistill.train import TrainConfig

    taken = []
    take = ShardBank.take
    monkeypatch.setattr(ShardBank, "take", lambda self, idx: taken.append(len(idx)) or take(self, idx))
    cfg = BridgeTrainConfig(teacher=str(tiny_pair / "teacher"), student=str(tiny_pair / "student"),
                       data=DataConfig(images=10, domain="shapes", shard_size=4), bridge=BridgeConfig(width=8, depth=1),
                       train=TrainConfig(steps=2, batch=4, checkpoint_every=2))
    train_bridge(cfg, tmp_path / "run", progress=False)
    assert taken == [4, 4]
    assert sorted(p.name for p in (tmp_path / "run" / "bank").glob("shard-*")) == \
        [f"shard-{k:06d}.safetensors" for k in range(3)]
    assert not hasattr(BridgeTask, "z_s")


def test_data_free_teacher_is_sampled_on_captions(pair, tmp_path, monkeypatch):
    teacher, _ = pair
    (tmp_path / "captions.txt").write_text("a red circle on the left\n\na blue square at the top\n")
    calls = []
    sample = type(teacher).sample
    monkeypatch.setattr(type(teacher), "sample", lambda self, prompts, **kw: calls.append(list(prompts))
                        or sample(self, prompts, **kw))
    src = image_source(DataConfig(source="teacher", captions=str(tmp_path / "captions.txt")), teacher, 32, 5, seed=0)
    images, prompts = src.read(0, 5)
    assert prompts == ["a red circle on the left", "a blue square at the top"] * 2 + ["a red circle on the left"]
    assert [p for c in calls for p in c] == prompts and all(p.strip() for p in prompts)
    assert images.shape == (5, 3, 32, 32)
    # a Teacher outside any domain has no prompts of its own: captions are required, never ""
    with pytest.raises(CrossdistillError, match="samples the Teacher on captions: set data.captions"):
        image_source(DataConfig(source="teacher"), teacher, 32, 5, seed=0)


def test_stage1_refuses_empty_prompts_with_attention_fidelity(tiny_pair, tmp_path):
    from crossdistill.bridge.stage1 import BridgeTask, BridgeTrainConfig
    from crossdistill.data.banks import MemoryBank

    from crossdistill.bridge.model import Bridge
    from crossdistill.denoisers import load_denoiser

    t, s = load_denoiser(tiny_pair / "teacher"), load_denoiser(tiny_pair / "student")
    bank = MemoryBank(torch.zeros(2, *s.latent_shape(32, 32)), torch.zeros(2, *t.latent_shape(32, 32)), ["", "a dog"])
    bridge = Bridge(s.space, t.space, 32, 32)
    with pytest.raises(CrossdistillError, match="1 of the bank's 2 images have an empty prompt"):
        BridgeTask(t, s, bridge, bank, BridgeTrainConfig())
    BridgeTask(t, s, bridge, bank, BridgeTrainConfig(attn=AttnConfig(weight=0)))   # no attention term: allowed


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl", "tiny-sd3", "tiny-sd35", "tiny-flux"])
def test_caption_mask_marks_exactly_the_captions_tokens(tiny_models, name):
    den = tiny_models(name)
    prompts = ["a red circle on the left", "a blue square"]
    length = den.encode_prompt(prompts).embeds.shape[1]
    mask = den.caption_mask(prompts, length)
    for row, p in zip(mask, prompts):
        words = den.word_positions(p)
        assert sorted(torch.nonzero(row).flatten().tolist()) == sorted(j for w in words for j in w)
        assert 0 < row.sum() < length            # the padding (and start/end tokens) are out
    assert mask[0].sum() > mask[1].sum()          # a longer caption, more tokens


def test_attention_fidelity_ignores_padding_keys():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(2, 5, 6, generator=g).softmax(-1)
    p = q.clone()
    p[:, :, 4] += 0.3                              # the maps differ only on key 4 (padding)
    keys = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert map_distance(p, q, "l1", keys).item() == 0.0
    assert map_distance(p, q).item() == pytest.approx(0.3)   # all keys: the padding difference counts
    p[0, :, 1] += 0.1                              # a caption key differs: seen
    loss, _ = attention_fidelity({"l": {"text": p}}, {"l": {"text": q}}, "l1", keys)
    assert loss.item() == pytest.approx(0.05, abs=1e-6)


def test_stage1_attention_target_covers_the_caption_tokens(tiny_pair, tmp_path, monkeypatch):
    """The Teacher is conditioned on the batch's captions and the attention loss gets their
    caption-token masks (start/end/padding excluded)."""
    import crossdistill.bridge.stage1 as stage1
    from crossdistill.bridge.model import BridgeConfig
    from crossdistill.denoisers import load_denoiser
    from crossdistill.train import TrainConfig

    seen = []
    fidelity = stage1.attention_fidelity
    monkeypatch.setattr(stage1, "attention_fidelity", lambda m, r, d, keys: seen.append(keys) or fidelity(m, r, d, keys))
    encode = stage1.PromptConditioner.__call__
    prompts_seen = []
    monkeypatch.setattr(stage1.PromptConditioner, "__call__", lambda self, p: prompts_seen.append(p) or encode(self, p))
    cfg = stage1.BridgeTrainConfig(teacher=str(tiny_pair / "teacher"), student=str(tiny_pair / "student"),
                              data=DataConfig(images=6, domain="shapes"), bridge=BridgeConfig(width=8, depth=1),
                              train=TrainConfig(steps=1, batch=3, checkpoint_every=1))
    stage1.train_bridge(cfg, tmp_path / "run", progress=False)
    teacher = load_denoiser(tiny_pair / "teacher")
    (keys,), (prompts,) = seen, prompts_seen
    assert len(prompts) == 3 and all(p.strip() for p in prompts)
    assert torch.equal(keys, teacher.caption_mask(prompts, keys.shape[1]))
    assert not keys[:, 0].any() and keys.any(1).all()
    cfg.attn.tokens = "all"
    seen.clear()
    stage1.train_bridge(cfg, tmp_path / "run-all", progress=False)
    assert seen == [None]


def test_stage2_encodes_each_batch_when_drawn(tiny_pair, tmp_path, monkeypatch):
    """No prompt table: the Teacher's text encoders see only the prompts of the batch
    in hand, never the whole caption list."""
    from crossdistill.distill.task import DistillTask
    from crossdistill.distill.config import DistillConfig, FakeConfig, TeacherConfig
    from crossdistill.train import TrainConfig, run

    (tmp_path / "p.txt").write_text("\n".join(f"a red circle number {i}" for i in range(40)))
    sizes = []
    from crossdistill.denoisers import load_denoiser

    for cls in {type(load_denoiser(tiny_pair / m)) for m in ("teacher", "student")}:
        monkeypatch.setattr(cls, "encode_prompt", lambda self, p, encode=cls.encode_prompt:
                            sizes.append(len(p)) or encode(self, p))
    cfg = DistillConfig(student=str(tiny_pair / "student"), teachers=[TeacherConfig(str(tiny_pair / "teacher"), "roundtrip")],
                       prompts=str(tmp_path / "p.txt"), fake=FakeConfig(updates=1),
                       train=TrainConfig(steps=2, batch=4, checkpoint_every=2))
    task = DistillTask.from_config(cfg)
    run(task, cfg.train, tmp_path / "run", progress=False)
    assert sizes and max(sizes) <= 4          # 40 captions, never encoded together


def test_stage2_reads_captions_from_a_dataset_column(tiny_pair, tmp_path):
    from crossdistill.data.sources import hf_captions
    from crossdistill.distill.task import DistillTask
    from crossdistill.distill.config import DistillConfig, TeacherConfig

    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": t, "n": i})
                                                  for i, t in enumerate(["a dog", "", "a cat"])))
    assert hf_captions(str(folder), "train", "text") == ["a dog", "a cat"]
    with pytest.raises(CrossdistillError, match="has no column 'caption'; columns: text, n"):
        hf_captions(str(folder), "train", "caption")
    cfg = DistillConfig(student=str(tiny_pair / "student"), teachers=[TeacherConfig(str(tiny_pair / "teacher"), "roundtrip")],
                       prompts=str(folder), prompts_column="text")
    assert DistillTask.from_config(cfg).prompts == ["a dog", "a cat"]


@pytest.mark.parametrize("stage", ["bridge", "distill"])
def test_gradient_accumulation_makes_the_same_update(tiny_pair, tmp_path, monkeypatch, stage, request):
    """Batch 4 in 2 micro-batches of 2 gives every optimizer the gradient of batch 4 at
    once (both stages; stage 2: the generator and two fake-score updates, with the manifold
    term), up to float rounding. Gradients are compared, not weights: Adam's first steps
    divide by |g| and would amplify rounding in near-zero entries."""
    from crossdistill.bridge.model import BridgeConfig
    from crossdistill.bridge.stage1 import BridgeTrainConfig, train_bridge
    from crossdistill.distill.config import DistillConfig, FakeConfig, ManifoldConfig, TeacherConfig
    from crossdistill.distill.run import distill
    from crossdistill.train import TrainConfig

    (tmp_path / "p.txt").write_text("a red circle\na dog\na blue square\n")
    # the reduction order, and so the rounding compared below, depends on torch's thread count:
    # fixed at 2 whatever runs the suite (at 1 thread the stage-2 generator's gradients differ
    # by 1.03e-4 relative, before the distill package as after it)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    grads = {}
    step = torch.optim.AdamW.step
    for k in (1, 2):
        seen = grads[k] = []

        def record(self, *a, **kw):
            seen.append(torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]
                                   if p.grad is not None]).clone())
            return step(self, *a, **kw)
        monkeypatch.setattr(torch.optim.AdamW, "step", record)
        train = TrainConfig(steps=2, batch=4, checkpoint_every=2, grad_accumulation=k)
        if stage == "bridge":
            cfg = BridgeTrainConfig(teacher=str(tiny_pair / "teacher"), student=str(tiny_pair / "student"),
                               data=DataConfig(images=8, domain="shapes"), bridge=BridgeConfig(width=8, depth=1),
                               train=train)
            train_bridge(cfg, tmp_path / f"run{k}", progress=False)
        else:
            cfg = DistillConfig(student=str(tiny_pair / "student"), teachers=[TeacherConfig(str(tiny_pair / "teacher"), "roundtrip")],
                                prompts=str(tmp_path / "p.txt"), lr=1e-3,
                               fake=FakeConfig(updates=2), manifold=ManifoldConfig(weight=0.5), train=train)
            distill(cfg, tmp_path / f"run{k}", progress=False)
    assert len(grads[1]) == len(grads[2]) == (2 if stage == "bridge" else 6)   # stage 2: G + 2 fake, twice
    for a, b in zip(grads[1], grads[2]):
        rel = ((a - b).norm() / a.norm()).item()
        assert a.norm() > 0 and rel < 1e-4, rel
    with pytest.raises(CrossdistillError, match="not divisible by 1 processes x 3 micro-batches"):
        train = TrainConfig(steps=1, batch=4, grad_accumulation=3)
        train_bridge(BridgeTrainConfig(teacher=str(tiny_pair / "teacher"), student=str(tiny_pair / "student"),
                                  data=DataConfig(images=8, domain="shapes"), train=train), tmp_path / "bad",
                     progress=False)
