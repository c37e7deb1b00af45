"""Colourising a 12-megapixel JPEG end to end, as a ratio to the bare model forward at 256 px.

    .venv/bin/python benchmarks/full_resolution.py [--repeats 7]

End to end = decode the grey JPEG (ImageMagick) -> L* at 256 px -> head (+ embedder) -> ab upsampled to
4000 × 3000 -> joined with the photo's own L* -> encoded as JPEG (quality 95) in memory: what
``Colorizer.colorize_file`` does, less the file write. The bare forward is the head's ``predict_on_batch``
on one 256 × 256 image (plus the embedder's on one 224 × 224 image for the fusion model). Both are the
median of repeats after warm-up, measured in the same run with an untrained model (timing does not depend
on the weights). The target is end to end ≤ 1.5 × the bare forward. A per-stage breakdown follows.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, median_seconds, untrained_model, write_grey_jpeg

import numpy as np

TARGET = 1.5


def measure(model_folder: Path, photo: Path, repeats: int) -> dict:
    from koala import color, images
    from koala.colorize import Colorizer

    colorizer = Colorizer(model_folder)
    size = colorizer.size
    grey_small = np.zeros((1, size, size, 1), np.float32)
    inputs = [grey_small, np.zeros((1, 1000), np.float32)] if colorizer.embedder is not None else grey_small

    def head_forward():
        colorizer.model.predict_on_batch(inputs)

    figures = {"head forward": median_seconds(head_forward, repeats)}
    if colorizer.embedder is not None:
        side = colorizer.embedder.input_size
        batch = np.zeros((1, side, side, 3), np.float32)
        figures["embedder forward"] = median_seconds(lambda: colorizer.embedder.model.predict_on_batch(batch), repeats)
    figures["bare forward"] = figures["head forward"] + figures.get("embedder forward", 0.0)

    def end_to_end():
        images.encode_image(colorizer.colorize(photo), "JPEG", quality=95)

    figures["end to end"] = median_seconds(end_to_end, repeats, warmup=1)

    # the same steps one at a time
    grey = images.read_image(photo, keep_grey=True)
    small = color.rgb_to_lightness(images.resize_exact(grey, size))[None]
    ab = colorizer.predict_ab(small)[0]
    joined = color.join_grey_ab(grey, ab)
    stages = {
        "decode (ImageMagick, grey)": lambda: images.read_image(photo, keep_grey=True),
        "L* at 256 (downscale + table)": lambda: color.rgb_to_lightness(images.resize_exact(grey, size)),
        "predict (embedder prep + forward)": lambda: colorizer.predict_ab(small),
        "ab upsampling + Lab join": lambda: color.join_grey_ab(grey, ab),
        "encode JPEG q95 (Pillow)": lambda: images.encode_image(joined, "JPEG", quality=95),
    }
    figures["stages"] = {name: median_seconds(function, repeats, warmup=1) for name, function in stages.items()}
    small_lightness = small[0]
    figures["ycbcr join + encode"] = median_seconds(lambda: ycbcr_join_and_encode(grey, small_lightness, ab), repeats, 1)
    return figures


def ycbcr_join_and_encode(grey, small_lightness, ab) -> bytes:
    """What-if (not in the library): keep the grey JPEG's values as the output's luma Y' exactly, take Cb/Cr
    from the 256-px colour prediction, upsample them as 8-bit planes and let Pillow encode YCbCr directly
    (no RGB round trip). Preserves luma, not CIE L*: a colour pixel's L* moves by a few units."""
    import io

    from PIL import Image

    from koala import color

    small_rgb = color.join_lightness_ab(small_lightness, ab)
    _, blue, red = Image.fromarray(small_rgb).convert("YCbCr").split()
    size = (grey.shape[1], grey.shape[0])
    planes = [Image.fromarray(grey)] + [plane.resize(size, Image.Resampling.BILINEAR) for plane in (blue, red)]
    buffer = io.BytesIO()
    Image.merge("YCbCr", planes).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def report(label: str, figures: dict) -> float:
    ratio = figures["end to end"] / figures["bare forward"]
    print(f"\n{label}")
    forward = f"head {figures['head forward'] * 1000:.0f} ms"
    if "embedder forward" in figures:
        forward += f" + embedder {figures['embedder forward'] * 1000:.0f} ms"
    print(f"  bare forward at 256, batch 1: {figures['bare forward'] * 1000:.0f} ms ({forward})")
    print(f"  end to end, 12 MP JPEG:       {figures['end to end'] * 1000:.0f} ms")
    print(f"  ratio: {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    total = sum(figures["stages"].values())
    print("  stages, one at a time (ms, share of their sum):")
    for name, seconds in figures["stages"].items():
        print(f"    {name:36s} {seconds * 1000:7.1f}  {seconds / total:5.1%}")
    stages = figures["stages"]
    lab_tail = stages["ab upsampling + Lab join"] + stages["encode JPEG q95 (Pillow)"]
    what_if = figures["end to end"] - lab_tail + figures["ycbcr join + encode"]
    print(f"  what-if, YCbCr join (luma kept, Cb/Cr upsampled, encoded without RGB): join + encode "
          f"{figures['ycbcr join + encode'] * 1000:.0f} ms instead of {lab_tail * 1000:.0f} ms -> end to end about "
          f"{what_if * 1000:.0f} ms, ratio {what_if / figures['bare forward']:.2f}")
    return ratio


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    arguments = parser.parse_args(argv)
    print(f"machine: {machine()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        folder = Path(folder)
        photo = write_grey_jpeg(folder / "scan.jpg", arguments.height, arguments.width, quality=90)
        print(f"photo: {arguments.width} × {arguments.height} grey JPEG, quality 90, {photo.stat().st_size / 1e6:.1f} MB")
        for label, fusion in (("encoder-decoder (fusion=False)", False), ("fusion + EfficientNet-Lite0", True)):
            figures = measure(untrained_model(folder / label.split()[0], fusion), photo, arguments.repeats)
            results[label] = report(label, figures)
    return results


if __name__ == "__main__":
    main()
