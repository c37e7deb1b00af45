"""The default model's figures in ``models/default/figures/``, from photos the repository may ship.

    python scripts/default_figures.py models/default --out models/default/figures
    python scripts/default_figures.py models/default --out models/default/figures --data DATA --limit 200
    python scripts/default_figures.py models/default --out models/default/figures --photos ~/.cache/koala-eval/test/sun

Three-panel figures (original / colours removed / recoloured) of scikit-image's bundled colour photos
(astronaut: NASA, public domain; coffee, chelsea: CC0; rocket: NASA, public domain), each titled with its PSNR
gain over grey and colourfulness. With ``--data`` (a prepared set's test split) or ``--photos`` (a folder of colour
photos, scored at their own size), ``colorfulness.png``: the histogram of those photos' colourfulness, recoloured
against true (no photo in it, so it can be committed; the test photos' terms forbid shipping them, so
``koala evaluate``'s best/worst grid stays in local reports).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder")
    parser.add_argument("--out", required=True, help="folder for the figures")
    parser.add_argument("--data", default=None, help="prepared set whose test split gives colorfulness.png")
    parser.add_argument("--photos", default=None, help="or a folder of colour photos, scored at their own size")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test photos")
    arguments = parser.parse_args(argv)

    import skimage.data

    from koala import evaluate, metrics, outputs, plots
    from koala.colorize import Colorizer

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    colorizer = Colorizer(arguments.model)
    for name in PHOTOS:
        original = getattr(skimage.data, name)()
        recoloured = colorizer.colorize(original)
        scores = metrics.image_metrics(recoloured, original)
        gain = scores.psnr - metrics.psnr(metrics.grey_baseline(original), original)
        title = (f"{name} (scikit-image): {gain:+.2f} dB over grey, colourfulness "
                 f"{scores.colorfulness:.0f} vs {scores.true_colorfulness:.0f} true")
        figure = plots.three_panel_figure(original, None, recoloured, title=title)
        plots.save_figure(figure, out / f"panel-{name}.png", dpi=80)
        print(f"{out / f'panel-{name}.png'}: {title}")
    if arguments.data or arguments.photos:
        with tempfile.TemporaryDirectory() as report:
            result = evaluate.evaluate(colorizer, arguments.photos or arguments.data, split="test",
                                       full_size=bool(arguments.photos), limit=arguments.limit,
                                       report_dir=report, figure_limit=0, progress=False)
            outputs.write_bytes_atomic(out / "colorfulness.png", (Path(report) / "colorfulness.png").read_bytes())
            print(f"{out / 'colorfulness.png'}: {len(result.images)} test photos")


if __name__ == "__main__":
    main()
