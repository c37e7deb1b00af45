"""Plot the gain over grey against colourfulness on the choosing set, one curve per model and reading, from
``choose_default.py`` results (issue 23: "show the gain-versus-colour curve of the best two").

    python scripts/gain_colour_curve.py models/comparison-full/results.json \
        models/comparison-input-size/results.json --out models/comparison-input-size/curve.png

Candidates are grouped by their name less the chroma scale (``S=``): each group is one curve, its points the chroma
scales scored. A candidate scored in several files is drawn once. ``--against GROUP`` also prints every other
point's gain less that curve's at the same colourfulness (linear between its points, extended along its end
segments): how far a way lies above or below the curve it is meant to move.
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


def choosing_sets(paths: list[Path]) -> str:
    """The choosing folders the files were scored on, each by its last two parts (``choose/mit1003``)."""
    names = []
    for path in paths:
        folder = json.loads(path.read_text()).get("choose_folder")
        name = "/".join(Path(folder).parts[-2:]) if folder else "the choosing set"
        if name not in names:
            names.append(name)
    return " and ".join(names)


def above(curve: list[tuple[float, float, float]], colour: float) -> float:
    """The curve's gain at ``colour``: linear between its two nearest points by colourfulness, extended along the
    first or last segment outside them (a single point: its gain)."""
    if len(curve) == 1:
        return curve[0][1]
    index = 0
    while index < len(curve) - 2 and colour > curve[index + 1][0]:
        index += 1
    (x0, y0, _), (x1, y1, _) = curve[index], curve[index + 1]
    return y0 + (y1 - y0) * (colour - x0) / (x1 - x0)


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="choose_default.py results.json files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--against", help="a group (a name less its S=): print every other point against its curve")
    arguments = parser.parse_args(argv)
    groups = curves(arguments.results)
    if arguments.against is not None:
        if arguments.against not in groups:
            parser.error(f"--against {arguments.against!r}: no such group; the groups: {', '.join(groups)}")
        reference = groups[arguments.against]
        for group, points in groups.items():
            for colour, gain, scale in points if group != arguments.against else []:
                outside = not reference[0][0] <= colour <= reference[-1][0]
                print(f"{group} S={scale:g}: {gain:+.2f} dB at {colour:.2f}x, "
                      f"{gain - above(reference, colour):+.2f} dB against {arguments.against}"
                      + (" (extrapolated: past the ends of its curve)" if outside else ""))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for group, points in groups.items():
        colour, gain, scales = zip(*points)
        axes.plot(colour, gain, marker="o", label=group)
        for x, y, scale in points:
            axes.annotate(f"{scale:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.axvline(0.6, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("colourfulness × the truth's")
    axes.set_ylabel("PSNR gain over grey (dB)")
    axes.set_title(f"{choosing_sets(arguments.results)} at full size: gain against colour (labels: chroma scale)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(arguments.out, dpi=110)
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
