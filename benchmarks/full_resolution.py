"""Colourising a 12-megapixel JPEG end to end, as a ratio to the bare model forward at 256 px.

    .venv/bin/python benchmarks/full_resolution.py [--repeats 7]

End to end, two ways, both what ``Colorizer.colorize_file`` does less the file write (file read -> bytes):

* luma kept (the default for a grey JPEG written as JPEG, :mod:`koala.jpeg_luma`): parse the JPEG, decode
  it at 1/8 scale (ImageMagick, DC coefficients) -> L* at 256 px -> head (+ embedder) -> colour joined in
  Lab at 1/8 scale -> Cb/Cr enlarged to half size and encoded (quality 95) -> spliced beside the photo's
  own luma scan, which is never decoded or re-encoded;
* re-encoded (``--reencode``): decode the whole grey JPEG -> L* at 256 px -> head -> ab upsampled to
  4000 × 3000 -> joined with the photo's own L* -> encoded as JPEG (quality 95).

The bare forward is the head's ``predict_on_batch``
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
    from koala import color, images, jpeg_luma, outputs
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
        assert colorizer.colour_jpeg_keeping_luma(images.read_file_bytes(photo), 95) is not None

    def reencoded():
        outputs.encode_image(colorizer.colorize(photo), "JPEG", quality=95)

    figures["end to end"] = median_seconds(end_to_end, repeats, warmup=1)
    figures["end to end, re-encoded"] = median_seconds(reencoded, repeats, warmup=1)

    # the same steps one at a time: luma kept
    data = photo.read_bytes()
    grey_jpeg = jpeg_luma.parse(data)
    reduced = images.read_image(data, keep_grey=True, shrink_to=size)
    small = color.rgb_to_lightness(images.resize_exact(reduced, size))[None]
    ab = colorizer.predict_ab(small)[0]
    cb, cr = jpeg_luma.chroma_small(reduced, ab)
    figures["stages"] = {name: median_seconds(function, repeats, warmup=1) for name, function in {
        "read file + parse JPEG markers": lambda: jpeg_luma.parse(images.read_file_bytes(photo)),
        "decode at 1/8 scale (ImageMagick)": lambda: images.read_image(data, keep_grey=True, shrink_to=size),
        "L* at 256 (resize + table)": lambda: color.rgb_to_lightness(images.resize_exact(reduced, size)),
        "predict (embedder prep + forward)": lambda: colorizer.predict_ab(small),
        "colour at 1/8 scale (Lab join, Y'CbCr)": lambda: jpeg_luma.chroma_small(reduced, ab),
        "Cb/Cr enlarge + encode + splice": lambda: jpeg_luma.colour_jpeg(grey_jpeg, cb, cr, 95),
    }.items()}
    # and re-encoded
    grey = images.read_image(photo, keep_grey=True)
    joined = color.join_grey_ab(grey, ab)
    figures["stages, re-encoded"] = {name: median_seconds(function, repeats, warmup=1) for name, function in {
        "decode (ImageMagick, grey)": lambda: images.read_image(photo, keep_grey=True),
        "L* at 256 (downscale + table)": lambda: color.rgb_to_lightness(images.resize_exact(grey, size)),
        "predict (embedder prep + forward)": lambda: colorizer.predict_ab(small),
        "ab upsampling + Lab join": lambda: color.join_grey_ab(grey, ab),
        "encode JPEG q95 (Pillow)": lambda: outputs.encode_image(joined, "JPEG", quality=95),
    }.items()}
    return figures


def report(label: str, figures: dict) -> float:
    ratio = figures["end to end"] / figures["bare forward"]
    reencoded = figures["end to end, re-encoded"] / figures["bare forward"]
    print(f"\n{label}")
    forward = f"head {figures['head forward'] * 1000:.0f} ms"
    if "embedder forward" in figures:
        forward += f" + embedder {figures['embedder forward'] * 1000:.0f} ms"
    print(f"  bare forward at 256, batch 1:          {figures['bare forward'] * 1000:.0f} ms ({forward})")
    print(f"  end to end, 12 MP JPEG, luma kept:     {figures['end to end'] * 1000:.0f} ms")
    print(f"  end to end, 12 MP JPEG, re-encoded:    {figures['end to end, re-encoded'] * 1000:.0f} ms")
    print(f"  ratio, luma kept (default): {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    print(f"  ratio, re-encoded (--reencode): {reencoded:.2f}")
    for key in ("stages", "stages, re-encoded"):
        total = sum(figures[key].values())
        print(f"  {key}, one at a time (ms, share of their sum):")
        for name, seconds in figures[key].items():
            print(f"    {name:40s} {seconds * 1000:7.1f}  {seconds / total:5.1%}")
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
        variants = (
            ("lite0-unet + fusion with EfficientNet-Lite0 (the default model's architecture)", True,
             "efficientnet-lite0", "lite0-unet"),
            ("encoder-decoder (fusion=False; the tutorial's beta)", False, None, "koalarization"),
            ("fusion + EfficientNet-Lite0", True, "efficientnet-lite0", "koalarization"),
            ("fusion + Inception-ResNet-v2 (the architecture of Deep Koalarization)", True, "inception-resnet-v2",
             "koalarization"),
        )
        for index, (label, fusion, embedder, architecture) in enumerate(variants):
            model = untrained_model(folder / f"model-{index}", fusion, embedder or "efficientnet-lite0", architecture)
            results[label] = report(label, measure(model, photo, arguments.repeats))
    return results


if __name__ == "__main__":
    main()
