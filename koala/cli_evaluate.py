"""``koala evaluate MODEL DATA``: the model against the grey baseline, with a report folder."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers) -> None:
    from koala.cli import non_negative_int, positive_int
    from koala.evaluate import BATCH_SIZE, FIGURE_LIMIT

    parser = subparsers.add_parser(
        "evaluate", help="measure a colouriser against the grey baseline",
        description="Colour the images of DATA from their lightness and score the result against the true colours "
        "(PSNR, SSIM, colourfulness, ab-error AuC), next to the grey baseline (the same lightness with no colour) "
        "on the same images. DATA is a prepared set (its --split is used) or any folder of colour photos "
        "(resized and centre-cropped to 256 in memory; unreadable and grey photos are skipped). The summary table "
        "is printed; --report also writes metrics.csv, summary.md and figures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", help="model folder (model.keras + config.json)")
    parser.add_argument("data", help="prepared set folder (with manifest.csv) or a folder of colour photos")
    parser.add_argument("--report", default=None, help="folder for metrics.csv, summary.md and the figures")
    parser.add_argument("--split", default="test", help="split of a prepared set to evaluate")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N usable images")
    parser.add_argument("--figures", type=non_negative_int, default=FIGURE_LIMIT,
                        help="three-panel figures for the first N images (with --report)")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="images predicted at once")
    parser.add_argument("--embedder-weights", default=None, help="override the embedder weights (e.g. a local .h5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(arguments) -> int:
    from koala.cli import import_backend

    for path, what in ((arguments.model, "model folder"), (arguments.data, "folder")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such {what}")
    import_backend()
    from koala.evaluate import evaluate

    result = evaluate(
        arguments.model, arguments.data, split=arguments.split, report_dir=arguments.report, limit=arguments.limit,
        figure_limit=arguments.figures, batch_size=arguments.batch_size, embedder_weights=arguments.embedder_weights,
        progress=not arguments.quiet and sys.stderr.isatty(), log=lambda message: print(message, file=sys.stderr),
    )
    print(result.markdown())
    if arguments.report:
        print(f"report: {arguments.report}", file=sys.stderr)
    return 0
