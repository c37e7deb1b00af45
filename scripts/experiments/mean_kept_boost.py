"""A pilot (issue 23): boost a model's colour around each photo's mean predicted colour instead of from grey, so that
a cast (the mean) stays at the network's own strength while the differences within the photo are scaled:
a*b* -> K * mean + S * (a*b* - mean), the mean over the photo's predicted a*b* map. Plain ``chroma_scale`` is
K = S. Scored at full size like ``choose_default.py`` (the network runs once for all settings):

    python scripts/experiments/mean_kept_boost.py models/default ~/.cache/koala-eval/mit-sweep

Prints one line per (S, K): gain over grey, share better than grey, colourfulness against the truth's.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SETTINGS = [(1.1, 1.1), (1.1, 1.0), (1.2, 1.0), (1.3, 1.0), (1.2, 0.8), (1.3, 0.8)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model folder")
    parser.add_argument("photos", help="folder of colour photos from other collections")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N photos")
    args = parser.parse_args(argv)

    spec = importlib.util.spec_from_file_location("choose_default", ROOT / "scripts" / "choose_default.py")
    choose = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(choose)
    base = choose._caching_colorizer_class()

    def variant(scale: float, mean_scale: float):
        class MeanKept(base):
            def predict_ab(self, lightness):  # the prediction at chroma scale 1 (below), boosted around its mean
                ab = super().predict_ab(lightness)
                mean = ab.mean(axis=(1, 2), keepdims=True)
                return mean_scale * mean + scale * (ab - mean)
        return MeanKept

    colorizers = {f"S={scale:g},K={mean_scale:g}": variant(scale, mean_scale)(args.model, chroma_scale=1.0)
                  for scale, mean_scale in SETTINGS}
    rows = choose.score_folder(colorizers, args.photos, limit=args.limit)
    for name, row in rows.items():
        print(f"{name}: {row['gain']:+.2f} dB, {100 * row['wins'] / row['count']:.0f} % better than grey, "
              f"{row['colorfulness_ratio']:.2f}x colour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
