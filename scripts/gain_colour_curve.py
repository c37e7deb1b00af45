"""Plot the gain over grey against colourfulness on the choosing set, one curve per model and reading, from
``choose_default.py`` results (issue 23: "show the gain-versus-colour curve of the best two").

    python scripts/gain_colour_curve.py models/comparison-full/results.json \
        models/comparison-input-size/results.json --out models/comparison-input-size/curve.png

Candidates are grouped by their name less the chroma scale (``S=``): each group is one curve, its points the chroma
scales scored. A candidate scored in several files is drawn once.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def curves(paths: list[Path]) -> dict[str, list[tuple[float, float, float]]]:
    """{group: [(colourfulness, gain, scale), ...] sorted by colourfulness} from the files' choosing rows."""
    groups: dict[str, dict[float, tuple[float, float, float]]] = {}
    for path in paths:
        for name, row in json.loads(path.read_text())["choose"].items():
            match = re.search(r"S=([0-9.]+)", name)
            scale = float(match.group(1)) if match else 1.0
            group = re.sub(r"S=[0-9.]+,?", "", name).rstrip(",").strip()
            groups.setdefault(group, {})[scale] = (row["colorfulness_ratio"], row["gain"], scale)
    return {group: sorted(points.values()) for group, points in groups.items()}


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="choose_default.py results.json files")
    parser.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args(argv)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for group, points in curves(arguments.results).items():
        colour, gain, scales = zip(*points)
        axes.plot(colour, gain, marker="o", label=group)
        for x, y, scale in points:
            axes.annotate(f"{scale:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.axvline(0.6, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("colourfulness × the truth's")
    axes.set_ylabel("PSNR gain over grey (dB)")
    axes.set_title("choose/mit1003 at full size: gain against colour (labels: chroma scale)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(arguments.out, dpi=110)
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
