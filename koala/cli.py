"""The ``koala`` command: prepare | train | evaluate | colorize | serve.

Each subcommand parses its arguments and calls one library function; nothing else happens here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from koala.architectures import ARCHITECTURES
from koala.config import CHROMA_SCALE_MAX, INPUT_SIZE_MAX, ColorizerConfig, check_input_size

DEFAULTS = ColorizerConfig()
SERVICE_PACKAGES = ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart")
"""Modules of requirements-serve.txt, which `make demo` does not install."""
CLUSTER_PACKAGES = ("dask", "distributed")
"""Modules of requirements-cluster.txt (``koala colorize --cluster``), which `make demo` does not install."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows a default only where it tells the reader something: not for on/off flags (``--no-fusion``
    is off unless given, whatever the value it stores), not for "nothing", and never twice."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text or "(default" in text or not action.option_strings or action.nargs == 0
            or default is None or default is argparse.SUPPRESS or isinstance(default, bool) or default == ""
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _number_checker(kind, description: str, minimum: float, allow_minimum: bool, maximum: float = math.inf):
    """An argparse ``type`` that accepts only ``kind`` values above ``minimum`` (or equal, if allowed) and not
    above ``maximum``."""

    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not allow_minimum) or value > maximum:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    check.__name__ = description  # argparse names the type in some messages
    return check


positive_int = _number_checker(int, "a whole number above 0", 0, allow_minimum=False)
non_negative_int = _number_checker(int, "a whole number, 0 or more", 0, allow_minimum=True)
positive_float = _number_checker(float, "a number above 0", 0.0, allow_minimum=False)
non_negative_float = _number_checker(float, "a number, 0 or more", 0.0, allow_minimum=True)
fraction = _number_checker(float, "a number from 0 to 1", 0.0, allow_minimum=True, maximum=1.0)
jpeg_quality = _number_checker(int, "a JPEG quality from 1 to 100", 1, allow_minimum=True, maximum=100)
chroma_scale = _number_checker(float, f"a chroma scale from 0 to {CHROMA_SCALE_MAX:g}", 0.0, allow_minimum=True,
                               maximum=CHROMA_SCALE_MAX)


def input_size(text: str) -> int:
    """``--input-size``: 0 (the model's training size) or a multiple of 32 up to :data:`INPUT_SIZE_MAX`
    (:func:`koala.config.check_input_size`)."""
    try:
        return check_input_size(int(text))
    except ValueError:
        message = f"must be 0 or a multiple of 32 up to {INPUT_SIZE_MAX}, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _check_input_path(path: str, what: str = "file or folder") -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")


@contextlib.contextmanager
def _startup_noise_held_back():
    """Keep what native libraries print while the Keras backend starts (absl, oneDNN, CUDA and CPU-feature
    notices, written straight to file descriptor 2 whatever Python's logging says) out of the terminal. It is
    shown after all if the start fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                capture.seek(0)
                sys.stderr.write(capture.read().decode(errors="replace"))


def import_backend():
    """Import Keras (and so its backend) with the start-up notices held back; call it after the arguments and
    paths are checked, so that a mistake is answered at once."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with _startup_noise_held_back():
        import keras

        keras.backend.backend()
    return keras


def _add_prepare(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="turn a folder of colour photos into a training set",
        description="Resize and crop every photo under SOURCE to 256×256 sRGB, leave out grey, broken and duplicate "
        "files (listed with the reason), split train/validation/test by content hash, and cache embeddings. "
        "Running it again only adds what is new.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("source", help="folder of photos (searched recursively) or one photo")
    parser.add_argument("destination", help="prepared set folder, e.g. data/prepared/mine")
    parser.add_argument("--embedder", default=DEFAULTS.embedder,
                        help="embedder whose embeddings to cache: efficientnet-lite0, inception-resnet-v2, or none")
    parser.add_argument("--embedder-weights", default="imagenet",
                        help="'imagenet', a weights file, or 'none' (random weights: pipeline tests only)")
    parser.add_argument("--workers", type=positive_int, default=None, help="parallel decoders (default: all cores)")
    parser.add_argument("--size", type=positive_int, default=DEFAULTS.image_size,
                        help="side of the square training images")
    parser.add_argument("--quality", type=jpeg_quality, default=95,
                        help="JPEG quality of the prepared images")
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(arguments) -> int:
    _check_input_path(arguments.source)
    import_backend()
    from koala.data import prepare

    embedder = None if arguments.embedder == "none" else arguments.embedder
    report = prepare(
        arguments.source, arguments.destination, embedder=embedder,
        embedder_weights=_weights(arguments.embedder_weights), workers=arguments.workers, size=arguments.size,
        quality=arguments.quality, progress=sys.stderr.isatty(),
    )
    if report.counts.get("train", 0):
        return 0
    print(f"error: {nothing_to_train_on(arguments.source, arguments.destination, report)}", file=sys.stderr)
    return 1


def nothing_to_train_on(source, destination, report) -> str:
    """One line saying why a prepared set has no training photo (``report``: a :class:`koala.data.PrepareReport`)."""
    usable = sum(report.counts.values())
    if usable:
        return (
            f"{destination}: none of its {usable} usable photo{'s' if usable != 1 else ''} fell in the training "
            "split (about 90 % do, chosen by content): add more photos"
        )
    if not report.rejected:
        return f"{source}: no photos found (looked for image files, in subfolders too)"
    reasons: dict[str, int] = {}
    for _, reason in report.rejected:
        short = reason.split(":")[0].split(" (")[0].strip()
        short = "duplicate" if short.startswith("duplicate of") else short
        reasons[short] = reasons.get(short, 0) + 1
    summary = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items(), key=lambda item: -item[1]))
    return (
        f"{source}: no usable photo among {len(report.rejected)} ({summary}); training needs colour photos; "
        f"the list is in {Path(destination) / 'rejected.csv'}"
    )


def _weights(value: str | None):
    return None if value in (None, "none", "None", "") else value


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a colouriser on a prepared set",
        description="Train (or resume) a colouriser. Re-running the same command after an interruption continues "
        "from the last completed epoch.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("data", help="prepared set folder (from koala prepare)")
    parser.add_argument("run_dir", help="run folder: checkpoints, logs, model.keras, config.json")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs,
                        help="epochs in all; a resumed run stops after this many, counting the earlier ones")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size,
                        help="photos per training step")
    parser.add_argument("--learning-rate", type=positive_float, default=DEFAULTS.learning_rate,
                        help="Adam's learning rate (a resumed run continues at the rate given now)")
    parser.add_argument("--architecture", default=DEFAULTS.architecture, choices=ARCHITECTURES,
                        help="koalarization: the tutorial's encoder-decoder, learnt from scratch; lite0-unet: an "
                        "ImageNet-pretrained EfficientNet-Lite0 encoder with skip connections (trains on 2 CPU cores)")
    parser.add_argument("--fine-tune-after", type=non_negative_int, default=DEFAULTS.fine_tune_after,
                        help="lite0-unet: after this many epochs Lite0's stages 6-7 train too (0: never)")
    parser.add_argument("--fine-tune-learning-rate", type=positive_float, default=DEFAULTS.fine_tune_learning_rate,
                        help="lite0-unet: learning rate once stages 6-7 train (a resumed run takes the rate given now)")
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
    parser.add_argument("--rebalance", type=fraction, default=DEFAULTS.rebalance,
                        help="classification: share of uniform mixed into the class frequencies before weighting "
                        "(0.5 = Zhang et al.'s rebalancing, 1 = none)")
    parser.add_argument("--colorful-weight", type=non_negative_float, default=DEFAULTS.colorful_weight,
                        help="colorful loss: weight of the missing-chroma penalty")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no flips or random crops")
    parser.add_argument("--samples-per-epoch", type=non_negative_int, default=DEFAULTS.samples_per_epoch,
                        help="training images drawn per epoch (0: one pass over the training split)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="random seed: the same seed and data give the same batches and augmentations")
    parser.add_argument("--image-size", type=positive_int, default=DEFAULTS.image_size,
                        help="side of the training images (must match the prepared set)")
    parser.add_argument("--init-from", default="", help="model folder to fine-tune from (e.g. models/default)")
    parser.add_argument("--in-memory", action="store_true",
                        help="hold the training split in memory and augment on the device (koala.accelerated: "
                        "for GPUs/TPUs; no resume, --samples-per-epoch ignored)")
    parser.add_argument("--distribute", action="store_true",
                        help="data-parallel over all devices (keras.distribution.DataParallel); needs --in-memory "
                        "and KERAS_BACKEND=jax")
    parser.set_defaults(handler=_run_train)


def check_training_paths(arguments) -> None:
    """The mistakes ``koala train`` can see before it starts Keras: a missing or unprepared data folder, missing
    embeddings, a run "folder" that is a file, a missing --init-from, --distribute without --in-memory."""
    if arguments.distribute and not arguments.in_memory:
        raise ValueError("--distribute needs --in-memory (the streaming trainer runs on one device)")
    data = Path(arguments.data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such folder")
    if not data.is_dir():
        raise ValueError(f"{data}: not a folder; koala train needs a prepared set (made by koala prepare)")
    if not (data / "manifest.csv").is_file():
        raise ValueError(
            f"{data}: this is not a prepared set (no manifest.csv): run koala prepare first "
            f"(koala prepare {data} data/prepared/NAME), then train on data/prepared/NAME"
        )
    if arguments.fusion and not (data / f"embeddings-{arguments.embedder}.ids").is_file():
        raise ValueError(
            f"{data}: no cached {arguments.embedder} embeddings: run koala prepare again with --embedder "
            f"{arguments.embedder}, or train with --no-fusion"
        )
    run_dir = Path(arguments.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: the run folder is a file; name a folder")
    if arguments.init_from:
        _check_input_path(arguments.init_from, "model folder")


def _first_missing_folder(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what a run would create), or None."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_unfinished_run(run_dir: Path, created: Path) -> None:
    """After a failed start, remove the folders this command created, unless an epoch was completed in them."""
    if (run_dir / "state.json").exists() or (run_dir / "model.keras").exists():
        return
    shutil.rmtree(created, ignore_errors=True)


class _LineTracker:
    """Standard output that remembers whether its last line is still open (Keras' live progress bar ends its
    line only when the epoch is over), so that a message can start on a line of its own."""

    def __init__(self, stream):
        self.stream = stream
        self.line_open = False

    def write(self, text):
        if text:
            self.line_open = not text.endswith("\n")
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _end_open_line() -> None:
    if isinstance(sys.stdout, _LineTracker) and sys.stdout.line_open:
        sys.stdout.write("\n")


def _log_on_own_line(message: str) -> None:
    _end_open_line()
    print(message, flush=True)


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def _run_train(arguments) -> int:
    check_training_paths(arguments)
    run_dir = Path(arguments.run_dir)
    created = _first_missing_folder(run_dir)
    finished = False
    try:
        status = _train(arguments)
        finished = status == 0
        return status
    finally:
        if created is not None and not finished:
            _remove_unfinished_run(run_dir, created)


def _train(arguments) -> int:
    keras = import_backend()
    if arguments.distribute and keras.backend.backend() != "jax":
        raise ValueError(
            f"--distribute needs the JAX backend (KERAS_BACKEND=jax); this run uses {keras.backend.backend()!r}"
        )
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
    if arguments.in_memory:
        from koala.accelerated import train_in_memory

        summary = train_in_memory(config, distribute=arguments.distribute)
        print(f"trained {_epochs(summary['epochs'])} at {summary['images_per_second']:.1f} images/s; "
              f"model: {os.path.join(arguments.run_dir, 'model.keras')}")
        return 0
    # A terminal gets Keras' live progress bar; a file or a pipe one plain line per epoch (no colours, no \r).
    interactive = sys.stdout.isatty()
    tracked = _LineTracker(sys.stdout) if interactive else sys.stdout
    with contextlib.redirect_stdout(tracked):
        try:
            result = train(config, verbose=1 if interactive else 2, log=_log_on_own_line)
        except TrainingStoppedOnNaN as error:
            _end_open_line()
            print(f"error: {error}", file=sys.stderr)
            return 2
    if result.epochs_completed == 0 or not (result.run_dir / "model.keras").exists():
        print(f"error: {result.run_dir}: no epoch was trained", file=sys.stderr)
        return 1
    print(f"trained {_epochs(result.epochs_completed)}; model: {result.run_dir / 'model.keras'}")
    return 0


def _add_colorize(subparsers) -> None:
    parser = subparsers.add_parser(
        "colorize", help="colour black-and-white photos at their own resolution",
        description="Colour photos (files or folders). Outputs keep each photo's size and orientation. A run that is "
        "stopped can be started again: finished files are skipped.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="photos or folders of photos")
    parser.add_argument("--output", "-o", required=True, help="folder for the coloured photos")
    parser.add_argument("--model", default=None, help="model folder (default: $KOALA_MODEL or models/default)")
    parser.add_argument("--format", default="auto", choices=("auto", "jpg", "png", "tiff"),
                        help="output format; auto keeps JPEG as JPEG and TIFF as TIFF and writes PNG otherwise; a "
                        "16-bit grey master written as TIFF keeps its 16 bits (16-bit colour, deflate)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo outputs that already exist (originals are never written to, whatever the flags)")
    parser.add_argument("--reencode", action="store_true",
                        help="decode and re-encode grey JPEGs like other photos (output L* exactly the photo's) "
                        "instead of keeping their luma data unchanged and adding colour beside it (faster, no "
                        "second JPEG loss)")
    parser.add_argument("--embedder-weights", default=None, help="override the embedder weights (e.g. a local .h5)")
    parser.add_argument("--temperature", type=positive_float, default=None,
                        help="classification models only: annealed-mean temperature (lower = more vivid; "
                        "default: the model's)")
    parser.add_argument("--chroma-scale", type=chroma_scale, default=None,
                        help="multiply the predicted colour: below 1 calmer, above 1 more vivid, 0 grey "
                        "(default: the model's, chosen on photos from other collections)")
    parser.add_argument("--edge-radius", type=non_negative_int, default=None,
                        help="0 enlarges the predicted colour smoothly; 1 or more makes its edges follow the "
                        "photo's (a guided filter of this radius at the model's training size: fewer colour "
                        "halos) (default: the model's)")
    parser.add_argument("--input-size", type=input_size, default=None, metavar="PX",
                        help="the side of the square copy of each photo the network reads: 0 the size it was trained "
                        "at (384 for the default model), larger finer detail and more work (a multiple of 32; "
                        "default: the model's)")
    parser.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                        help="threads that read and write photos while the network colours others (default: one "
                        "per CPU core; 0: one photo at a time); not with --cluster")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run on a Dask cluster: a scheduler (tcp://host:8786) or local:N (N worker processes "
                        "here); every worker must see the photos and --output at the same paths "
                        "(pip install -r requirements-cluster.txt)")
    parser.add_argument("--chunk-size", type=positive_int, default=8,
                        help="with --cluster: photos per task (a lost worker's chunks run again elsewhere)")
    parser.set_defaults(handler=_run_colorize)


def _run_colorize(arguments) -> int:
    from koala.colorize import default_model_path, plan_outputs

    if arguments.cluster and arguments.workers is not None:
        raise ValueError("--workers is for a run on this machine; with --cluster, local:N or the cluster sets the "
                         "workers")
    plan_outputs(arguments.inputs, arguments.output, arguments.format)  # missing photos, outputs over originals
    model = Path(arguments.model) if arguments.model else default_model_path()
    if not (model / "model.keras").is_file() and not (model.is_file() and model.suffix == ".keras"):
        raise FileNotFoundError(f"{model}: no model here (expected a folder with model.keras and config.json)")
    settings = dict(model_path=model, embedder_weights=arguments.embedder_weights, temperature=arguments.temperature,
                    chroma_scale=arguments.chroma_scale, edge_radius=arguments.edge_radius,
                    input_size=arguments.input_size)
    options = dict(output_format=arguments.format, overwrite=arguments.overwrite, reencode=arguments.reencode,
                   progress=sys.stderr.isatty(), log=lambda message: print(message, file=sys.stderr))
    if arguments.cluster:
        from koala.cluster import colorize_on_cluster

        results = colorize_on_cluster(arguments.inputs, arguments.output, arguments.cluster, settings=settings,
                                      chunk_size=arguments.chunk_size, **options)
    else:
        import_backend()
        from koala.colorize import Colorizer

        results = Colorizer(**settings).colorize_files(arguments.inputs, arguments.output, workers=arguments.workers,
                                                       **options)
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
    for subparser in subparsers.choices.values():
        subparser.formatter_class = HelpFormatter
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
        if arguments.command == "serve":  # koala.service imports Keras as it starts
            import_backend()
        return arguments.handler(arguments)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if error.name in SERVICE_PACKAGES:
            needs, requirements = f"koala {arguments.command} needs the web service's packages", "requirements-serve.txt"
        elif error.name in CLUSTER_PACKAGES:
            needs, requirements = f"koala {arguments.command} --cluster needs Dask", "requirements-cluster.txt"
        else:
            raise
        print(f"error: {needs} ({error.name} is not installed): pip install -r {requirements}", file=sys.stderr)
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
