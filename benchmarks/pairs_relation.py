"""World II: how a generation folder gets the relation wrong (`crossdistill_worlds/pairs/judge.py`).

    python benchmarks/pairs_relation.py runs/demo-pairs/generations/*

Among the images where both prompt colours are found as objects, the fraction whose
relation is right, swapped (the objects on the named axis, in the other order: the
colours not bound to their sides) and on the other axis; and, among the swapped images
whose prompt asks for two different shapes, the fraction with both shapes where the
prompt's layout puts them (the colours swapped between two correctly placed objects);
the last two columns split "relation right" by whether the prompt's two shapes are the
same (`a red circle left of a green circle`: only the colours tell the objects apart) or
different.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def relation_stats(folder: Path) -> dict:
    """One generation folder's relation reads: `found` (images with both colours found),
    the shares `right` / `swapped` / `other` of those, `in_place` (shapes in place, per
    swapped image with two different shapes) and `by_kind` (right or not, per image, keyed
    by whether the prompt's two shapes are the same)."""
    from crossdistill_worlds.pairs.judge import relation_outcome
    from crossdistill_worlds.pairs.scenes import parse_prompt
    from crossdistill.eval.harness import read_generations

    gens = read_generations(folder)
    got, in_place, by_kind = [], [], {True: [], False: []}
    for prompt, img in zip(gens.prompts, gens.images()):
        _, s1, _, _, s2 = parse_prompt(prompt)
        outcome, first, second = relation_outcome(img, prompt)
        if outcome != "missing":
            got.append(outcome)
            by_kind[s1 == s2].append(outcome == "right")
            if outcome == "swapped" and s1 != s2:   # colour 1 sits where object 2 belongs
                in_place.append(first.shape == s2 and second.shape == s1)
    n = max(len(got), 1)
    return {"images": len(gens.rows), "found": len(got), **{k: got.count(k) / n for k in ("right", "swapped", "other")},
            "in_place": in_place, "by_kind": by_kind}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    a = ap.parse_args()
    print("| folder | images | both colours found | relation right | swapped | other axis "
          "| swapped, shapes in place | right, same-shape prompts | right, different shapes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in a.folders:
        r = relation_stats(folder)
        in_place = r["in_place"]
        placed = f"{sum(in_place) / len(in_place):.2f} of {len(in_place)}" if in_place else "-"
        kinds = [f"{sum(v) / len(v):.3f} of {len(v)}" if v else "-" for v in (r["by_kind"][True], r["by_kind"][False])]
        print(f"| {folder} | {r['images']} | {r['found']} | {r['right']:.3f} | {r['swapped']:.3f} | {r['other']:.3f} "
              f"| {placed} | {kinds[0]} | {kinds[1]} |")


if __name__ == "__main__":
    main()
