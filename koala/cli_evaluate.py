"""``koala evaluate MODEL DATA`` and ``koala evaluate MODEL --photos DIR``: the model against the grey baseline,
with a report folder."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers) -> None:
    from koala.cli import chroma_scale, input_size, non_negative_int, positive_int
    from koala.evaluate import BATCH_SIZE, FIGURE_LIMIT

    parser = subparsers.add_parser(
        "evaluate", help="measure a colouriser against the grey baseline",
        description="Colour the images of DATA from their lightness and score the result against the true colours "
        "(PSNR, SSIM, colourfulness, ab-error AuC), next to the grey baseline (the same lightness with no colour) "
        "on the same images. DATA is a prepared set (its --split is used) or any folder of colour photos "
        "(resized and centre-cropped to 256 in memory; unreadable and grey photos are skipped). --photos DIR "
        "instead scores a folder of colour photos at their own size, coloured exactly as koala colorize colours "
        "them: what a user sees. The summary table is printed; --report also writes metrics.csv, summary.md "
        "and figures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="model folder (model.keras + config.json)")
    parser.add_argument("data", nargs="?", default=None,
                        help="prepared set folder (with manifest.csv) or a folder of colour photos (scored at 256)")
    parser.add_argument("--photos", default=None, metavar="DIR",
                        help="a folder of colour photos to score at their own size, instead of DATA")
    parser.add_argument("--report", default=None, help="folder for metrics.csv, summary.md and the figures")
    parser.add_argument("--split", default="test", help="split of a prepared set to evaluate")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N usable images")
    parser.add_argument("--figures", type=non_negative_int, default=FIGURE_LIMIT,
                        help="three-panel figures for the first N images (with --report)")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="images predicted at once")
    parser.add_argument("--chroma-scale", type=chroma_scale, default=None,
                        help="multiply the predicted colour, as koala colorize --chroma-scale (default: the model's)")
    parser.add_argument("--input-size", type=input_size, default=None, metavar="PX",
                        help="the side the network reads each photo at, as koala colorize --input-size "
                        "(default: the model's)")
    parser.add_argument("--embedder-weights", default=None, help="override the embedder weights (e.g. a local .h5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(arguments) -> int:
    from koala.cli import import_backend

    if (arguments.data is None) == (arguments.photos is None):
        raise ValueError("give either DATA (a prepared set or a folder, scored at 256) or --photos DIR "
                         "(a folder of colour photos, scored at their own size), not both" if arguments.data
                         else "nothing to evaluate: give DATA (a prepared set or a folder) or --photos DIR")
    data = arguments.photos or arguments.data
    for path, what in ((arguments.model, "model folder"), (data, "folder")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such {what}")
    import_backend()
    from koala.evaluate import evaluate

    result = evaluate(
        arguments.model, data, split=arguments.split, full_size=arguments.photos is not None,
        chroma_scale=arguments.chroma_scale, input_size=arguments.input_size, report_dir=arguments.report,
        limit=arguments.limit,
        figure_limit=arguments.figures, batch_size=arguments.batch_size, embedder_weights=arguments.embedder_weights,
        progress=not arguments.quiet and sys.stderr.isatty(), log=lambda message: print(message, file=sys.stderr),
    )
    print(result.markdown())
    if arguments.report:
        print(f"report: {arguments.report}", file=sys.stderr)
    return 0
