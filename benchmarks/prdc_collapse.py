"""Why the variety targets read in-prompt PRDC: plain and in-prompt precision / recall of the
shapes world's renders (90 prompts x 4 scenes) against real renders of the same prompts,
and of the same set with each prompt's first render repeated 4 times (a generator whose
seed does nothing), in the domain classifier's feature space.

    python benchmarks/prdc_collapse.py
"""

import numpy as np


def main():
    from crossdistill.artifacts import resolve
    from crossdistill.domains import get
    from crossdistill.eval.harness import REFERENCE_SEED, _batches, feature_metrics
    from crossdistill.eval import fid as fidlib

    dom = get("shapes")
    rng = np.random.default_rng(0)
    prompts = [p for p in dom.eval_prompts() for _ in range(4)]
    images = [dom.render_at(dom.random_scene(rng, p), dom.size) for p in prompts]
    net = dom.feature_network(resolve(dom.classifier))
    real = fidlib.features(_batches(dom.reference_renders(prompts, REFERENCE_SEED)), net.features)
    for name, imgs in (("renders", images), ("first render x4", [images[i - i % 4] for i in range(len(images))])):
        m = feature_metrics(fidlib.features(_batches(imgs), net.features), real, prompts)
        print(f"{name:16} plain recall {m['prdc']['recall']:.3f} precision {m['prdc']['precision']:.3f} | "
              f"in-prompt recall {m['prdc_in_prompt']['recall']:.3f} | diversity {m['diversity']:.2f}")


if __name__ == "__main__":
    main()
