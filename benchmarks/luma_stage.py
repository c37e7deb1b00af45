"""The read stage of a colour JPEG of a black-and-white photo written as JPEG keeping its luma, before and after
issue 24's one decode, in one run.

    .venv/bin/python benchmarks/luma_stage.py [--repeats 5]

``Colorizer._begin_jpeg_keeping_luma`` for a 4000 × 3000 colour JPEG (4:2:0, quality 90) of a grey picture (smooth,
with grain): before, a reduced RGB decode (is it black and white?), ``jpegtran -grayscale``, and a reduced decode of
the luma-only JPEG; now one reduced Y'CbCr decode (``images.read_jpeg_ycbcr``) and jpegtran. "Before" is the same
code with ``read_jpeg_ycbcr`` switched off, which takes the two-decode path that progressive JPEGs still take.
CPU time, medians of ``--repeats`` after a warm-up: this process's (``time.process_time``), and with jpegtran's
own (it runs in a child process, which ``process_time`` does not count). The outputs are checked to be identical.
"""

from __future__ import annotations

import argparse
import io
from unittest import mock

from _common import add_scan_arguments, machine, median_cpu

import numpy as np


def grey_picture_in_colour(height: int, width: int, seed: int = 0) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 100 + 2, width // 100 + 2)).astype(np.float32) * 255
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    grey = np.clip(smooth + rng.normal(0, 8, (height, width)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def main(argv=None) -> dict:
    from PIL import Image

    from koala import images, jpeg_luma
    from koala.colorize import Colorizer, luma_decode_side
    from koala.data import monochrome_reason

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scan_arguments(parser)
    arguments = parser.parse_args(argv)
    print(f"machine: {machine()}")
    buffer = io.BytesIO()
    Image.fromarray(grey_picture_in_colour(arguments.height, arguments.width)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    colorizer = Colorizer()
    size = luma_decode_side(colorizer.size)  # the reduced decodes' side, as the stage decodes them

    def before():
        with mock.patch.object(images, "read_jpeg_ycbcr", return_value=None):
            return colorizer._begin_jpeg_keeping_luma(data)

    preview = images.read_image(data, shrink_to=size)
    ycbcr = images.read_jpeg_ycbcr(data, shrink_to=size)
    stages = {
        "whole stage, two reduced decodes (before)": before,
        "whole stage, one Y'CbCr decode (now)": lambda: colorizer._begin_jpeg_keeping_luma(data),
        "  reduced RGB decode (read_image)": lambda: images.read_image(data, shrink_to=size),
        "  reduced Y'CbCr decode (read_jpeg_ycbcr)": lambda: images.read_jpeg_ycbcr(data, shrink_to=size),
        "  its RGB (jpeg_ycbcr_to_rgb)": lambda: images.jpeg_ycbcr_to_rgb(ycbcr),
        "  monochrome_reason": lambda: monochrome_reason(preview),
        "  jpegtran -grayscale (luma_only)": lambda: jpeg_luma.luma_only(data, images.MAX_PIXELS),
    }
    print(f"{arguments.width} × {arguments.height} colour JPEG of a grey picture, {len(data) / 1e6:.1f} MB; "
          f"reduced decodes {preview.shape[1]} × {preview.shape[0]}")
    figures = {}
    for name, function in stages.items():
        own, total = median_cpu(function, arguments.repeats)
        figures[name] = (own, total)
        print(f"  {name:48s} {own * 1000:6.1f} ms CPU, {total * 1000:6.1f} ms with jpegtran's")
    old, new = before(), colorizer._begin_jpeg_keeping_luma(data)
    planes = colorizer.colour_planes_batch([new.lightness])[0]
    identical = np.array_equal(old.lightness, new.lightness) and old.finish(*planes) == new.finish(*planes)
    print(f"  outputs identical: {identical}")
    return figures


if __name__ == "__main__":
    main()
