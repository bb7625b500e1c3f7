"""Shapes world: grammar, renderer geometry, the adherence judge, data, export."""

import json

import numpy as np
import pytest
import torch

from crossdistill.errors import CrossdistillError
from crossdistill.domains import get as get_domain
from crossdistill_worlds.shapes import scenes as shapes
from crossdistill.domains.data import SceneDataset, export
from crossdistill_worlds.shapes.judge import adherence, read_image


def test_grammar_has_90_prompts_and_parses_back():
    prompts = shapes.all_prompts()
    assert len(prompts) == len(set(prompts)) == 90
    assert "a purple triangle on the left" in prompts
    for p in prompts:
        c, s, w = shapes.parse_prompt(p)
        assert shapes.make_prompt(c, s, w) == p


@pytest.mark.parametrize("prompt,word", [("a pink circle on the left", "'pink'"),
                                          ("a red hexagon at the top", "'hexagon'"),
                                          ("a red circle in the middle", "'in the middle'")])
def test_grammar_errors_name_the_word_and_the_allowed_ones(prompt, word):
    with pytest.raises(CrossdistillError) as e:
        shapes.parse_prompt(prompt)
    msg = str(e.value)
    assert word in msg and "allowed" in msg and "\n" not in msg


def test_grammar_error_for_wrong_form():
    with pytest.raises(CrossdistillError, match="outside the shapes grammar"):
        shapes.parse_prompt("red circle")


@pytest.mark.parametrize("shape,ratio", [("circle", np.pi / 4), ("square", 1.0), ("triangle", 0.5)])
def test_renderer_fill_ratio_and_position(shape, ratio):
    scene = shapes.Scene("blue", shape, "right", radius=12.0, dx=2, dy=-3, gray=200)
    cov = shapes.coverage(scene)
    assert cov.sum() / (24 * 24) == pytest.approx(ratio, abs=0.02)   # area / bbox area
    ys, xs = np.nonzero(cov > 0.5)
    assert (xs.min() + xs.max() + 1) / 2 == pytest.approx(48 + 2, abs=0.6)
    assert (ys.min() + ys.max() + 1) / 2 == pytest.approx(32 - 3, abs=0.6)


def test_render_colors_background_and_downsample():
    scene = shapes.Scene("yellow", "square", "center", radius=10.0, gray=190)
    img = shapes.render(scene)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (190, 190, 190) and tuple(img[32, 32]) == (240, 210, 20)
    small = shapes.downsample(img)
    assert small.shape == (32, 32, 3)
    assert np.allclose(small[10, 10], img[20:22, 20:22].reshape(-1, 3).mean(0), atol=0.5)


def test_random_scenes_follow_the_spec():
    rng = np.random.default_rng(0)
    scenes = [shapes.random_scene(rng) for _ in range(500)]
    assert all(8 <= s.radius <= 13 and -3 <= s.dx <= 3 and -3 <= s.dy <= 3 and 180 <= s.gray <= 230
               for s in scenes)
    assert {s.color for s in scenes} == set(shapes.COLORS) and {s.shape for s in scenes} == set(shapes.SHAPES)


@pytest.mark.parametrize("size", [64, 32])
def test_judge_on_ground_truth_renders(size):
    ds = SceneDataset(get_domain("shapes"), 360, size, seed=5, prompts=shapes.all_prompts())
    images = [((ds[i][0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for i in range(len(ds))]
    a = adherence(images, [ds[i][1] for i in range(len(ds))])
    assert a["all"] >= 0.99, a


def test_judge_reads_wrong_attributes():
    img = shapes.render(shapes.Scene("green", "triangle", "top", radius=11.0))
    r = read_image(img)
    assert (r.color, r.shape, r.position) == ("green", "triangle", "top")
    a = adherence([img, img], ["a red triangle at the top", "a green circle at the bottom"])
    assert a == {"color": 0.5, "shape": 0.5, "position": 0.5, "all": 0.0}
    blank = np.full((64, 64, 3), 200, np.uint8)
    assert adherence([blank], ["a green triangle at the top"])["all"] == 0.0


def test_dataset_is_deterministic_and_order_free():
    a, b = SceneDataset(get_domain("shapes"), 50, 64, seed=3), SceneDataset(get_domain("shapes"), 50, 64, seed=3)
    assert torch.equal(a[17][0], b[17][0]) and a[17][1] == b[17][1]
    assert not torch.equal(a[17][0], SceneDataset(get_domain("shapes"), 50, 64, seed=4)[17][0])
    small = SceneDataset(get_domain("shapes"), 50, 32, seed=3)[17][0]
    assert small.shape == (3, 32, 32)


def test_export_writes_pngs_and_manifest(tmp_path):
    out = export(get_domain("shapes"), 12, 32, tmp_path / "ex", seed=1)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"file", "prompt", "seed"} <= set(rows[0])
    from PIL import Image

    assert Image.open(out / rows[0]["file"]).size == (32, 32)
    assert not list(tmp_path.glob(".*tmp*"))
