"""Average the weights of several model folders of one architecture (a "model soup", Wortsman et al. 2022) into a
new model folder: the epochs of one run, or a run and the model it was fine-tuned from.

    python scripts/experiments/soup.py ~/.cache/koala-runs/e384-ep3 ~/.cache/koala-runs/e384-ep4 \
        --out ~/.cache/koala-runs/e384-soup34

The first folder's config.json is kept (with ``init_from`` naming the ingredients); every folder must hold a head of
the same layers and shapes. Weights are averaged in float64 and stored in their own dtype; non-trainable statistics
(batch normalisation's moving means and variances) are averaged too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (model.keras + config.json)")
    parser.add_argument("--out", type=Path, required=True, help="the new model folder")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("name at least two model folders")

    from koala.train import load_head, save_head

    heads = [load_head(folder) for folder in args.models]
    first, config = heads[0]
    weights = [head.get_weights() for head, _ in heads]
    for folder, other in zip(args.models[1:], weights[1:]):
        if [w.shape for w in other] != [w.shape for w in weights[0]]:
            parser.error(f"{folder}: its weights do not match {args.models[0]}'s layer for layer")
    averaged = [np.mean([np.asarray(w[i], np.float64) for w in weights], axis=0).astype(weights[0][i].dtype)
                for i in range(len(weights[0]))]
    first.set_weights(averaged)
    args.out.mkdir(parents=True, exist_ok=True)
    config = config.replace(init_from=" + ".join(str(folder) for folder in args.models))
    save_head(first, config, args.out / "model.keras")
    config.save(args.out / "config.json")
    history = args.models[0] / "history.csv"
    if history.exists():
        shutil.copy(history, args.out / "history.csv")
    print(f"averaged {len(args.models)} models into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
