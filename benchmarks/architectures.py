"""The two architectures side by side: forward GFLOP, CPU training photos/s, inference ms per photo.

    .venv/bin/python benchmarks/architectures.py [--repeats 5]

Measured in one run on this machine, both with fusion and EfficientNet-Lite0 embeddings:

* ``koalarization``: the tutorial's encoder-decoder (:mod:`koala.model`), trained end to end on the photo's
  lightness (batch 16, as ``koala train`` does by default);
* ``lite0-unet``: the pretrained-encoder U-Net (:mod:`koala.lite0_unet`). Its training step is the decoder's
  alone, on cached encoder features (batch 32, the recipe's), phase 1 (stages 6-7 frozen) and phase 2 (stages
  6-7 fine-tuned); computing the cached features is a one-off cost per photo, timed separately.

Training figures are ``train_on_batch`` on random inputs of the real shapes (timing does not depend on the
values), the median over repeats after warm-up; data loading is not included (the cached features are read
from memory-mapped files, the tutorial's JPEGs decoded by the streaming loader). Inference is the whole model
(encoder + decoder; the embedder's own forward is listed apart) on 256 × 256 photos.
"""

from __future__ import annotations

import argparse

from _common import machine, median_seconds

import numpy as np


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args(argv)
    import keras

    from koala import lite0_unet
    from koala.accelerated import model_flops_per_image
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
    from koala.embedding import get_embedder

    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    results = {}

    def photos(count):
        return rng.uniform(-1, 1, (count, 256, 256, 1)).astype("float32")

    def embeddings(count):
        return rng.dirichlet(np.ones(1000), count).astype("float32")

    def train_rate(model, inputs, target):
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
        count = len(target)
        return count / median_seconds(lambda: model.train_on_batch(inputs, target), arguments.repeats, warmup=2)

    embedder = get_embedder("efficientnet-lite0", None)
    embedder_ms = 1000 * median_seconds(lambda: embedder.model.predict_on_batch(
        np.zeros((1, 224, 224, 3), np.float32)), arguments.repeats)
    embedder_flops = model_flops_per_image(embedder.model)
    print(f"embedder (EfficientNet-Lite0 classifier, 224 px): {embedder_flops / 1e9:.2f} GFLOP, "
          f"{embedder_ms:.0f} ms per photo (batch 1); computed once per photo in training")

    tutorial_config = ColorizerConfig(architecture="koalarization", embedder_weights="")
    tutorial = build_colorizer(tutorial_config)
    unet_config = ColorizerConfig(architecture="lite0-unet", embedder_weights="", encoder_weights="")
    unet = build_colorizer(unet_config)
    for label, model in (("koalarization (tutorial)", tutorial), ("lite0-unet", unet)):
        flops = model_flops_per_image(model)
        single = 1000 * median_seconds(lambda: model.predict_on_batch([photos(1), embeddings(1)]), arguments.repeats)
        batch = 1000 * median_seconds(lambda: model.predict_on_batch([photos(8), embeddings(8)]), arguments.repeats) / 8
        results[label] = {"gflop": flops / 1e9, "ms_batch_1": single, "ms_batch_8": batch}
        print(f"\n{label}: {model.count_params() / 1e6:.2f} M parameters, {flops / 1e9:.2f} GFLOP forward per 256-px photo")
        print(f"  inference: {single:.0f} ms per photo at batch 1, {batch:.0f} ms per photo at batch 8 (+ embedder)")

    tutorial_target = rng.uniform(-0.5, 0.5, (16, 256, 256, 2)).astype("float32")
    rate = train_rate(tutorial, [photos(16), embeddings(16)], tutorial_target)
    results["koalarization (tutorial)"]["train_photos_per_second"] = rate
    print(f"\ntraining, koalarization, batch 16, end to end: {rate:.1f} photos/s")

    encoder = unet.get_layer(lite0_unet.ENCODER_NAME)
    encoder_flops = model_flops_per_image(encoder)
    cache_rate = 32 / median_seconds(lambda: encoder.predict_on_batch(photos(32)), arguments.repeats)
    decoder = unet.get_layer(lite0_unet.DECODER_NAME)
    shapes = lite0_unet.feature_shapes(256)
    features = [rng.normal(size=(32,) + shapes[factor]).astype("float32") for factor in (4, 8, 16)]
    decoder_inputs = features + [embeddings(32)]
    target = rng.uniform(-0.5, 0.5, (32,) + tuple(decoder.output.shape[1:])).astype("float32")
    lite0_unet.set_fine_tuning(decoder, False)
    frozen = train_rate(decoder, decoder_inputs, target)
    lite0_unet.set_fine_tuning(decoder, True)
    fine_tuned = train_rate(decoder, decoder_inputs, target)
    results["lite0-unet"].update(train_photos_per_second=frozen, fine_tune_photos_per_second=fine_tuned,
                                 cache_photos_per_second=cache_rate)
    print(f"training, lite0-unet, batch 32, on cached features: {frozen:.1f} photos/s (stages 6-7 frozen), "
          f"{fine_tuned:.1f} photos/s (stages 6-7 fine-tuned)")
    print(f"  one-off feature cache (frozen stem + stages 1-5, {encoder_flops / 1e9:.2f} GFLOP): "
          f"{cache_rate:.1f} photos/s at batch 32")
    # the classification head (Zhang et al.'s classes): its loss once cost more than the decoder
    from koala import losses

    bins = losses.in_gamut_bins()
    class_weights = np.ones(len(bins), np.float32)

    def dense_classification_loss(ab_true, logits):  # the same loss with every class's distance measured
        return losses.classification_loss(ab_true, logits, bins, class_weights, encode=losses.dense_soft_targets)

    classes_config = ColorizerConfig(architecture="lite0-unet", loss="classification", embedder_weights="",
                                     encoder_weights="")
    classes_decoder = build_colorizer(classes_config).get_layer(lite0_unet.DECODER_NAME)
    lite0_unet.set_fine_tuning(classes_decoder, False)
    ab_target = rng.uniform(-0.3, 0.3, (32, 64, 64, 2)).astype("float32")
    classification_rates = {}
    for label, loss in (("sparse", losses.make_loss("classification", class_weights)),
                        ("dense", dense_classification_loss)):
        classes_decoder.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
        classification_rates[label] = 32 / median_seconds(
            lambda: classes_decoder.train_on_batch(decoder_inputs, ab_target), arguments.repeats, warmup=2)
    results["lite0-unet"].update(classification_train_photos_per_second=classification_rates["sparse"],
                                 classification_dense_train_photos_per_second=classification_rates["dense"])
    print(f"training, lite0-unet classification head, batch 32, on cached features (stages 6-7 frozen): "
          f"{classification_rates['sparse']:.1f} photos/s with the sparse soft encoding, "
          f"{classification_rates['dense']:.1f} with the dense one "
          f"({classification_rates['sparse'] / classification_rates['dense']:.2f}× in this run)")
    tutorial_rate = results["koalarization (tutorial)"]["train_photos_per_second"]
    print(f"\nratios in this run: lite0-unet trains {frozen / tutorial_rate:.1f}× as many photos/s as the tutorial "
          f"network; its forward costs {results['lite0-unet']['gflop'] / results['koalarization (tutorial)']['gflop']:.2f}× "
          f"the GFLOP and {results['lite0-unet']['ms_batch_8'] / results['koalarization (tutorial)']['ms_batch_8']:.2f}× "
          "the time per photo at batch 8")
    return results


if __name__ == "__main__":
    main()
