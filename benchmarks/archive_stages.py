"""The per-photo stages of a re-encoded 12-megapixel archive scan, before and after issue 24, in one run.

    .venv/bin/python benchmarks/archive_stages.py [--repeats 5]

For a grey 8-bit PNG, a 16-bit grey TIFF (deflate) and a grey JPEG made from one generated scan (4000 × 3000,
film grain): decode (ImageMagick, as before; Pillow now: ``koala.images._read_with_pillow`` for PNG and TIFF,
``_read_jpeg_with_pillow`` for JPEG), the colour join (the exact Lab join at full size, as before;
:func:`koala.color.join_grey_offsets` now) and the encode (Pillow PNG level 3, as before; the threaded PNG writer
now; TIFF: 8- and 16-bit). The colour is a fixed prediction at 256 with an edge-aware slope (no network:
forward times are the folder benchmark's). Medians of ``--repeats`` after a warm-up; on a busy machine compare the
before/after ratios within the run, not the absolute figures.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path
from unittest import mock

from _common import add_scan_arguments, detailed_photo, machine, median_seconds

import numpy as np


def main(argv=None) -> dict:
    import tifffile
    from PIL import Image

    from koala import color, images, outputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scan_arguments(parser)
    arguments = parser.parse_args(argv)
    print(f"machine: {machine()}")
    grey = np.asarray(Image.fromarray(detailed_photo(arguments.height, arguments.width)).convert("L"))
    grey16 = grey.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 257, grey.shape).astype(np.uint16)
    files = {}
    with tempfile.TemporaryDirectory(prefix="koala-bench-") as folder:
        folder = Path(folder)
        Image.fromarray(grey).save(folder / "scan.png", compress_level=6)
        tifffile.imwrite(folder / "scan16.tif", grey16, compression="zlib", predictor=True)
        Image.fromarray(grey).save(folder / "scan.jpg", quality=90)
        files = {name: (folder / name).read_bytes() for name in ("scan.png", "scan16.tif", "scan.jpg")}
    size = 256
    y, x = np.mgrid[0:size, 0:size] / size
    ab = np.stack([0.2 * np.sin(4 * x), 0.2 * np.cos(3 * y)], axis=-1).astype(np.float32)
    small = color.rgb_to_lightness(images.resize_exact(grey, size))
    offset, slope = color.edge_aware_ab(small, ab, 4, 1e-3)
    exact = color.join_grey_ab(grey, offset, slope)
    cheap = color.join_grey_offsets(grey, offset, slope)
    cheap16 = color.join_grey_offsets(grey16, offset, slope)

    def imagemagick(data, **options):
        with mock.patch.object(images, "_read_with_pillow", return_value=None), \
                mock.patch.object(images, "_read_jpeg_with_pillow", return_value=None):
            return images.read_image(data, keep_grey=True, **options)

    def pillow_png(array, level=3):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG", compress_level=level)
        return buffer.getvalue()

    stages = {
        "decode 8-bit grey PNG, ImageMagick (before)": lambda: imagemagick(files["scan.png"]),
        "decode 8-bit grey PNG, Pillow (now)": lambda: images.read_image(files["scan.png"], keep_grey=True),
        "decode 16-bit grey TIFF to 8 bits, ImageMagick (before)": lambda: imagemagick(files["scan16.tif"]),
        "decode 16-bit grey TIFF to 8 bits, Pillow (now)": lambda: images.read_image(files["scan16.tif"], keep_grey=True),
        "decode 16-bit grey TIFF keeping 16 bits, Pillow (now)":
            lambda: images.read_image(files["scan16.tif"], keep_grey=True, keep_depth=True),
        "decode grey JPEG, ImageMagick (before)": lambda: imagemagick(files["scan.jpg"]),
        "decode grey JPEG, Pillow (now)": lambda: images.read_image(files["scan.jpg"], keep_grey=True),
        "join, exact Lab at full size (before)": lambda: color.join_grey_ab(grey, offset, slope),
        "join, offsets from a reduced copy (now)": lambda: color.join_grey_offsets(grey, offset, slope),
        "join, offsets, 16-bit (now)": lambda: color.join_grey_offsets(grey16, offset, slope),
        "encode PNG, Pillow level 3 (before)": lambda: pillow_png(exact),
        "encode PNG, threaded level 1 (now)": lambda: outputs.encode_image(cheap, "PNG"),
        "encode TIFF 8-bit (now)": lambda: outputs.encode_image(cheap, "TIFF"),
        "encode TIFF 16-bit (now)": lambda: outputs.encode_image(cheap16, "TIFF"),
        "encode JPEG q95 (before and now)": lambda: outputs.encode_image(cheap, "JPEG"),
    }
    figures = {}
    for name, function in stages.items():
        figures[name] = median_seconds(function, arguments.repeats, warmup=1)
        print(f"  {name:58s} {figures[name] * 1000:7.0f} ms")
    sizes = {"PNG level 3 (before)": len(pillow_png(exact)), "PNG threaded level 1 (now)": len(outputs.encode_image(cheap, "PNG")),
             "TIFF 8-bit": len(outputs.encode_image(cheap, "TIFF")), "TIFF 16-bit": len(outputs.encode_image(cheap16, "TIFF"))}
    for name, nbytes in sizes.items():
        print(f"  size, {name:51s} {nbytes / 1e6:7.1f} MB")
    lab = color.rgb_to_lab(np.asarray(cheap))
    exact_lab = color.rgb_to_lab(exact)
    lightness = color.rgb_to_lightness(grey)
    print(f"  cheap join: mean |L* - photo's| {np.abs(lab[..., 0] - lightness).mean():.2f} "
          f"(exact join: {np.abs(exact_lab[..., 0] - lightness).mean():.2f}); mean |a*b* - exact join's| "
          f"{np.abs(lab[..., 1:] - exact_lab[..., 1:]).mean():.2f}")
    return figures


if __name__ == "__main__":
    main()
