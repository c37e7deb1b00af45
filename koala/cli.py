"""The ``koala`` command: prepare | train | evaluate | colorize | serve.

Each subcommand parses its arguments and calls one library function; nothing else happens here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from koala.config import ColorizerConfig

DEFAULTS = ColorizerConfig()


def _add_prepare(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="turn a folder of colour photos into a training set",
        description="Resize and crop every photo under SRC to 256×256 sRGB, leave out grey, broken and duplicate "
        "files (listed with the reason), split train/validation/test by content hash, and cache embeddings. "
        "Running it again only adds what is new.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("source", help="folder of photos (searched recursively) or one photo")
    parser.add_argument("destination", help="prepared set folder, e.g. data/prepared/mine")
    parser.add_argument("--embedder", default=DEFAULTS.embedder,
                        help="embedder whose embeddings to cache: efficientnet-lite0, inception-resnet-v2, or none")
    parser.add_argument("--embedder-weights", default="imagenet",
                        help="'imagenet', a weights file, or 'none' (random weights: pipeline tests only)")
    parser.add_argument("--workers", type=int, default=None, help="parallel decoders (default: all cores)")
    parser.add_argument("--size", type=int, default=DEFAULTS.image_size, help="side of the square training images")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the prepared images")
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(arguments) -> int:
    from koala.data import prepare

    embedder = None if arguments.embedder == "none" else arguments.embedder
    report = prepare(
        arguments.source, arguments.destination, embedder=embedder,
        embedder_weights=_weights(arguments.embedder_weights), workers=arguments.workers, size=arguments.size,
        quality=arguments.quality,
    )
    return 0 if report.counts.get("train", 0) else 1


def _weights(value: str | None):
    return None if value in (None, "none", "None", "") else value


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a colouriser on a prepared set",
        description="Train (or resume) a colouriser. Re-running the same command after an interruption continues "
        "from the last completed epoch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data", help="prepared set folder (from koala prepare)")
    parser.add_argument("run_dir", help="run folder: checkpoints, logs, model.keras, config.json")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate)
    parser.add_argument("--architecture", default=DEFAULTS.architecture, choices=("koalarization", "lite0-unet"),
                        help="koalarization: the tutorial's encoder-decoder, learnt from scratch; lite0-unet: an "
                        "ImageNet-pretrained EfficientNet-Lite0 encoder with skip connections (trains on 2 CPU cores)")
    parser.add_argument("--fine-tune-after", type=int, default=DEFAULTS.fine_tune_after,
                        help="lite0-unet: after this many epochs Lite0's stages 6-7 train too (0: never)")
    parser.add_argument("--fine-tune-learning-rate", type=float, default=DEFAULTS.fine_tune_learning_rate,
                        help="lite0-unet: learning rate once stages 6-7 train")
    parser.add_argument("--encoder-weights", default=DEFAULTS.encoder_weights,
                        help="lite0-unet: the encoder's starting weights: imagenet, a Lite0 .pth/.weights.h5 file, "
                        "or none")
    parser.add_argument("--no-fusion", dest="fusion", action="store_false",
                        help="plain encoder-decoder without the classifier embedding")
    parser.add_argument("--embedder", default=DEFAULTS.embedder, help="efficientnet-lite0 or inception-resnet-v2")
    parser.add_argument("--embedder-weights", default=DEFAULTS.embedder_weights,
                        help="weights the embeddings were computed with (recorded for colorize)")
    parser.add_argument("--loss", default=DEFAULTS.loss, choices=("mse", "classification", "colorful"),
                        help="mse (the tutorial's), classification (Zhang et al. 2016), colorful (MSE + missing chroma)")
    parser.add_argument("--rebalance", type=float, default=DEFAULTS.rebalance,
                        help="classification: share of uniform mixed into the class frequencies before weighting "
                        "(0.5 = Zhang et al.'s rebalancing, 1 = none)")
    parser.add_argument("--colorful-weight", type=float, default=DEFAULTS.colorful_weight,
                        help="colorful loss: weight of the missing-chroma penalty")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no flips or random crops")
    parser.add_argument("--samples-per-epoch", type=int, default=DEFAULTS.samples_per_epoch,
                        help="training images drawn per epoch (0: one pass over the training split)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--image-size", type=int, default=DEFAULTS.image_size,
                        help="side of the training images (must match the prepared set)")
    parser.add_argument("--init-from", default="", help="model folder to fine-tune from (e.g. models/default)")
    parser.add_argument("--in-memory", action="store_true",
                        help="hold the training split in memory and augment on the device (koala.accelerated: "
                        "for GPUs/TPUs; no resume, --samples-per-epoch ignored)")
    parser.add_argument("--distribute", action="store_true",
                        help="data-parallel over all devices (keras.distribution.DataParallel); needs --in-memory "
                        "and KERAS_BACKEND=jax")
    parser.set_defaults(handler=_run_train)


def _run_train(arguments) -> int:
    from koala.train import TrainingStoppedOnNaN, train

    config = ColorizerConfig(
        data=arguments.data, run_dir=arguments.run_dir, epochs=arguments.epochs, batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate, fusion=arguments.fusion, embedder=arguments.embedder,
        embedder_weights=_weights(arguments.embedder_weights) or "", loss=arguments.loss,
        augment=arguments.augment, samples_per_epoch=arguments.samples_per_epoch, seed=arguments.seed,
        init_from=arguments.init_from, image_size=arguments.image_size,
        rebalance=arguments.rebalance, colorful_weight=arguments.colorful_weight,
        architecture=arguments.architecture, fine_tune_after=arguments.fine_tune_after,
        fine_tune_learning_rate=arguments.fine_tune_learning_rate,
        encoder_weights=_weights(arguments.encoder_weights) or "",
    )
    if arguments.distribute:
        import keras

        if not arguments.in_memory:
            raise ValueError("--distribute needs --in-memory (the streaming trainer runs on one device)")
        if keras.backend.backend() != "jax":
            raise ValueError(
                f"--distribute needs the JAX backend (KERAS_BACKEND=jax); this run uses {keras.backend.backend()!r}"
            )
    if arguments.in_memory:
        from koala.accelerated import train_in_memory

        summary = train_in_memory(config, distribute=arguments.distribute)
        print(f"trained {summary['epochs']} epochs at {summary['images_per_second']:.1f} images/s; "
              f"model: {os.path.join(arguments.run_dir, 'model.keras')}")
        return 0
    try:
        result = train(config)
    except TrainingStoppedOnNaN as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"trained {result.epochs_completed} epochs; model: {result.run_dir / 'model.keras'}")
    return 0


def _add_colorize(subparsers) -> None:
    parser = subparsers.add_parser(
        "colorize", help="colour black-and-white photos at their own resolution",
        description="Colour photos (files or folders). Outputs keep each photo's size and orientation. A run that is "
        "stopped can be started again: finished files are skipped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="photos or folders of photos")
    parser.add_argument("--output", "-o", required=True, help="folder for the coloured photos")
    parser.add_argument("--model", default=None, help="model folder (default: $KOALA_MODEL or models/default)")
    parser.add_argument("--format", default="auto", choices=("auto", "jpg", "png"),
                        help="output format; auto keeps JPEG as JPEG and writes PNG otherwise")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--reencode", action="store_true",
                        help="decode and re-encode grey JPEGs like other photos (output L* exactly the photo's) "
                        "instead of keeping their luma data unchanged and adding colour beside it (faster, no "
                        "second JPEG loss)")
    parser.add_argument("--embedder-weights", default=None, help="override the embedder weights (e.g. a local .h5)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="classification models only: annealed-mean temperature (lower = more vivid; "
                        "default: the model's)")
    parser.set_defaults(handler=_run_colorize)


def _run_colorize(arguments) -> int:
    from koala.colorize import Colorizer

    colorizer = Colorizer(arguments.model, embedder_weights=arguments.embedder_weights,
                          temperature=arguments.temperature)
    results = colorizer.colorize_files(
        arguments.inputs, arguments.output, output_format=arguments.format, overwrite=arguments.overwrite,
        reencode=arguments.reencode, log=lambda message: print(message, file=sys.stderr),
    )
    done = sum(result.status == "done" for result in results)
    skipped = sum(result.status == "skipped" for result in results)
    failed = [result for result in results if result.status == "failed"]
    print(f"{done} coloured, {skipped} already done, {len(failed)} failed -> {arguments.output}")
    return 1 if failed or not results else 0


def build_parser() -> argparse.ArgumentParser:
    from koala import __version__

    parser = argparse.ArgumentParser(prog="koala", description="Colourise black-and-white photos.")
    parser.add_argument("--version", action="version", version=f"koala {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_prepare(subparsers)
    _add_train(subparsers)
    for name in ("evaluate", "serve"):
        adder = _optional_command(name)
        if adder:
            adder(subparsers)
    _add_colorize(subparsers)
    return parser


def _optional_command(name: str):
    """Subcommands that live in their own module: koala/cli_<name>.py exposing add_parser(subparsers)."""
    import importlib

    try:
        module = importlib.import_module(f"koala.cli_{name}")
    except ModuleNotFoundError as error:
        if error.name == f"koala.cli_{name}":
            return None
        raise
    return module.add_parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        return arguments.handler(arguments)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from koala.images import ImageError

        if not isinstance(error, (OSError, ImageError)):
            raise
        # a read-only folder, a full disk, an unreadable file: one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
