"""Figures: sample grids during training; the evaluation report's three-panel figures, best/worst grid and
colourfulness histogram.

Figures are drawn on ``matplotlib.figure.Figure`` objects directly (no pyplot, no global backend
switch), so importing Koala never changes a notebook's plotting set-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def figure_png(figure, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes: for a file, or ``IPython.display.Image(data=...)`` in a notebook (which
    shows it whatever the notebook's plotting set-up, since Koala's figures are not pyplot figures)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(figure, path: str | Path, dpi: int = 100) -> None:
    """Save a matplotlib figure atomically (PNG)."""
    from koala.outputs import write_bytes_atomic

    write_bytes_atomic(path, figure_png(figure, dpi=dpi))


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


def picture_columns(columns: list[tuple[str, list[np.ndarray]]], fontsize: int = 8):
    """A grid of pictures: one column per ``(title, pictures)``, the same number of pictures in each
    (e.g. the same photos under several models). Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    rows = len(columns[0][1])
    if not rows or any(len(pictures) != rows for _, pictures in columns):
        raise ValueError("every column needs the same, non-zero number of pictures")
    figure = Figure(figsize=(2.2 * len(columns), 2.2 * rows))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for column, (title, pictures) in enumerate(columns):
        for row in range(rows):
            _show(axes[row][column], pictures[row], title if row == 0 else "", fontsize=fontsize)
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


_BOX_HALF_WIDTH, _BOX_HALF_HEIGHT = 0.85, 0.45
_BOX_COLOURS = {  # kind: (face, edge)
    "data": ("#ffffff", "#555555"),
    "frozen": ("#e3e7ee", "#6b7a90"),
    "fine-tuned": ("#fbe8d3", "#c0702a"),
    "trained": ("#e8f0fa", "#3b6ea5"),
}
_BOX_LEGEND = {
    "frozen": "frozen (computed once, cached)",
    "fine-tuned": "ImageNet start, fine-tuned in phase 2",
    "trained": "trained",
}


def _shape_text(tensor) -> str:
    return " × ".join(str(size) for size in tuple(tensor.shape)[1:])


def _output_text(model) -> str:
    classes = "ab_classes" in {layer.name for layer in getattr(model, "layers", [])}
    return f"{_shape_text(model.output)}\n{'ab class scores' if classes else '(a*, b*)'}"


def _draw_boxes(boxes: dict, arrows: list, title: str):
    """Boxes ``{name: (x, y, text, kind)}`` joined by arrows ``[(start, end, label)]``; returns the Figure."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    figure = Figure()
    axis = figure.subplots()
    for x, y, text, kind in boxes.values():
        face, edge = _BOX_COLOURS[kind]
        axis.add_patch(FancyBboxPatch((x - _BOX_HALF_WIDTH, y - _BOX_HALF_HEIGHT), 2 * _BOX_HALF_WIDTH,
                                      2 * _BOX_HALF_HEIGHT, boxstyle="round,pad=0.05", facecolor=face, edgecolor=edge))
        axis.text(x, y, text, ha="center", va="center", fontsize=8)
    for start, end, label in arrows:
        (x0, y0), (x1, y1) = boxes[start][:2], boxes[end][:2]
        dx, dy = x1 - x0, y1 - y0
        # leave each box where the line from its centre to the other's crosses its edge (plus a margin)
        reach = min(_BOX_HALF_WIDTH / abs(dx) if dx else float("inf"),
                    _BOX_HALF_HEIGHT / abs(dy) if dy else float("inf"))
        margin = 0.12 / (dx * dx + dy * dy) ** 0.5
        tail = (x0 + dx * (reach + margin), y0 + dy * (reach + margin))
        head = (x1 - dx * (reach + margin), y1 - dy * (reach + margin))
        skip = label == "skip"
        axis.add_patch(FancyArrowPatch(tail, head, arrowstyle="-|>", mutation_scale=10, color="#3b6ea5",
                                       linestyle="--" if skip else "-", label=f"{label or 'arrow'}: {start} -> {end}"))
        if label:
            axis.text((tail[0] + head[0]) / 2, (tail[1] + head[1]) / 2 + 0.08, label, ha="center", va="bottom",
                      fontsize=7, color="#3b6ea5")
    kinds = [kind for kind in _BOX_LEGEND if any(box[3] == kind for box in boxes.values())]
    if len(kinds) > 1:
        handles = [Patch(facecolor=_BOX_COLOURS[kind][0], edgecolor=_BOX_COLOURS[kind][1], label=_BOX_LEGEND[kind])
                   for kind in kinds]
        axis.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=8,
                    frameon=False)
    xs = [box[0] for box in boxes.values()]
    ys = [box[1] for box in boxes.values()]
    axis.set_xlim(min(xs) - 1, max(xs) + 1)
    axis.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    # the same size per unit whatever the network: 1.3 inches per box column unit, 1 inch per row unit
    figure.set_size_inches(1.3 * (max(xs) - min(xs) + 2), max(ys) - min(ys) + 1.4 + 0.8)
    axis.set_axis_off()
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def _koalarization_figure(model, embedder: str):
    names = {layer.name for layer in model.layers}
    fusion = "fusion" in names
    encoder = _shape_text(model.get_layer("encoder_8").output)
    boxes = {
        "input": (0.0, 1.0, f"lightness L*\n{_shape_text(model.get_layer('lightness').output)}", "data"),
        "encoder": (2.0, 1.0, f"encoder\n8 convolutions\n→ {encoder}", "trained"),
    }
    arrows = [("input", "encoder", "")]
    if fusion:
        side = " × ".join(encoder.split(" × ")[:2])
        embedding = _shape_text(model.get_layer("embedding").output)
        boxes.update({
            "fusion": (4.0, 1.0, f"fusion: concatenate\n→ {_shape_text(model.get_layer('fusion').output)}",
                       "trained"),
            "mix": (6.0, 1.0, f"1 × 1 convolution\n→ {_shape_text(model.get_layer('fusion_mix').output)}",
                    "trained"),
            "classifier": (0.0, -0.6, f"frozen {embedder or 'classifier'}\nreads the grey photo\n(run once, cached)",
                           "frozen"),
            "embedding": (2.0, -0.6, f"embedding\n{embedding}", "data"),
            "repeat": (4.0, -0.6, f"repeated at every position\n{side} × {embedding}", "trained"),
        })
        arrows += [("encoder", "fusion", ""), ("fusion", "mix", ""), ("classifier", "embedding", ""),
                   ("embedding", "repeat", ""), ("repeat", "fusion", "")]
    last = "mix" if fusion else "encoder"
    x = boxes[last][0] + 2.0
    boxes["decoder"] = (x, 1.0, "decoder\nconvolutions + upsampling", "trained")
    boxes["output"] = (x + 2.0, 1.0, _output_text(model), "data")
    arrows += [(last, "decoder", ""), ("decoder", "output", "")]
    kind = "fusion network" if fusion else "encoder-decoder"
    size = model.get_layer("lightness").output.shape[1]
    title = f"Koala's {kind} (koalarization) at {size} px: {model.count_params() / 1e6:.1f} M parameters"
    return _draw_boxes(boxes, arrows, title)


def _stage_range(first: int, last: int) -> str:
    return f"stage {last}" if first == last else f"stages {first}-{last}"


def _lite0_unet_figure(model, embedder: str):
    from koala import efficientnet_lite, lite0_unet

    encoder = model.get_layer(lite0_unet.ENCODER_NAME)
    decoder = model.get_layer(lite0_unet.DECODER_NAME)
    names = {layer.name for layer in decoder.layers}
    fusion = "fusion" in names
    factors = sorted(lite0_unet.SKIP_STAGES)  # 4, 8, 16: the encoder, top to bottom
    step = 1.4  # vertical distance between rows of boxes
    lightness = _shape_text(model.get_layer("lightness").output)
    boxes = {"input": (0.0, step * (len(factors) + 1), f"lightness L*\n{lightness}\n→ grey sRGB, 3 channels", "data")}
    arrows, previous, first_stage = [], "input", 1
    for row, factor in enumerate(factors):
        stage = lite0_unet.SKIP_STAGES[factor]
        stages = ("stem + " if first_stage == 1 else "") + _stage_range(first_stage, stage)
        features = _shape_text(decoder.get_layer(f"features_{factor}").output)
        text = f"Lite0 {stages}\n1/{factor} of the side\n→ {features}"
        boxes[f"encoder_{factor}"] = (0.0, step * (len(factors) - row), text, "frozen")
        arrows.append((previous, f"encoder_{factor}", ""))
        previous, first_stage = f"encoder_{factor}", stage + 1
    bottleneck = decoder.get_layer("fusion").input[0] if fusion else decoder.get_layer("fusion_mix").input
    bottom = _stage_range(lite0_unet.FROZEN_STAGES + 1, len(efficientnet_lite.STAGES))
    factor = model.get_layer("lightness").output.shape[1] // bottleneck.shape[1]
    boxes["bottleneck"] = (0.0, 0.0, f"Lite0 {bottom}\n1/{factor} of the side\n→ {_shape_text(bottleneck)}",
                           "fine-tuned")
    arrows.append((previous, "bottleneck", ""))
    previous = "bottleneck"
    if fusion:
        embedding = _shape_text(decoder.get_layer("embedding").output)
        boxes.update({
            "fusion": (2.0, 0.0, f"fusion: embedding repeated\nand concatenated\n→ "
                                 f"{_shape_text(decoder.get_layer('fusion').output)}", "trained"),
            "embedding": (2.0, -step, f"embedding\n{embedding}", "data"),
            "classifier": (0.0, -step, f"frozen {embedder or 'classifier'}\nreads the grey photo\n(run once, cached)",
                           "frozen"),
        })
        arrows += [("bottleneck", "fusion", ""), ("classifier", "embedding", ""), ("embedding", "fusion", "")]
        previous = "fusion"
    mix = _shape_text(decoder.get_layer("fusion_mix").output)
    boxes["mix"] = (4.0, 0.0, f"1 × 1 convolution\n→ {mix}", "trained")
    arrows.append((previous, "mix", ""))
    previous = "mix"
    for row, factor in enumerate(reversed(factors)):
        convolution = decoder.get_layer(f"decoder_{factor}_convolution")
        boxes[f"decoder_{factor}"] = (4.0, step * (row + 1), f"upsample × 2, join skip,\n3 × 3 convolution\n"
                                                       f"→ {_shape_text(convolution.output)}", "trained")
        arrows += [(previous, f"decoder_{factor}", ""), (f"encoder_{factor}", f"decoder_{factor}", "skip")]
        previous = f"decoder_{factor}"
    boxes["output"] = (4.0, step * (len(factors) + 1), _output_text(decoder), "data")
    arrows.append((previous, "output", ""))
    size = model.get_layer("lightness").output.shape[1]
    title = (f"Koala's Lite0 U-Net (lite0-unet) at {size} px: {model.count_params() / 1e6:.1f} M parameters, "
             f"{encoder.count_params() / 1e6:.1f} M of them frozen")
    return _draw_boxes(boxes, arrows, title)


def architecture_figure(model, embedder: str = ""):
    """Draw a colouriser's network as boxes and arrows, every shape read from ``model`` itself.

    Either architecture of :func:`koala.architectures.build_colorizer`: the tutorial's fusion network
    ("koalarization": encoder, fusion with the classifier's embedding, decoder), or the pretrained-encoder
    U-Net ("lite0-unet": Lite0 encoder stages top to bottom, skip connections across, fusion at the bottom,
    decoder back up), with or without fusion, with the ab or the ab-classes head. Shapes follow the model's
    ``image_size``; nothing is drawn from a fixed table.

    Args:
        model: the head (``build_colorizer(config)``, or a loaded ``model.keras``).
        embedder: the frozen classifier's name for its box (``config.embedder``).

    Returns:
        A ``matplotlib.figure.Figure``.

    Raises:
        ValueError: ``model`` is not one of Koala's colourisers.
    """
    from koala import lite0_unet

    names = {layer.name for layer in model.layers}
    if {lite0_unet.ENCODER_NAME, lite0_unet.DECODER_NAME} <= names:
        return _lite0_unet_figure(model, embedder)
    if {"lightness", "encoder_8"} <= names:
        return _koalarization_figure(model, embedder)
    raise ValueError(f"{model.name}: not a Koala colouriser (neither koalarization nor lite0-unet layers found)")


def training_curves(run_dir: str | Path):
    """A run's learning curves, from its folder (``history.csv`` and ``config.json``).

    Left: training and validation loss per epoch. Right: the colourfulness of the validation predictions as a
    fraction of the true photos', with the line below which training warns of colour collapse. For a
    ``lite0-unet`` run that reached its second phase, a dotted line marks where Lite0's stages 6-7 began to train.

    Returns:
        A ``matplotlib.figure.Figure``.

    Raises:
        ValueError: the run has no completed epoch yet.
    """
    import csv

    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from koala.config import ColorizerConfig

    run_dir = Path(run_dir)
    with open(run_dir / "history.csv", newline="", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    if not history:
        raise ValueError(f"{run_dir}: no completed epoch in history.csv yet")
    config = ColorizerConfig.load(run_dir / "config.json")

    def series(key: str) -> tuple[list[int], list[float]]:
        rows = [row for row in history if row.get(key) not in (None, "")]
        return [int(row["epoch"]) for row in rows], [float(row[key]) for row in rows]

    figure = Figure(figsize=(11, 3.5))
    loss_axis, colour_axis = figure.subplots(1, 2)
    for key in ("loss", "val_loss"):
        epochs, values = series(key)
        if values:
            loss_axis.plot(epochs, values, marker="o", label=key)
    loss_axis.set_ylabel("mean squared error of a*, b*" if config.loss == "mse" else f"{config.loss} loss")
    epochs, ratios = series("val_colorfulness_ratio")
    if ratios:
        colour_axis.plot(epochs, ratios, marker="o", label="validation predictions")
        colour_axis.axhline(config.collapse_fraction, color="tab:red", linestyle="--", label="collapse warning")
    colour_axis.set_ylabel("colourfulness: predicted / true")
    last_epoch = max(int(row["epoch"]) for row in history)
    fine_tuned = config.architecture == "lite0-unet" and 0 < config.fine_tune_after < last_epoch
    for axis in (loss_axis, colour_axis):
        if fine_tuned:
            axis.axvline(config.fine_tune_after + 0.5, color="tab:green", linestyle=":", label="stages 6-7 train")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=9)
    figure.suptitle(f"{run_dir.name} ({config.architecture})", fontsize=10)
    figure.tight_layout()
    return figure
