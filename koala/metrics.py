"""Image-quality measures for colourisation.

(The evaluation issue extends this module; :func:`colorfulness` is used during training.)
"""

from __future__ import annotations

import numpy as np


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk's colourfulness (2003, the M3 metric) of a uint8 sRGB image (H, W, 3).

    ``rg = R - G``, ``yb = (R + G) / 2 - B``; M3 = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²),
    on 0..255 values. A grey image scores 0; typical photos 20-60.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mean = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * mean)
