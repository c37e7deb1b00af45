"""Koala: colourise black-and-white photos with a small Keras 3 network.

Typical use::

    import koala
    colorizer = koala.Colorizer()                 # the default model in models/default
    rgb = colorizer.colorize("old-photo.jpg")     # uint8 array at the photo's own resolution
"""

__version__ = "0.1.0"

__all__ = ["Colorizer", "ColorizerConfig", "ImageError", "__version__"]


def __getattr__(name):
    # Import lazily so that `import koala` stays fast and never imports a Keras backend by itself.
    if name == "Colorizer":
        from koala.colorize import Colorizer

        return Colorizer
    if name == "ColorizerConfig":
        from koala.config import ColorizerConfig

        return ColorizerConfig
    if name == "ImageError":
        from koala.images import ImageError

        return ImageError
    raise AttributeError(f"module 'koala' has no attribute {name!r}")
