"""Batch inference throughput at 256 px on this machine's backend, as a fraction of its measured matmul FLOP/s.

    .venv/bin/python benchmarks/inference_throughput.py [--batch-sizes 1 8 32]

The compute bound is a large float32 matmul (4096 × 4096 by 4096 × 4096, ``keras.ops.matmul`` on the same
backend as the model, median of repeats); the model's FLOPs per image are its convolutions'
(:func:`koala.accelerated.model_flops_per_image`, 2 × multiply-adds). Images/s × FLOPs per image ÷ matmul
FLOP/s is the share of the machine's dense-compute peak the colouriser reaches. Target: ≥ 0.8. The matmul is
timed again right before each model measurement and each fraction uses its own pair, so that other work on a
shared machine skews both sides alike.
"""

from __future__ import annotations

import argparse

from _common import machine, median_seconds

import numpy as np

TARGET = 0.8


def matmul_flops_per_second(size: int = 4096, repeats: int = 5, with_numpy: bool = False) -> tuple[float, float]:
    """(keras.ops FLOP/s, numpy FLOP/s or nan) of a size × size float32 matmul."""
    import keras

    rng = np.random.default_rng(0)
    left = rng.standard_normal((size, size), dtype=np.float32)
    right = rng.standard_normal((size, size), dtype=np.float32)
    left_tensor, right_tensor = keras.ops.convert_to_tensor(left), keras.ops.convert_to_tensor(right)
    flops = 2.0 * size**3
    backend = median_seconds(
        lambda: keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.matmul(left_tensor, right_tensor))), repeats
    )
    plain = median_seconds(lambda: left @ right, repeats) if with_numpy else float("nan")
    return flops / backend, flops / plain


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args(argv)
    from koala.accelerated import model_flops_per_image
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig

    print(f"machine: {machine()}")
    peak, numpy_peak = matmul_flops_per_second(with_numpy=True)
    print(f"compute bound: float32 matmul 4096³: {peak / 1e9:.0f} GFLOP/s (keras.ops), {numpy_peak / 1e9:.0f} GFLOP/s (numpy)")
    results = {}
    for label, fusion in (("encoder-decoder (fusion=False)", False), ("fusion head (embedding given)", True)):
        config = ColorizerConfig(fusion=fusion)
        model = build_colorizer(config)
        flops = model_flops_per_image(model, config.image_size)
        print(f"\n{label}: {flops / 1e9:.1f} GFLOP per 256 × 256 image (forward)")
        for batch_size in arguments.batch_sizes:
            lightness = np.zeros((batch_size, 256, 256, 1), np.float32)
            inputs = [lightness, np.zeros((batch_size, 1000), np.float32)] if fusion else lightness
            peak = matmul_flops_per_second(repeats=3)[0]
            seconds = median_seconds(lambda: model.predict_on_batch(inputs), arguments.repeats)
            rate = batch_size / seconds
            fraction = rate * flops / peak
            results[(label, batch_size)] = fraction
            print(f"  batch {batch_size:3d}: {rate:6.1f} images/s, {rate * flops / 1e9:5.0f} GFLOP/s = "
                  f"{fraction:.2f} of the matmul bound measured just before ({peak / 1e9:.0f} GFLOP/s) "
                  f"(target >= {TARGET}: {'met' if fraction >= TARGET else 'NOT met'})")
    return results


if __name__ == "__main__":
    main()
