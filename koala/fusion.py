"""The fusion layer: a global embedding repeated over every position of a feature map and joined to it.

Reference:
    F. Baldassarre, D. González Morín, L. Rodés-Guirao, "Deep Koalarization: Image Colorization using
    CNNs and Inception-ResNet-v2", 2017 (arXiv:1712.03400), section 3.2.

Both architectures fuse the classifier's embedding this way: the tutorial's network (:mod:`koala.model`) at
its 32 × 32 bottleneck, the pretrained-encoder U-Net (:mod:`koala.lite0_unet`) at 1/32 of the side.
"""

from __future__ import annotations

import keras
from keras import layers


# Registered as "koala>FusionLayer": saved models name it so (older ones with the module koala.model, which
# still imports it), so the package and class name must not change.
@keras.saving.register_keras_serializable(package="koala")
class FusionLayer(layers.Layer):
    """Repeat a global embedding over every position of a feature map and concatenate it.

    Input: ``[features (batch, height, width, channels), embedding (batch, embedding_dim)]``.
    Output: ``(batch, height, width, channels + embedding_dim)``. The 1 × 1 convolution that mixes the
    two follows this layer in each architecture's builder.
    """

    def call(self, inputs):
        features, embedding = inputs
        height, width = keras.ops.shape(features)[1], keras.ops.shape(features)[2]
        embedding = keras.ops.cast(embedding, features.dtype)
        grid = keras.ops.expand_dims(keras.ops.expand_dims(embedding, 1), 1)
        grid = keras.ops.tile(grid, [1, height, width, 1])
        return keras.ops.concatenate([features, grid], axis=-1)

    def compute_output_shape(self, input_shapes):
        features_shape, embedding_shape = input_shapes
        return tuple(features_shape[:-1]) + (features_shape[-1] + embedding_shape[-1],)

    def get_config(self):
        return super().get_config()
