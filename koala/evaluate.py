"""Evaluation that tells the truth: a model's numbers next to the grey baseline's, on images it never saw.

How an image is scored::

    true colour photo, 256 x 256 (a prepared set's test split, or any photo resized and centre-cropped)
        -> its L* -> the model -> predicted ab at 256 -> joined with the same L* -> "recoloured"
        -> its L* with a* = b* = 0 ..................................................... "grey baseline"
    PSNR, SSIM, colourfulness and ab-error AuC of both against the true photo (koala.metrics)

The grey baseline is scored in the same run on the same images, so a reader can see at once whether the
model adds anything over no colour at all; PSNR and SSIM are dominated by the lightness, which both share,
so only the difference between the rows means anything.

Typical use::

    from koala.evaluate import evaluate
    result = evaluate("models/default", "data/prepared/mine", report_dir="reports/default")
    print(result.markdown())
"""

from __future__ import annotations

import csv
import dataclasses
import heapq
import io
import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from koala import color, images, metrics, outputs

FIGURE_LIMIT = 24
"""Three-panel figures written per report (the first images only)."""

EXTREMES = 4
"""Images shown in each of the best and worst groups of the report's grid."""

BATCH_SIZE = 16

CSV_FIELDS = (
    "name",
    "model_psnr", "model_ssim", "model_auc", "model_colorfulness", "model_colorfulness_ratio",
    "grey_psnr", "grey_ssim", "grey_auc", "grey_colorfulness",
    "true_colorfulness", "psnr_gain",
)


@dataclasses.dataclass
class ImageEvaluation:
    """One image's metrics: the model's output and the grey baseline, each against the true photo."""

    name: str
    model: metrics.ImageMetrics
    grey: metrics.ImageMetrics

    @property
    def psnr_gain(self) -> float:
        """Model PSNR minus grey-baseline PSNR in dB (positive: the colours helped)."""
        gain = self.model.psnr - self.grey.psnr
        return gain if not math.isnan(gain) else 0.0

    def as_row(self) -> dict:
        return {
            "name": self.name,
            "model_psnr": self.model.psnr,
            "model_ssim": self.model.ssim,
            "model_auc": self.model.auc,
            "model_colorfulness": self.model.colorfulness,
            "model_colorfulness_ratio": self.model.colorfulness_ratio,
            "grey_psnr": self.grey.psnr,
            "grey_ssim": self.grey.ssim,
            "grey_auc": self.grey.auc,
            "grey_colorfulness": self.grey.colorfulness,
            "true_colorfulness": self.model.true_colorfulness,
            "psnr_gain": self.psnr_gain,
        }


@dataclasses.dataclass
class SummaryRow(metrics.ImageMetrics):
    """One row of the summary table: the averages of one method (the model, or the grey baseline)."""

    method: str = ""
    images: int = 0


@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` and :func:`evaluate_arrays` return.

    Attributes:
        images: per-image metrics, in the order the images were read.
        summary: the averaged rows, model first then the grey baseline.
        model: the model folder (or a label given to :func:`evaluate_arrays`).
        data: where the images came from.
        split: the prepared set's split evaluated, or None for a plain folder or arrays.
        skipped: one line per image that could not be used ("name: reason").
        report_dir: the report folder, if one was written.
        warnings: caveats a reader of the numbers should see (they are also written to summary.md).
    """

    images: list[ImageEvaluation]
    summary: list[SummaryRow]
    model: str = ""
    data: str = ""
    split: str | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)
    report_dir: Path | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    image_sizes: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    """The distinct (height, width) of the images scored."""

    @property
    def wins(self) -> int:
        """Images on which the model's PSNR beats the grey baseline's."""
        return sum(item.psnr_gain > 0 for item in self.images)

    def summary_dict(self) -> dict[str, dict]:
        """The summary as ``{method: {metric: value}}``, e.g. ``result.summary_dict()["model"]["auc"]``."""
        return {row.method: dataclasses.asdict(row) for row in self.summary}

    def markdown(self) -> str:
        """The report's summary.md: a header line, the table, and what to read into it."""
        return format_summary(self)


# --- scoring ---------------------------------------------------------------------------------------
class _Scorer:
    """Scores images one at a time, keeping only what the report needs (memory independent of the set's size)."""

    def __init__(self, report_dir: Path | None, figure_limit: int, extremes: int = EXTREMES):
        self.report_dir = report_dir
        self.figure_limit = figure_limit if report_dir is not None else 0
        self.extremes = extremes if report_dir is not None else 0
        self.results: list[ImageEvaluation] = []
        self.sizes: set[tuple[int, int]] = set()
        self._best: list = []   # min-heap on gain: the largest gains survive
        self._worst: list = []  # min-heap on -gain: the smallest gains survive
        self._counter = itertools.count()
        if self.figure_limit:
            panels = report_dir / "panels"
            panels.mkdir(parents=True, exist_ok=True)
            for old in panels.glob("[0-9][0-9][0-9]*-*.png"):  # from an earlier run of this report
                old.unlink()

    def add(self, name: str, predicted: np.ndarray, truth: np.ndarray) -> ImageEvaluation:
        grey = metrics.grey_baseline(truth)
        result = ImageEvaluation(name, metrics.image_metrics(predicted, truth), metrics.image_metrics(grey, truth))
        index = len(self.results)
        self.results.append(result)
        self.sizes.add(tuple(truth.shape[:2]))
        if index < self.figure_limit:
            from koala import plots

            figure = plots.three_panel_figure(truth, grey, predicted, title=_panel_title(result))
            plots.save_figure(figure, self.report_dir / "panels" / f"{index + 1:03d}-{_safe_name(name)}.png", dpi=80)
        if self.extremes:
            gain, order = result.psnr_gain, next(self._counter)
            item = (name, truth, grey, predicted, result)
            _push_bounded(self._best, (gain, order, item), self.extremes)
            _push_bounded(self._worst, (-gain, order, item), self.extremes)
        return result

    def extremes_found(self) -> tuple[list, list]:
        best = [entry[2] for entry in sorted(self._best, key=lambda entry: -entry[0])]
        names = {item[0] for item in best}
        worst = [entry[2] for entry in sorted(self._worst, key=lambda entry: -entry[0])]
        worst = [item for item in worst if item[0] not in names]
        if len(self.results) < 2 * self.extremes:  # a small set: split it rather than show images twice
            keep = max(1, (len(self.results) + 1) // 2)
            best = best[:keep]
            worst = [item for item in worst if item[0] not in {entry[0] for entry in best}]
        return best, worst


def _push_bounded(heap: list, entry: tuple, size: int) -> None:
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry[:2] > heap[0][:2]:
        heapq.heapreplace(heap, entry)


def _panel_title(result: ImageEvaluation) -> str:
    return (
        f"{result.name}: PSNR {result.model.psnr:.2f} dB (grey {result.grey.psnr:.2f}), "
        f"AuC {result.model.auc:.3f} (grey {result.grey.auc:.3f}), "
        f"colourfulness {result.model.colorfulness:.1f} (true {result.model.true_colorfulness:.1f})"
    )


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(name).with_suffix(""))).strip("._")
    return stem[:60] or "image"


def summarise(results: list[ImageEvaluation]) -> list[SummaryRow]:
    """Average per-image results into the table's rows: model, then grey baseline."""
    rows = []
    for method, attribute in (("model", "model"), ("grey baseline", "grey")):
        mean = metrics.mean_metrics([getattr(item, attribute) for item in results])
        rows.append(SummaryRow(method=method, images=len(results), **dataclasses.asdict(mean)))
    return rows


def evaluate_arrays(
    predicted: Iterable[np.ndarray],
    truth: Iterable[np.ndarray],
    names: Iterable[str] | None = None,
    *,
    report_dir: str | os.PathLike | None = None,
    figure_limit: int = FIGURE_LIMIT,
    model_label: str = "",
    data_label: str = "",
) -> EvaluationResult:
    """Score predictions against their true photos, with the grey baseline of each truth alongside.

    For code that makes its predictions some other way (another recipe, another colouriser): give the
    outputs and the true photos, uint8 RGB of matching shapes.

    Args:
        predicted: the colourised images.
        truth: the true colour photos, in the same order.
        names: a name per image (default ``image-001``, ...).
        report_dir: if given, write the report (:func:`write_report`) there.
        figure_limit: three-panel figures written for the first this-many images.
        model_label, data_label: what to call the model and the data in the report.
    """
    names = names if names is not None else (f"image-{index:03d}" for index in itertools.count(1))
    report_path = Path(report_dir) if report_dir is not None else None
    scorer = _Scorer(report_path, figure_limit)
    for name, output, true in zip(names, predicted, truth):
        scorer.add(str(name), np.asarray(output), np.asarray(true))
    return _finish(scorer, model=model_label, data=data_label, split=None, skipped=[], warnings=[])


def _finish(scorer: _Scorer, **fields) -> EvaluationResult:
    result = EvaluationResult(images=scorer.results, summary=summarise(scorer.results),
                              image_sizes=sorted(scorer.sizes), **fields)
    if scorer.report_dir is not None:
        result.report_dir = scorer.report_dir
        write_report(result, scorer)
    return result


# --- the data --------------------------------------------------------------------------------------
def evaluation_images(
    data: str | os.PathLike, split: str = "test", size: int = color.IMAGE_SIZE, log=print, full_size: bool = False
) -> tuple[Iterator[tuple[str, np.ndarray]], str | None]:
    """The (name, uint8 RGB) images to evaluate, and the split used (None for a plain folder).

    A folder with a ``manifest.csv`` is a prepared set: its ``split`` images (size × size) are used as they
    are. Any other folder (or a single photo) is read photo by photo: upright, and resized and centre-cropped
    to ``size``, or with ``full_size`` kept at its own size (what a user of ``koala colorize`` gets).
    Unreadable and grey or single-tone photos are skipped with a one-line message (the latter would only
    flatter the grey baseline; ``koala prepare`` leaves them out too).
    """
    from koala import data as prepared_data

    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such file or folder")
    if full_size and (data / "manifest.csv").exists():
        raise ValueError(f"{data}: a prepared set holds {size}-px copies, not photos at their own size; "
                         "give the folder of the original photos")
    if (data / "manifest.csv").exists():
        rows = prepared_data.read_manifest(data)
        chosen = [row for row in rows if row["split"] == split]
        if not chosen:
            splits = sorted({row["split"] for row in rows})
            raise ValueError(f"{data}: no images in the {split!r} split (this set has: {', '.join(splits) or 'none'})")

        def prepared_images():
            for row in chosen:
                try:
                    rgb = prepared_data.load_prepared_image(data, row["id"])
                except OSError as error:
                    log(f"skipped: {row['source']}: cannot read {row['id']}.jpg ({error})")
                    continue
                if rgb.shape[:2] != (size, size):
                    rgb = images.resize_and_crop(rgb, size)
                yield row["source"], rgb

        return prepared_images(), split

    files = images.find_images([data])
    if not files:
        raise ValueError(f"{data}: no photos found (accepted: {', '.join(images.IMAGE_EXTENSIONS)})")

    def folder_images():
        for path, relative in files:
            name = str(relative) if data.is_dir() else path.name
            try:
                if full_size:
                    rgb = images.read_image(path)
                    square = images.resize_and_crop(rgb, size)
                else:
                    rgb = square = images.resize_and_crop(images.read_image(path, shrink_to=2 * size), size)
            except images.ImageError as error:
                log(f"skipped: {name}: {error.reason}")
                continue
            reason = prepared_data.monochrome_reason(square)
            if reason:
                log(f"skipped: {name}: {reason}")
                continue
            yield name, rgb

    return folder_images(), None


def _batches(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def predict(colorizer, truth: list[np.ndarray]) -> list[np.ndarray]:
    """The colouriser's output for each true photo, predicted in one batch from the photo's own L*.

    Images of the model's size go straight through ``predict_ab`` and are joined with their own L*
    (no resampling at all); other sizes go through :meth:`Colorizer.colorize_batch`.
    """
    size = colorizer.size
    if not truth:
        return []
    if any(image.shape[:2] != (size, size) for image in truth) or getattr(colorizer, "edge_radius", 0):
        return colorizer.colorize_batch(truth)
    lightness = np.stack([color.rgb_to_lightness(image) for image in truth])
    ab = colorizer.predict_ab(lightness)
    return [color.postprocess(color.normalize_lightness(lightness[index])[..., None], ab[index])
            for index in range(len(truth))]


def evaluate(
    model_or_colorizer,
    data: str | os.PathLike,
    split: str = "test",
    report_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    *,
    figure_limit: int = FIGURE_LIMIT,
    batch_size: int = BATCH_SIZE,
    embedder_weights: str | None = None,
    full_size: bool = False,
    chroma_scale: float | None = None,
    input_size: int | None = None,
    progress: bool = True,
    log=print,
) -> EvaluationResult:
    """Evaluate a colouriser against the grey baseline on a prepared set's split or a folder of colour photos.

    With ``full_size`` a folder's photos are scored at their own size, coloured exactly as ``koala colorize``
    colours them (colour predicted at the network's size, enlarged and joined with the photo's full-resolution
    lightness): the figures a user of the command would see. Without it every image is a 256-px square.

    Args:
        model_or_colorizer: a model folder, or a loaded :class:`koala.colorize.Colorizer`.
        data: a prepared set (folder with ``manifest.csv``) or any folder of colour photos (prepared in
            memory: see :func:`evaluation_images`).
        split: the prepared set's split to evaluate (ignored for a plain folder).
        report_dir: if given, write metrics.csv, summary.md and the figures there (:func:`write_report`).
        limit: evaluate only the first this-many usable images.
        figure_limit: three-panel figures for the first this-many images.
        batch_size: images predicted at once.
        embedder_weights: override a fusion model's embedder weights (as for ``koala colorize``).
        full_size: score a folder's photos at their own size (not for a prepared set).
        chroma_scale: override the model's chroma scale (only when a model folder is given).
        input_size: override the side the network reads photos at (as ``chroma_scale``; see
            :class:`koala.colorize.Colorizer`).

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        FileNotFoundError: ``data`` does not exist.
        ValueError: no usable images (an empty split or folder, or all of them unreadable).
    """
    from tqdm import tqdm

    from koala.colorize import Colorizer

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if isinstance(model_or_colorizer, (str, os.PathLike)):
        colorizer = Colorizer(model_or_colorizer, embedder_weights=embedder_weights, chroma_scale=chroma_scale,
                              input_size=input_size)
    elif chroma_scale is not None or input_size is not None:
        raise ValueError("chroma_scale and input_size are for a model folder; a loaded Colorizer keeps its own "
                         "(Colorizer(chroma_scale=..., input_size=...))")
    else:
        colorizer = model_or_colorizer
    model_label = str(getattr(colorizer, "model_path", "") or type(colorizer).__name__)
    skipped: list[str] = []

    def note(message: str) -> None:
        skipped.append(message.removeprefix("skipped: "))
        log(message)

    items, used_split = evaluation_images(data, split, size=getattr(colorizer, "size", color.IMAGE_SIZE), log=note,
                                          full_size=full_size)
    if limit is not None:
        items = itertools.islice(items, limit)
    report_path = Path(report_dir) if report_dir is not None else None
    scorer = _Scorer(report_path, figure_limit)
    bar = tqdm(desc="evaluate", unit="photo", disable=not progress)
    for batch in _batches(items, batch_size):
        names, truth = [name for name, _ in batch], [rgb for _, rgb in batch]
        for name, output, true in zip(names, predict(colorizer, truth), truth):
            scorer.add(name, output, true)
        bar.update(len(batch))
    bar.close()
    if not scorer.results:
        raise ValueError(f"{data}: no usable images to evaluate ({len(skipped)} skipped)")
    warnings = _caveats(colorizer, data, used_split, [item.name for item in scorer.results])
    for warning in warnings:
        log(f"warning: {warning}")
    return _finish(scorer, model=model_label, data=str(data), split=used_split, skipped=skipped, warnings=warnings)


def _caveats(colorizer, data, split: str | None, names: list[str]) -> list[str]:
    """Things that would make the numbers mislead: images the model was trained on, too few images."""
    caveats = []
    count = len(names)
    seen = _seen_in_training(colorizer, Path(data), split, names)
    if seen:
        caveats.append(
            f"{seen} of these {count} images are in the model's training split "
            f"({getattr(colorizer.config, 'data', '')}): the numbers flatter the model on new photos"
        )
    elif seen is None and split == "train":
        caveats.append("this is a training split; if the model was trained on it the numbers flatter it")
    if count < 20:
        caveats.append(f"only {count} images: small differences between the rows may be chance")
    return caveats


def _seen_in_training(colorizer, data: Path, split: str | None, names: list[str]) -> int | None:
    """How many evaluated images are in the training split of the set the model was trained on (None: unknown).

    Prepared images are named by a hash of their source file, so the same photo is found in any set.
    """
    from koala import data as prepared_data

    trained_on = getattr(getattr(colorizer, "config", None), "data", "")
    if not trained_on or not (Path(trained_on) / "manifest.csv").exists():
        return None
    training_ids = {row["id"] for row in prepared_data.read_manifest(trained_on) if row["split"] == "train"}
    if (data / "manifest.csv").exists():
        id_by_source = {row["source"]: row["id"] for row in prepared_data.read_manifest(data) if row["split"] == split}
        ids = [id_by_source.get(name) for name in names]
    else:
        ids = []
        for name in names:
            try:
                ids.append(prepared_data._hash_file(data / name if data.is_dir() else data)[:16])
            except OSError:
                ids.append(None)
    return sum(image_id in training_ids for image_id in ids)


# --- the report ------------------------------------------------------------------------------------
def _format_number(value: float, digits: int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def format_summary_table(summary: list[SummaryRow]) -> str:
    """The summary as a markdown table (rows: model, grey baseline), ready to paste into the README."""
    lines = [
        "| | PSNR (dB) ↑ | SSIM ↑ | colourfulness (× truth) | AuC ↑ |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        lines.append(
            f"| {row.method} | {_format_number(row.psnr, 2)} | {_format_number(row.ssim, 4)} | "
            f"{_format_number(row.colorfulness, 1)} ({_format_number(row.colorfulness_ratio, 2)}×) | "
            f"{_format_number(row.auc, 4)} |"
        )
    return "\n".join(lines) + "\n"


def _sizes(result: EvaluationResult) -> str:
    if len(result.image_sizes) == 1:
        height, width = result.image_sizes[0]
        return f"{width} × {height}"
    return "their own sizes"


def format_summary(result: EvaluationResult) -> str:
    """The whole summary.md: what was evaluated, the table, and how to read it."""
    count = len(result.images)
    source = f"split `{result.split}` of the prepared set `{result.data}`" if result.split else f"`{result.data}`"
    if not result.data:
        source = "the given arrays"
    lines = [
        "# Koala evaluation",
        "",
        f"{count} images from {source}; model `{result.model or 'unnamed'}`. "
        f"Each image is coloured from its own lightness and compared with its true colours at {_sizes(result)}; "
        "the grey baseline is the same lightness with no colour (a* = b* = 0).",
        "",
        format_summary_table(result.summary),
    ]
    if result.summary:
        model_row = result.summary[0]
        gains = [item.psnr_gain for item in result.images if math.isfinite(item.psnr_gain)]
        mean_gain = float(np.mean(gains)) if gains else float("nan")
        spread = float(np.std(gains, ddof=1) / math.sqrt(len(gains))) if len(gains) > 1 else float("nan")
        lines += [
            f"True photos' mean colourfulness: {_format_number(model_row.true_colorfulness, 1)} "
            f"(Hasler & Süsstrunk M3; the ratio is mean output over mean truth). "
            f"The model's PSNR beats the grey baseline's on {result.wins} of {count} images "
            f"(mean gain {_format_number(mean_gain, 2)} ± {_format_number(spread, 2)} dB, ± one standard error).",
            "",
            "PSNR and SSIM mostly measure the lightness, which the model and the baseline share: read the "
            "difference between the rows, not the values. AuC is the area under the cumulative ab-error curve "
            "over thresholds 0..150 (Zhang et al. 2016; 1 = every pixel's colour exact).",
            "",
        ]
    if result.warnings:
        lines += [f"**Caveat:** {warning}." for warning in result.warnings] + [""]
    if result.skipped:
        lines += [f"Skipped {len(result.skipped)} files:", ""] + [f"- {item}" for item in result.skipped] + [""]
    if result.report_dir is not None:
        lines += [
            "Files: `metrics.csv` (per image), `panels/` (original / colours removed / recoloured), "
            "`best-worst.png` (by PSNR gain over grey), `colorfulness.png` (outputs vs truth).",
            "",
        ]
    return "\n".join(lines)


def _csv_value(value):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")
    return value


def write_report(result: EvaluationResult, scorer: _Scorer | None = None) -> None:
    """Write metrics.csv, summary.md and (with the scorer's kept images) best-worst.png and colorfulness.png.

    Every file is written atomically; the three-panel figures were already written as images were scored.
    """
    from koala import plots

    report_dir = Path(result.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in result.images:
        writer.writerow({key: _csv_value(value) for key, value in item.as_row().items()})
    outputs.write_bytes_atomic(report_dir / "metrics.csv", buffer.getvalue().encode())
    outputs.write_bytes_atomic(report_dir / "summary.md", result.markdown().encode())
    if not result.images:
        return
    figure = plots.colorfulness_histogram(
        [item.model.colorfulness for item in result.images],
        [item.model.true_colorfulness for item in result.images],
        title=f"colourfulness of {len(result.images)} images: recoloured vs true photos",
    )
    plots.save_figure(figure, report_dir / "colorfulness.png")
    if scorer is not None:
        best, worst = scorer.extremes_found()
        if best or worst:
            def labelled(item):
                name, truth, grey, predicted, evaluation = item
                return (f"{name}\n{evaluation.psnr_gain:+.2f} dB", truth, grey, predicted)

            figure = plots.best_worst_grid(
                [labelled(item) for item in best], [labelled(item) for item in worst],
                title="best and worst images by PSNR gain over the grey baseline",
            )
            plots.save_figure(figure, report_dir / "best-worst.png", dpi=80)
