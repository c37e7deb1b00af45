"""Folder runs of 12-megapixel grey scans in every archive format, beside the forward-bound rate (issue 24).

    .venv/bin/python benchmarks/archive_formats.py [--photos 8] [--repeats 3] [--scans DIR]

What a user gets from ``koala colorize DIR --output OUT`` (the library call behind it,
:meth:`koala.colorize.Colorizer.colorize_files`, default settings, the default model ``models/default``), in
photos/s, for folders of eight 4000 × 3000 grey scans per input format:

* grey JPEG (one channel, quality 90) -> JPEG (its luma kept);
* colour JPEG of a grey photo (three channels, quality 90) -> JPEG;
* 8-bit grey PNG -> PNG;
* 16-bit grey TIFF (an archive master) -> TIFF when the installed Koala offers ``--format tiff``, else the
  default output (8-bit PNG);

beside a folder of 32 photos of 256 × 256 (grey JPEGs), whose rate is bound by the network's forward: each
format's share of that rate is the issue's measure (done when every format reaches 0.5, aim 0.7, and JPEG output
10 photos/s). Every rate is the median of ``--repeats`` runs into an empty folder, all in this one process after a
warm-up, so the shares hold on any machine; the absolute figures are this one's.

Then, per format, the stages of one photo one at a time (medians): decode (``Colorizer.begin_file``: read,
decode, the network's 256-px input), forward (``colour_planes_batch`` on that one photo), join (the photo's
``finish`` less its encoding), encode (``outputs.encode_image``, or the grey JPEG's chroma scans in
``jpeg_luma.colour_jpeg``) and write (``outputs.write_bytes_atomic``, with its fsync). Their sum is one photo's
cost without a pipeline; a folder run can overlap them. Last, the same stages' CPU time (all threads of the
process): their sum bounds what a pipeline on all the machine's cores can reach, beside what the folder run did.

The scans are made from the repository's ``data/samples`` (five black-and-white photos): a crop enlarged to
4000 × 3000 with film grain and a fine texture added, so that they compress and decode like real scans. They are
written once into ``--scans`` (default: a temporary folder) and reused when that folder already holds them.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, median_cpu, median_seconds

import numpy as np

SAMPLES = ("astronaut_grey.jpg", "chelsea_grey.jpg", "coffee_grey.jpg", "Japanese_light_tanks_moving_toward_Manila.jpg",
           "SergeantJoseCalugas_MedalOfHonor.jpg")
FORMATS = (
    # name, input file suffix, output format for colorize_files
    ("grey JPEG (luma kept)", "grey-jpeg", "jpg"),
    ("colour JPEG of a grey photo", "colour-jpeg", "jpg"),
    ("8-bit grey PNG", "grey-png", "png"),
    ("16-bit grey TIFF (archive master)", "grey16-tiff", "tiff"),
)
SMALL_PHOTOS = 32
TARGET_SHARE, AIM_SHARE, JPEG_TARGET = 0.5, 0.7, 10.0


def grey_scan(index: int, height: int, width: int, bits: int = 8) -> np.ndarray:
    """A grey scan made from one of ``data/samples``: a random crop of the target's aspect ratio, enlarged
    (bicubic), with grain (Gaussian, 4 levels) and a fine texture; uint8, or uint16 for ``bits=16`` (the grain at
    16-bit precision, so the low bits carry information as in a real 16-bit master)."""
    from PIL import Image

    rng = np.random.default_rng(index)
    sample = Image.open(ROOT / "data" / "samples" / SAMPLES[index % len(SAMPLES)]).convert("L")
    if index // len(SAMPLES) % 2:
        sample = sample.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    aspect = width / height
    crop_height = min(sample.height, int(sample.width / aspect)) * rng.uniform(0.8, 1.0)
    crop_width = crop_height * aspect
    left = rng.uniform(0, sample.width - crop_width)
    top = rng.uniform(0, sample.height - crop_height)
    enlarged = sample.resize((width, height), Image.Resampling.BICUBIC,
                             box=(left, top, left + crop_width, top + crop_height))
    scan = np.asarray(enlarged, dtype=np.float32)
    y, x = np.ogrid[0:height, 0:width]
    scan += 3.0 * np.sin(x / 4.3 + index).astype(np.float32) * np.sin(y / 6.1).astype(np.float32)
    scan += rng.normal(0.0, 4.0, size=(height, width)).astype(np.float32)
    if bits == 16:
        return np.clip(scan * 257.0, 0, 65535).astype(np.uint16)
    return np.clip(np.rint(scan), 0, 255).astype(np.uint8)


def write_scan(path: Path, kind: str, index: int, height: int, width: int) -> None:
    from PIL import Image

    if kind == "grey16-tiff":
        Image.fromarray(grey_scan(index, height, width, bits=16)).save(path, format="TIFF")  # mode I;16
        return
    grey = Image.fromarray(grey_scan(index, height, width))
    if kind == "grey-jpeg":
        grey.save(path, format="JPEG", quality=90)
    elif kind == "colour-jpeg":
        grey.convert("RGB").save(path, format="JPEG", quality=90)  # Y'CbCr 4:2:0, flat chroma
    elif kind == "grey-png":
        grey.save(path, format="PNG")
    else:
        raise ValueError(kind)


def make_folders(root: Path, photos: int, height: int, width: int) -> dict[str, Path]:
    """The input folders, made once (reused when ``root`` already holds them)."""
    suffixes = {"grey-jpeg": ".jpg", "colour-jpeg": ".jpg", "grey-png": ".png", "grey16-tiff": ".tif"}
    folders = {}
    for kind, suffix in suffixes.items():
        folder = root / f"{kind}-{width}x{height}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(photos):
            path = folder / f"scan_{index:02d}{suffix}"
            if not path.exists():
                partial = path.with_name(f".{path.name}.part")
                write_scan(partial, kind, index, height, width)
                partial.rename(path)
        folders[kind] = folder
    small = root / "small-256"
    small.mkdir(parents=True, exist_ok=True)
    for index in range(SMALL_PHOTOS):
        path = small / f"photo_{index:02d}.jpg"
        if not path.exists():
            from PIL import Image

            Image.fromarray(grey_scan(100 + index, 256, 256)).save(path, format="JPEG", quality=90)
    folders["small"] = small
    return folders


def output_formats() -> tuple[str, ...]:
    """The ``--format`` choices of the installed ``koala colorize``."""
    from koala.cli import build_parser

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    option = next(action for action in commands.choices["colorize"]._actions if "--format" in action.option_strings)
    return tuple(option.choices)


def folder_rate(colorizer, folder: Path, scratch: Path, output_format: str, repeats: int) -> tuple[float, list]:
    """Median photos/s of ``repeats`` folder runs into an empty folder, and the first run's results."""
    rates, first = [], None
    count = len(list(folder.iterdir()))
    for repeat in range(repeats):
        output = scratch / f"{folder.name}-{repeat}"
        shutil.rmtree(output, ignore_errors=True)
        started = time.perf_counter()
        results = colorizer.colorize_files([folder], output, output_format=output_format, progress=False,
                                           log=lambda message: print(f"    {message}"))
        rates.append(count / (time.perf_counter() - started))
        first = first or results
        shutil.rmtree(output, ignore_errors=True)
    return statistics.median(rates), first


@contextlib.contextmanager
def timing_encoders(seconds: list[float]):
    """Add the time spent in Koala's encoders (``outputs.encode_image``; ``jpeg_luma.colour_jpeg``, the grey
    JPEG's chroma scans, enlarged, encoded and spliced) to ``seconds`` while inside."""
    from koala import jpeg_luma, outputs

    originals = {(module, name): getattr(module, name) for module, name in
                 ((outputs, "encode_image"), (jpeg_luma, "colour_jpeg")) if hasattr(module, name)}

    def timed(function):
        def wrapper(*arguments, **keywords):
            started = time.perf_counter()
            try:
                return function(*arguments, **keywords)
            finally:
                seconds.append(time.perf_counter() - started)
        return wrapper

    for (module, name), function in originals.items():
        setattr(module, name, timed(function))
    try:
        yield
    finally:
        for (module, name), function in originals.items():
            setattr(module, name, function)


def median_cpu_seconds(function, repeats: int) -> float:
    """Median CPU time of the whole process (all its threads) in ``function()``, after one call."""
    return median_cpu(function, repeats)[0]


def stages(colorizer, photo: Path, output_format: str, scratch: Path, repeats: int) -> dict[str, float]:
    """One photo's stages one at a time (median seconds)."""
    from koala import outputs

    target = scratch / f"stage{Path('x.' + output_format).suffix}"
    image_format = outputs.format_for_path(target)
    pending = colorizer.begin_file(photo, image_format)
    planes = colorizer.colour_planes_batch([pending.lightness])[0]
    data = pending.finish(*planes)
    figures = {
        "decode": median_seconds(lambda: colorizer.begin_file(photo, image_format), repeats, warmup=1),
        "forward": median_seconds(lambda: colorizer.colour_planes_batch([pending.lightness]), repeats, warmup=1),
    }
    finish = median_seconds(lambda: pending.finish(*planes), repeats, warmup=1)
    encoder_seconds: list[float] = []
    with timing_encoders(encoder_seconds):
        for _ in range(repeats):
            pending.finish(*planes)
    encode = statistics.median(encoder_seconds[-repeats:]) if encoder_seconds else 0.0
    figures["join"] = max(0.0, finish - encode)
    figures["encode"] = encode
    figures["write"] = median_seconds(lambda: outputs.write_bytes_atomic(target, data), repeats, warmup=1)
    figures["output MB"] = len(data) / 1e6
    # CPU time of the whole process (every thread), which a pipeline on all cores cannot beat
    figures["cpu"] = {
        "decode": median_cpu_seconds(lambda: colorizer.begin_file(photo, image_format), repeats),
        "forward": median_cpu_seconds(lambda: colorizer.colour_planes_batch([pending.lightness]), repeats),
        "finish": median_cpu_seconds(lambda: pending.finish(*planes), repeats),
        "write": median_cpu_seconds(lambda: outputs.write_bytes_atomic(target, data), repeats),
    }
    target.unlink(missing_ok=True)
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8, help="scans per format")
    parser.add_argument("--repeats", type=int, default=3, help="folder runs per format (the median is reported)")
    parser.add_argument("--stage-repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--scans", type=Path, default=None, help="folder for the generated scans, kept and reused")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: models/default)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="the side the network reads photos at (default: the model's; 0: its training size)")
    arguments = parser.parse_args(argv)
    print(f"machine: {machine()}")

    import koala
    from koala.colorize import Colorizer

    choices = output_formats()
    tiff_output = "tiff" in choices
    parameters = inspect.signature(Colorizer.colorize_files).parameters
    workers = "workers" in parameters
    print(f"koala {koala.__version__} at {Path(koala.__file__).parent.parent}; --format choices {', '.join(choices)}; "
          f"folder runs {'pipelined (workers: one per core)' if workers else 'one photo after another'}")
    with contextlib.ExitStack() as stack:
        scans = arguments.scans or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="koala-scans-")))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="koala-archive-")))
        started = time.perf_counter()
        folders = make_folders(scans, arguments.photos, arguments.height, arguments.width)
        print(f"scans: {arguments.photos} per format, {arguments.width} × {arguments.height}, in {scans} "
              f"({time.perf_counter() - started:.0f} s to make or find)")
        for kind, folder in folders.items():
            sizes = [path.stat().st_size for path in folder.iterdir()]
            print(f"  {kind:12s} {np.mean(sizes) / 1e6:6.2f} MB a file")

        colorizer = Colorizer(arguments.model, input_size=arguments.input_size)
        print(f"model: {colorizer.model_path} ({colorizer.config.architecture}, embedder "
              f"{colorizer.config.embedder or 'none'}, flip average {colorizer.flip_average}, edge radius "
              f"{colorizer.edge_radius})")
        small_lightness = np.full((colorizer.size, colorizer.size), 50.0, np.float32)
        bare = median_seconds(lambda: colorizer.colour_planes_batch([small_lightness]), 7, warmup=2)
        bare_batch = median_seconds(lambda: colorizer.colour_planes_batch([small_lightness] * 6), 3, warmup=1) / 6
        folder_rate(colorizer, folders["small"], scratch, "jpg", 1)  # warm-up of every path
        forward_bound, _ = folder_rate(colorizer, folders["small"], scratch, "jpg", arguments.repeats)
        print(f"\nbare forward (colour_planes_batch at {colorizer.size} px): {bare * 1000:.0f} ms at batch 1 "
              f"({1 / bare:.1f} photos/s), {bare_batch * 1000:.0f} ms a photo at batch 6 ({1 / bare_batch:.1f} photos/s)")
        print(f"forward-bound: a folder of {SMALL_PHOTOS} photos of 256 × 256 (grey JPEG -> JPEG): "
              f"{forward_bound:.1f} photos/s")

        rows, breakdowns = [], {}
        for label, kind, wanted in FORMATS:
            output_format = wanted if wanted in choices else "auto"
            rate, results = folder_rate(colorizer, folders[kind], scratch, output_format, arguments.repeats)
            statuses = {status: sum(result.status == status for result in results) for status in ("done", "failed")}
            output_suffix = Path(results[0].output).suffix if results and results[0].output else "?"
            rows.append((label, output_format, output_suffix, rate, rate / forward_bound, statuses))
            first = sorted(folders[kind].iterdir())[0]
            breakdowns[label] = stages(colorizer, first, output_suffix.lstrip(".") or "png", scratch,
                                       arguments.stage_repeats)

    print(f"\n| input ({arguments.width * arguments.height / 1e6:.0f} MP) | output | photos/s | share of forward-bound "
          f"({forward_bound:.1f}/s) | done when |")
    print("| --- | --- | ---: | ---: | --- |")
    shares = {}
    for label, output_format, suffix, rate, share, statuses in rows:
        needed = [f"share >= {TARGET_SHARE}"] + ([f">= {JPEG_TARGET:g}/s"] if suffix == ".jpg" else [])
        met = share >= TARGET_SHARE and (suffix != ".jpg" or rate >= JPEG_TARGET)
        note = f"{'met' if met else 'not met'} ({', '.join(needed)})"
        if statuses["failed"] or statuses["done"] != arguments.photos:
            note += f"; {statuses['done']} done, {statuses['failed']} FAILED"
        print(f"| {label} | {suffix.lstrip('.')} (--format {output_format}) | {rate:.2f} | {share:.2f} | {note} |")
        shares[label] = share

    names = ("decode", "forward", "join", "encode", "write")
    print("\none photo's stages, one at a time (ms, median of "
          f"{arguments.stage_repeats}; decode = read + decode + the 256-px input, join = finish less encode):")
    print(f"| input | {' | '.join(names)} | sum | photos/s if one after another | output MB |")
    print("| --- |" + " ---: |" * (len(names) + 3))
    for label, figures in breakdowns.items():
        total = sum(figures[name] for name in names)
        print(f"| {label} | " + " | ".join(f"{figures[name] * 1000:.0f}" for name in names)
              + f" | {total * 1000:.0f} | {1 / total:.2f} | {figures['output MB']:.1f} |")
    cores = os.cpu_count() or 1
    print(f"\nCPU time of one photo's stages (ms of all threads, median of {arguments.stage_repeats}; finish = join "
          f"+ encode): what {cores} cores at most give, beside what the folder run reached:")
    print(f"| input | decode | forward | finish | write | sum | at most on {cores} cores | reached |")
    print("| --- |" + " ---: |" * 7)
    for (label, _, _, rate, _, _), figures in zip(rows, breakdowns.values()):
        cpu = figures["cpu"]
        total = sum(cpu.values())
        print(f"| {label} | " + " | ".join(f"{cpu[name] * 1000:.0f}" for name in ("decode", "forward", "finish", "write"))
              + f" | {total * 1000:.0f} | {cores / total:.2f} photos/s | {rate:.2f} ({rate * total / cores:.0%}) |")
    return {"forward-bound": forward_bound, "shares": shares, "tiff output": tiff_output, "pipelined": workers}


if __name__ == "__main__":
    main()
