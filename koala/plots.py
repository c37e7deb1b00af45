"""Figures: sample grids during training; the evaluation report's three-panel figures, best/worst grid and
colourfulness histogram.

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


def _show(axis, image: np.ndarray, label: str = "", fontsize: int = 10) -> None:
    axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    axis.set_axis_off()
    if label:
        axis.set_title(label, fontsize=fontsize)


def three_panel_figure(
    original: np.ndarray,
    grey: np.ndarray | None,
    recoloured: np.ndarray,
    title: str = "",
    captions: tuple[str, str, str] = ("original colours", "colours removed", "recoloured"),
):
    """The figure users expect: original colours / colours removed / recoloured, side by side.

    Args:
        original: the true colour photo, uint8 (H, W, 3).
        grey: the same photo with its colours removed; ``None`` computes it (L* kept, a* = b* = 0).
        recoloured: the colouriser's output, same size.
        title: drawn above the panels (e.g. the file name and its metrics).
        captions: the three panel titles.

    Returns:
        A ``matplotlib.figure.Figure`` (show it in a notebook, or :func:`save_figure` it).
    """
    from matplotlib.figure import Figure

    if grey is None:
        from koala.metrics import grey_baseline

        grey = grey_baseline(original)
    height, width = np.asarray(original).shape[:2]
    panel_width = 3.2
    figure = Figure(figsize=(3 * panel_width, panel_width * height / width + (0.7 if title else 0.35)))
    axes = figure.subplots(1, 3, squeeze=True)
    for axis, image, caption in zip(axes, (original, grey, recoloured), captions):
        _show(axis, np.asarray(image), caption)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def best_worst_grid(
    best: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    worst: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    title: str = "",
):
    """A grid of the best and the worst images: one row each, original / colours removed / recoloured.

    Args:
        best, worst: lists of ``(label, original, grey, recoloured)``; the label (e.g. name and PSNR gain)
            is written beside the row.
    """
    from matplotlib.figure import Figure

    rows = [("best", item) for item in best] + [("worst", item) for item in worst]
    if not rows:
        raise ValueError("best_worst_grid needs at least one image")
    figure = Figure(figsize=(7.5, 2.5 * len(rows) + (0.5 if title else 0)), layout="constrained")
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row, (group, (label, original, grey, recoloured)) in enumerate(rows):
        for column, (image, caption) in enumerate(
            ((original, "original colours"), (grey, "colours removed"), (recoloured, "recoloured"))
        ):
            _show(axes[row][column], np.asarray(image), caption if row == 0 else "")
        axes[row][0].text(
            -0.05, 0.5, f"{group}: {label}", transform=axes[row][0].transAxes, rotation=90,
            ha="right", va="center", fontsize=8,
        )
    if title:
        figure.suptitle(title)
    return figure


def colorfulness_histogram(predicted: list[float], truth: list[float], title: str = "", bins: int = 30):
    """Histogram of per-image colourfulness: the colouriser's outputs against the true photos.

    A model whose outputs sit far left of the truth has collapsed towards grey/sepia.
    """
    from matplotlib.figure import Figure

    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    values = np.concatenate([predicted, truth])
    values = values[np.isfinite(values)]
    top = float(values.max()) if values.size else 1.0
    edges = np.linspace(0.0, max(top, 1.0) * 1.02, bins + 1)
    figure = Figure(figsize=(6.0, 3.6))
    axis = figure.subplots()
    axis.hist(truth, bins=edges, alpha=0.55, label=f"true photos (mean {np.nanmean(truth):.1f})", color="tab:blue")
    axis.hist(predicted, bins=edges, alpha=0.55, label=f"recoloured (mean {np.nanmean(predicted):.1f})",
              color="tab:orange")
    axis.set_xlabel("colourfulness (Hasler & Süsstrunk M3)")
    axis.set_ylabel("images")
    axis.legend(fontsize=9)
    axis.set_title(title or "colourfulness: recoloured vs true photos", fontsize=10)
    figure.tight_layout()
    return figure
