"""Figures: sample grids during training (the evaluation issue adds the report figures).

Figures are drawn on ``matplotlib.figure.Figure`` objects directly (no pyplot, no global backend
switch), so importing Koala never changes a notebook's plotting set-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_figure(figure, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure atomically (PNG)."""
    import io

    from koala.images import write_bytes_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def sample_grid(grey: list[np.ndarray], predicted: list[np.ndarray], truth: list[np.ndarray], title: str = ""):
    """A figure with one row per image: grey input / predicted colours / true colours."""
    from matplotlib.figure import Figure

    rows = len(grey)
    figure = Figure(figsize=(7.5, 2.5 * rows + (0.4 if title else 0)))
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        for column, (image, label) in enumerate(
            ((grey[row], "grey input"), (predicted[row], "predicted"), (truth[row], "true colours"))
        ):
            axis = axes[row][column]
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            axis.set_axis_off()
            if row == 0:
                axis.set_title(label, fontsize=10)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
