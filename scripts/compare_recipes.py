"""Compare trained models (recipes) on the same held-out photos and on real WWII photos.

    python scripts/compare_recipes.py runs/device/plain-mse runs/device/fusion-mse ... \
        --data data/prepared/all --historic ../shared/data/historic --out models/comparison

Writes ``comparison.md`` (one table: each model beside the grey baseline, all on the same test photos),
``test-photos.png`` (the same photos under each recipe) and ``historic.png`` (real black-and-white photos,
which have no ground truth: for looking, as archive users will).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model folders")
    parser.add_argument("--data", required=True, help="prepared set (its test split is used)")
    parser.add_argument("--historic", default=None, help="folder of real black-and-white photos")
    parser.add_argument("--out", required=True)
    parser.add_argument("--photos", type=int, default=6, help="test photos in the figure")
    arguments = parser.parse_args()

    import numpy as np

    from koala import color, images
    from koala.colorize import Colorizer
    from koala.evaluate import evaluate, evaluation_images, format_summary_table, predict
    from koala.plots import picture_columns, save_figure

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    names, truth = [], []
    iterator, _ = evaluation_images(arguments.data, "test", 256, log=lambda m: None)
    for name, image in iterator:
        names.append(name)
        truth.append(image)
    chosen = np.linspace(0, len(truth) - 1, arguments.photos).astype(int)
    historic = []
    if arguments.historic:
        for path, _ in images.find_images([arguments.historic])[:6]:
            historic.append((path.name, images.read_image(path)))

    lines = ["# Recipes compared on the same held-out photos", "",
             f"Test split of `{arguments.data}`: {len(truth)} photos never used in training, 256 × 256.", ""]
    columns_test = [("grey input", [color.grey_to_rgb(color.rgb_to_lightness(truth[i])) for i in chosen])]
    columns_historic = [("input", [image for _, image in historic])]
    for model_path in arguments.models:
        colorizer = Colorizer(model_path)
        label = Path(model_path).name
        result = evaluate(colorizer, arguments.data, progress=False, log=lambda m: None)
        lines += [f"## {label}", "", format_summary_table(result.summary), ""]
        predicted = predict(colorizer, [truth[i] for i in chosen])
        columns_test.append((label, predicted))
        columns_historic.append((label, [colorizer.colorize(image) for _, image in historic]))
        print(f"{label}: done", flush=True)
    columns_test.append(("true colours", [truth[i] for i in chosen]))
    (out / "comparison.md").write_text("\n".join(lines) + "\n")

    for file_name, columns in (("test-photos.png", columns_test), ("historic.png", columns_historic)):
        if columns[0][1]:
            save_figure(picture_columns(columns), out / file_name, dpi=80)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
