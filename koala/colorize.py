"""Colourising photos at their own resolution: the library call behind the CLI, the service and the notebooks.

How a photo is coloured::

    photo (any size) -> L* at full size ........................................ kept as it is
                     -> L* resized to 256 x 256 -> head (+ embedding) -> ab at 256
                                                                        -> ab resized to full size
                     -> join(full L*, ab) -> colour photo, same size and orientation

Files (``colorize_file``, folder runs) join cheaply: the colour is joined in Lab on a copy reduced to about 640 px
and added to the full-resolution grey as offsets (:func:`koala.color.join_grey_offsets`); grey JPEGs written as
JPEG keep their luma scan (:mod:`koala.jpeg_luma`).

A colour photo is treated as grey: only its lightness is used.

A folder (:meth:`Colorizer.colorize_files`) runs those steps as a pipeline: threads read and decode some photos and
join, encode and write others while the network colours the photos read so far in one batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from koala import color, images, jpeg_luma, outputs
from koala.config import CHROMA_SCALE_MAX, check_input_size

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"


def default_model_path() -> Path:
    """``$KOALA_MODEL`` if set, else the repository's ``models/default``."""
    return Path(os.environ.get("KOALA_MODEL", DEFAULT_MODEL))


@dataclasses.dataclass
class ColorizeResult:
    source: str
    output: str | None
    status: str  # "done", "skipped" (already there) or "failed"
    error: str | None = None


@dataclasses.dataclass
class PendingPhoto:
    """A photo read for colouring and waiting for its colour (the stages of a file's colouring, so that a folder
    run can read some photos while the network colours others).

    ``lightness``: what the network sees, L* (size, size) in 0..100. ``finish(ab, slope)``: the output file's
    bytes once the colour planes are known (:meth:`Colorizer.colour_planes`); it holds the decoded photo (or the
    grey JPEG's scan) until then.
    """

    lightness: np.ndarray
    finish: Callable[[np.ndarray, np.ndarray | None], bytes]


LUMA_DECODE_SLACK = 0.97
"""Keeping a JPEG's luma (:meth:`Colorizer.colour_jpeg_keeping_luma`), its reduced copy (the network's input, and
where the colour is joined) is decoded at the smallest JPEG scale (1/8, 1/4, 1/2) whose sides are at least this share
of the network's side: a 4000 × 3000 scan's 1/8 (375 px) feeds a 384-px network, enlarged by 2.4 %, instead of its
1/4 (750 px), four times the pixels to decode (colour JPEGs: 73 ms of CPU against 39, benchmarks/README.md)."""


def luma_decode_side(size: int) -> int:
    """The ``shrink_to`` of the luma path's reduced decodes for a network reading ``size`` px
    (:data:`LUMA_DECODE_SLACK`)."""
    return max(1, int(size * LUMA_DECODE_SLACK))


class Colorizer:
    """A loaded colouriser (head + embedder), ready to colour photos of any size.

    Args:
        model_path: a model folder (``model.keras`` + ``config.json``); default :func:`default_model_path`.
        embedder_weights: override the embedder weights recorded in the model's config (e.g. a local
            Inception-ResNet-v2 ``.h5`` file).
        chroma_scale: multiplies the predicted a*b* (default: the model's config, 1.0 unless chosen otherwise).
        temperature: for classification models, the annealed-mean temperature (lower is more vivid);
            default: the model's config.
        edge_radius, edge_epsilon: how the predicted colour is enlarged to the photo's size (0: bilinear;
            above 0: following the photo's edges, see :func:`koala.color.edge_aware_ab`); default: the
            model's config.
        flip_average: predict each photo and its mirror image and average the two (default: the model's config).
        input_size: the side of the square copy of each photo the network reads, a multiple of 32 (0: the side
            the model was trained at; default: the model's config). ``edge_radius`` is scaled with it.

    Example::

        colorizer = koala.Colorizer()
        rgb = colorizer.colorize("grandad-1943.jpg")   # uint8 array, same size as the photo
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        embedder_weights: str | None = None,
        temperature: float | None = None,
        chroma_scale: float | None = None,
        edge_radius: int | None = None,
        edge_epsilon: float | None = None,
        flip_average: bool | None = None,
        input_size: int | None = None,
    ):
        from koala.train import load_head

        self.model_path = Path(model_path) if model_path else default_model_path()
        self.model, self.config = load_head(self.model_path)
        from koala.architectures import at_input_size

        self.input_size = check_input_size(self.config.input_size if input_size is None else input_size)
        self.size = self.input_size or self.config.image_size
        self.model = at_input_size(self.model, self.config, self.size)  # (the model itself at its own size)
        self.temperature = self.config.temperature if temperature is None else temperature
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        self.chroma_scale = self.config.chroma_scale if chroma_scale is None else chroma_scale
        if not 0 <= self.chroma_scale <= CHROMA_SCALE_MAX:
            raise ValueError(f"chroma_scale must be between 0 and {CHROMA_SCALE_MAX:g}, got {self.chroma_scale}")
        self.edge_radius = self.config.edge_radius if edge_radius is None else edge_radius
        self.edge_epsilon = self.config.edge_epsilon if edge_epsilon is None else edge_epsilon
        if self.edge_radius < 0 or (self.edge_radius and self.edge_epsilon <= 0):
            raise ValueError(f"edge_radius must be 0 or more and edge_epsilon above 0, got {self.edge_radius} "
                             f"and {self.edge_epsilon}")
        self.flip_average = self.config.flip_average if flip_average is None else flip_average
        self.embedder = None
        if self.config.fusion:
            from koala.embedding import get_embedder

            weights = embedder_weights if embedder_weights is not None else self.config.embedder_weights
            self.embedder = get_embedder(self.config.embedder, weights or None)

    def network_output(self, lightness: np.ndarray) -> np.ndarray:
        """The network's raw output (ab, or class logits) for L* images (N, size, size) in 0..100; with
        ``flip_average``, the mean of the outputs for each image and its mirror image (mirrored back)."""
        l_norm = color.normalize_lightness(lightness)[..., None]
        count = len(l_norm)
        if self.flip_average:
            l_norm = np.concatenate([l_norm, l_norm[:, :, ::-1]])
        if self.embedder is not None:
            embedding = self.embedder.embed_lightness(lightness)  # (a classifier's view barely changes in a mirror)
            inputs = [l_norm, np.concatenate([embedding, embedding]) if self.flip_average else embedding]
        else:
            inputs = l_norm
        output = np.asarray(self.model.predict_on_batch(inputs))
        if self.flip_average:
            output = 0.5 * (output[:count] + output[count:, :, ::-1])
        return output

    def predict_ab(self, lightness: np.ndarray) -> np.ndarray:
        """Predict normalised ab (N, size, size, 2) for L* images (N, size, size) in 0..100."""
        from koala.train import ab_from_output

        lightness = np.asarray(lightness, dtype=np.float32)
        output = self.network_output(lightness)
        return ab_from_output(output, self.config, lightness.shape[1:3], self.temperature, self.chroma_scale)

    def colour_planes(self, small_lightness: np.ndarray, ab: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """What the joins take for one photo: the predicted ab (size, size, 2) and no slope, or, with
        ``edge_radius``, the offset and slope of ab as a function of lightness (:func:`color.edge_aware_ab`)."""
        if not self.edge_radius:
            return ab, None
        radius = max(1, round(self.edge_radius * self.size / self.config.image_size))  # the same share of the photo
        return color.edge_aware_ab(small_lightness, ab, radius, self.edge_epsilon)

    def colorize_lightness(self, lightness: np.ndarray) -> np.ndarray:
        """Colour one L* image (H, W) of any size; returns uint8 sRGB (H, W, 3)."""
        small = _resize_lightness(lightness, self.size)
        ab = self.predict_ab(small[None])[0]
        return color.join_lightness_ab(lightness, *self.colour_planes(small, ab))

    def colorize(self, image) -> np.ndarray:
        """Colour a photo: a path, bytes, a PIL image, or a uint8 array (H, W), (H, W, 1) or (H, W, 3).

        Returns a uint8 sRGB array of the photo's size; its L* channel is the photo's lightness.
        """
        return self.colorize_batch([image])[0]

    def colorize_batch(self, photos: list) -> list[np.ndarray]:
        """Colour several same-sized or different-sized photos, predicting them in one batch.

        Grey photos stay one channel of 8-bit grey levels from decoding to the join (their L* is a table
        look-up); the network's 256-px input is made from a downscaled copy of the photo (as the
        training images were), never from a full-size float array.
        """
        arrays = [to_grey_or_rgb_array(image) for image in photos]
        if not arrays:
            return []
        small = np.stack([color.rgb_to_lightness(images.resize_exact(array, self.size)) for array in arrays])
        ab = self.predict_ab(small)
        return [_join(array, *self.colour_planes(small[index], ab[index])) for index, array in enumerate(arrays)]

    def colorize_file(
        self, source: str | os.PathLike, output: str | os.PathLike, quality: int = 95, reencode: bool = False
    ) -> None:
        """Colour one file and write the result atomically (format from ``output``'s extension).

        A black-and-white JPEG written as JPEG keeps its own luma data unchanged, coefficient for coefficient
        (:meth:`colour_jpeg_keeping_luma`: about 3× faster for large grey scans, and no second round of JPEG
        loss on the scan's detail); ``reencode`` decodes and re-encodes it like any other photo instead.

        Re-encoded photos are joined with their colour by :func:`color.join_grey_offsets` (colour computed on a
        reduced copy, added to the full-resolution grey: L* within about a tenth of a unit of the photo's on
        average); a colour photo is first made the grey with its L* (:func:`color.grey_with_lightness`). A 16-bit
        grey photo written as TIFF keeps its 16 bits: the output is 16-bit colour.
        """
        pending = self.begin_file(source, outputs.format_for_path(output), quality=quality, reencode=reencode)
        outputs.write_bytes_atomic(output, pending.finish(*self.colour_planes_batch([pending.lightness])[0]))

    def begin_file(
        self, source: str | os.PathLike, output_format: str, quality: int = 95, reencode: bool = False
    ) -> PendingPhoto:
        """Read a photo for :meth:`colorize_file`'s output in ``output_format`` ("JPEG", "PNG", ...): the
        first stage, before the network (see :class:`PendingPhoto`). Raises :class:`images.ImageError`.

        The pending photo holds the decoded grey (uint8, or uint16 for a 16-bit master bound for TIFF) until
        ``finish``."""
        data = images.read_file_bytes(source)
        if output_format == "JPEG" and not reencode:
            pending = self._begin_jpeg_keeping_luma(data, quality, name=str(source))
            if pending is not None:
                return pending
        array = images.read_image(data, name=str(source), keep_grey=True, keep_depth=output_format == "TIFF")
        grey = array if array.ndim == 2 else color.grey_with_lightness(array)
        small = color.rgb_to_lightness(images.resize_exact(images.eight_bit(grey), self.size))

        def finish(ab: np.ndarray, slope: np.ndarray | None) -> bytes:
            return outputs.encode_image(color.join_grey_offsets(grey, ab, slope), output_format, quality=quality)

        return PendingPhoto(small, finish)

    def colour_planes_batch(self, lightness: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """The network's colour for several photos' ``PendingPhoto.lightness`` at once, as the planes each
        ``finish`` takes."""
        stacked = np.stack(lightness).astype(np.float32, copy=False)
        ab = self.predict_ab(stacked)
        return [self.colour_planes(stacked[index], ab[index]) for index in range(len(stacked))]

    def colour_jpeg_keeping_luma(
        self, data: bytes, quality: int = 95, name: str | None = None, max_pixels: int | None = None
    ) -> bytes | None:
        """A colour JPEG that keeps the luma of the JPEG in ``data`` unchanged (:mod:`koala.jpeg_luma`), or
        None when that JPEG does not allow it (then decode and colour it the ordinary way).

        A grey baseline JPEG keeps its very scan. Other JPEGs of black-and-white pictures (grey or toned,
        stored with three channels, or progressive) first lose their chroma losslessly through ``jpegtran``,
        when it is installed. Colour photos are left to the ordinary path, which keeps their L* exactly
        (their luma Y' is a different grey). Only reduced copies are decoded, by the ordinary reader (size
        limits, damage checks), at the smallest JPEG scale that still covers the network's input (to within
        :data:`LUMA_DECODE_SLACK`): once for a plain
        JPEG (:func:`images.read_jpeg_ycbcr`: its colour and its luma from one decode), twice for the others (to
        see its colour, then the luma-only JPEG's grey).
        """
        pending = self._begin_jpeg_keeping_luma(data, quality, name, max_pixels)
        if pending is None:
            return None
        return pending.finish(*self.colour_planes_batch([pending.lightness])[0])

    def _begin_jpeg_keeping_luma(
        self, data: bytes, quality: int = 95, name: str | None = None, max_pixels: int | None = None
    ) -> PendingPhoto | None:
        from koala.data import monochrome_reason

        max_pixels = images.MAX_PIXELS if max_pixels is None else max_pixels
        shrink_to = luma_decode_side(self.size)
        grey, small = jpeg_luma.parse(data), None
        if grey is None:
            if not jpeg_luma.transcodable(data):
                return None
            # A plain colour JPEG is decoded once, to Y'CbCr: its colour says whether it is black and white, and its
            # Y' plane is, level for level, the reduced decode of the luma-only JPEG made below (the same luma
            # coefficients and IDCT). Other JPEGs (progressive, restart markers, ...) are decoded twice.
            ycbcr = images.read_jpeg_ycbcr(data, name=name, shrink_to=shrink_to, max_pixels=max_pixels)
            if ycbcr is None:
                preview = images.read_image(data, name=name, shrink_to=shrink_to, max_pixels=max_pixels)
            else:
                preview = images.jpeg_ycbcr_to_rgb(ycbcr)  # what read_image gives, exactly
            if monochrome_reason(preview) is None:
                return None  # a colour photo
            converted = jpeg_luma.luma_only(data, max_pixels)
            grey = jpeg_luma.parse(converted) if converted is not None else None
            if grey is None:
                return None
            data = converted
            if ycbcr is not None:
                small = np.ascontiguousarray(ycbcr[..., 0])
        if small is None:
            small = images.read_image(data, name=name, keep_grey=True, shrink_to=shrink_to, max_pixels=max_pixels)
        if small.ndim == 3:  # a one-component JPEG decodes to equal channels
            small = np.ascontiguousarray(small[..., 0])
        lightness = color.rgb_to_lightness(images.resize_exact(small, self.size))

        def finish(ab: np.ndarray, slope: np.ndarray | None) -> bytes:
            return jpeg_luma.colour_jpeg(grey, *jpeg_luma.chroma_small(small, ab, slope), quality)

        return PendingPhoto(lightness, finish)

    def colorize_files(
        self,
        inputs: list[str | os.PathLike],
        output_dir: str | os.PathLike,
        *,
        output_format: str = "auto",
        overwrite: bool = False,
        reencode: bool = False,
        workers: int | None = None,
        progress: bool = True,
        log=print,
    ) -> list[ColorizeResult]:
        """Colour files and folders into ``output_dir`` (folder structure kept).

        Resumable: outputs that already exist are complete (all writes are atomic) and are skipped
        unless ``overwrite``. A file that fails is reported and the run goes on. ``reencode``: see
        :meth:`colorize_file`. Originals are never written to: see :func:`plan_outputs`, which refuses
        the run before anything is written.

        A folder is a pipeline (:func:`_colour_pipelined`): ``workers`` threads read and decode some photos
        and join, encode and write others while this thread runs the network on the photos read so far, several
        in one batch. At most :func:`photos_in_flight` photos are held at once, whatever the folder's size.
        Results, error lines and the progress bar come in the photos' order, as one photo after another would
        give them. ``workers``: default :func:`default_workers` (one per CPU core); 0 colours one photo at a
        time in this thread.
        """
        from tqdm import tqdm

        output_dir = Path(output_dir)
        jobs = plan_outputs(inputs, output_dir, output_format)
        workers = default_workers() if workers is None else workers
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        remove_stale_partials(output_dir)
        results: list[ColorizeResult] = []
        failures = 0
        # one photo needs no bar (and a bar at 100 % over a photo that failed says the wrong thing)
        with tqdm(total=len(jobs), desc="colorize", unit="photo", disable=not progress or len(jobs) < 2) as bar:

            def report(result: ColorizeResult) -> None:
                nonlocal failures
                if result.status == "failed":
                    bar.clear()  # the error gets a line of its own, not the end of the progress bar's
                    log(f"error: {result.error}")
                    failures += 1
                    bar.set_postfix(failed=failures)
                results.append(result)
                bar.update(1)

            if workers == 0 or len(jobs) < 2:
                for source, target in jobs:
                    report(self.colorize_planned(source, target, overwrite=overwrite, reencode=reencode))
            else:
                _colour_pipelined(self, jobs, report, overwrite=overwrite, reencode=reencode, workers=workers)
        return results

    def colorize_planned(
        self, source: str | os.PathLike, target: str | os.PathLike, *, overwrite: bool = False, reencode: bool = False
    ) -> ColorizeResult:
        """One photo of a folder run (a pair from :func:`plan_outputs`): skipped if its output exists (unless
        ``overwrite``), else coloured and written atomically (:meth:`colorize_file`). A photo that cannot be read
        or written is a "failed" result whose error names it, never an exception, so the run goes on.
        """
        target = Path(target)
        if target.exists() and not overwrite:
            return ColorizeResult(str(source), str(target), "skipped")
        try:
            self.colorize_file(source, target, reencode=reencode)
        except images.ImageError as error:
            return _failed(source, error)
        return ColorizeResult(str(source), str(target), "done")


def default_workers() -> int:
    """Threads that read and write photos in a folder run: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def photos_in_flight(workers: int) -> int:
    """The most photos a folder run with ``workers`` threads holds at once (read and not yet written): enough
    for every thread to have one and for the network to colour a batch while they work (a 12-megapixel photo
    decoded is 12-36 MB; 6 of them on two cores)."""
    return 2 * workers + 2


def _failed(source: str | os.PathLike, error: images.ImageError) -> ColorizeResult:
    """A photo's failure; the error names the photo, and the output too when writing it failed."""
    message = str(error)
    if error.source != str(source):  # a write failed: name the photo and the output
        message = f"{source}: could not write {error.source}: {error.reason}"
    return ColorizeResult(str(source), None, "failed", message)


class _InFlight:
    """One photo of a pipelined folder run, from its read to its result."""

    __slots__ = ("source", "target", "reading", "pending", "writing", "result")

    def __init__(self, source: Path, target: Path):
        self.source, self.target = source, target
        self.reading = None  # the future of Colorizer.begin_file
        self.pending: PendingPhoto | None = None  # read, waiting for the network
        self.writing = None  # the future of the finish (join + encode) and the atomic write
        self.result: ColorizeResult | None = None


def _colour_pipelined(
    colorizer: Colorizer,
    jobs: list[tuple[Path, Path]],
    report: Callable[[ColorizeResult], None],
    *,
    overwrite: bool,
    reencode: bool,
    workers: int,
) -> None:
    """Colour planned (photo, output) pairs with the stages overlapping; ``report`` gets each result in the
    jobs' order.

    A pool of ``workers`` threads runs :meth:`Colorizer.begin_file` (read, decode, the network's input) and each
    photo's ``finish`` and :func:`outputs.write_bytes_atomic`; this thread runs the network on every photo read
    and waiting, as one batch (:meth:`Colorizer.colour_planes_batch`), and hands them back to the pool. ImageMagick
    (through ctypes), numpy, Pillow's decoders and PNG encoder and TensorFlow release the GIL, so the stages share
    the cores (Pillow 13 holds it while encoding a JPEG into memory: those encodes take turns).

    Memory: at most :func:`photos_in_flight` photos are held between their read and their result. A photo whose
    output is also an earlier, unfinished photo's waits for that one, so it is skipped or redone exactly as one
    photo after another would have it. On any exception (KeyboardInterrupt included) the threads are told to
    stop, no queued stage starts, the stages running end (an output being written is completed atomically or
    not at all) and the exception goes on; nothing is left half-written.
    """
    import collections
    import concurrent.futures
    import threading

    limit = photos_in_flight(workers)
    stop = threading.Event()
    waiting = iter(jobs)
    next_job: tuple[Path, Path] | None = next(waiting, None)
    photos: collections.deque[_InFlight] = collections.deque()  # not yet reported, in the jobs' order

    def read(photo: _InFlight) -> PendingPhoto | None:
        if stop.is_set():
            return None
        return colorizer.begin_file(photo.source, outputs.format_for_path(photo.target), reencode=reencode)

    def write(photo: _InFlight, pending: PendingPhoto, planes) -> None:
        if stop.is_set():
            return
        data = pending.finish(*planes)
        if not stop.is_set():
            outputs.write_bytes_atomic(photo.target, data)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="koala-colorize")
    try:
        while next_job is not None or photos:
            # 1. read more photos while fewer than the limit are held
            held = [photo for photo in photos if photo.result is None]
            busy_targets = {photo.target for photo in held}
            while next_job is not None and len(held) < limit and next_job[1] not in busy_targets:
                photo = _InFlight(*next_job)
                next_job = next(waiting, None)
                if photo.target.exists() and not overwrite:
                    photo.result = ColorizeResult(str(photo.source), str(photo.target), "skipped")
                else:
                    photo.reading = pool.submit(read, photo)
                    held.append(photo)
                    busy_targets.add(photo.target)
                photos.append(photo)
            # 2. collect the stages that ended
            for photo in held:
                if photo.reading is not None and photo.reading.done():
                    future, photo.reading = photo.reading, None
                    try:
                        photo.pending = future.result()
                    except images.ImageError as error:
                        photo.result = _failed(photo.source, error)
                elif photo.writing is not None and photo.writing.done():
                    future, photo.writing = photo.writing, None
                    try:
                        future.result()
                    except images.ImageError as error:
                        photo.result = _failed(photo.source, error)
                    else:
                        photo.result = ColorizeResult(str(photo.source), str(photo.target), "done")
            # 3. report what is finished at the head of the line
            while photos and photos[0].result is not None:
                report(photos.popleft().result)
            # 4. the network colours every photo read so far, in one batch, then the pool finishes them
            ready = [photo for photo in photos if photo.pending is not None]
            if ready:
                planes = colorizer.colour_planes_batch([photo.pending.lightness for photo in ready])
                for photo, photo_planes in zip(ready, planes):
                    pending, photo.pending = photo.pending, None
                    photo.writing = pool.submit(write, photo, pending, photo_planes)
                continue
            # 5. nothing to colour: wait for a stage to end
            running = [photo.reading or photo.writing for photo in photos if photo.reading or photo.writing]
            if running:
                concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def plan_outputs(
    inputs: list[str | os.PathLike], output_dir: str | os.PathLike, output_format: str = "auto"
) -> list[tuple[Path, Path]]:
    """(photo, output path) for every photo named by ``inputs`` (files and folders) in ``output_dir``, after
    the checks that keep originals safe; cheap, so callers run it before loading a model.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: ``output_dir`` is a file; it is, or lies inside, an input folder (outputs would land among
            the originals, and the next run would take them for photos to colour); or an output would be
            written over one of the inputs.
    """
    output_dir = Path(output_dir)
    for item in inputs:
        if not os.path.lexists(item):
            raise FileNotFoundError(f"{item}: no such file or folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"{output_dir}: the output must be a folder (the coloured photos keep their names inside "
                         "it), and this is a file")
    output_resolved = output_dir.resolve()
    for item in inputs:
        if Path(item).is_dir():
            folder = Path(item).resolve()
            if output_resolved == folder or folder in output_resolved.parents:
                raise ValueError(
                    f"{output_dir}: the output folder is, or lies inside, the input folder {item}: the coloured "
                    "photos would land among the originals (or replace them); choose a folder outside it"
                )
    jobs = images.find_images(list(inputs))
    sources = {source.resolve() for source, _ in jobs}
    planned = []
    for source, relative in jobs:
        target = output_dir / relative.with_suffix(_output_suffix(source, output_format))
        if target.resolve() in sources or (target.exists() and source.exists() and os.path.samefile(target, source)):
            raise ValueError(
                f"{target}: the coloured copy of {source} would be written over an original photo; "
                "choose another output folder"
            )
        planned.append((source, target))
    return planned


OUTPUT_FORMATS = ("auto", "jpg", "png", "tiff")
"""``--format`` choices: auto keeps JPEG as JPEG and TIFF as TIFF (an archive's masters stay masters: a 16-bit
grey TIFF comes back as 16-bit colour) and writes PNG for the rest."""


def _output_suffix(source: Path, output_format: str) -> str:
    suffix = source.suffix.lower()
    if output_format == "auto":
        if suffix in (".jpg", ".jpeg"):
            return ".jpg"
        return ".tif" if suffix in (".tif", ".tiff") else ".png"
    if output_format in ("jpg", "jpeg"):
        return ".jpg"
    if output_format == "png":
        return ".png"
    if output_format in ("tif", "tiff"):
        return ".tif"
    raise ValueError(f"unknown output format {output_format!r} (auto, jpg, png or tiff)")


def remove_stale_partials(output_dir: Path) -> None:
    """Delete temporary files left by a run that was killed while writing."""
    if not output_dir.exists():
        return
    for partial in output_dir.rglob(".*.part"):
        try:
            partial.unlink()
        except OSError:
            pass


def _resize_lightness(lightness: np.ndarray, size: int) -> np.ndarray:
    return color.resize_channels(lightness[..., None].astype(np.float32), (size, size))[..., 0]


def _join(array: np.ndarray, ab: np.ndarray, slope: np.ndarray | None = None) -> np.ndarray:
    if array.ndim == 2:
        return color.join_grey_ab(array, ab, slope)
    return color.join_lightness_ab(color.rgb_to_lightness(array), ab, slope)


def to_grey_or_rgb_array(image) -> np.ndarray:
    """Like :func:`to_rgb_array`, but grey photos come back as uint8 (H, W) grey levels."""
    if isinstance(image, (str, os.PathLike, bytes)):
        return images.read_image(image, keep_grey=True)
    if hasattr(image, "mode") and hasattr(image, "convert") and image.mode == "L":  # PIL grey image
        return np.asarray(image)
    array = np.asarray(image)
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1)):
        return array.reshape(array.shape[:2])
    return to_rgb_array(image)


def to_rgb_array(image) -> np.ndarray:
    """Accept a path, bytes, PIL image or array and return uint8 RGB (H, W, 3)."""
    if isinstance(image, (str, os.PathLike, bytes)):
        return images.read_image(image)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max() <= 1.0:
            array = color.to_uint8(array)
        else:
            raise ValueError(f"expected a uint8 image (or floats in 0..1), got dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3)):
        return color._as_rgb(array)
    if array.ndim == 3 and array.shape[-1] == 4:
        return array[..., :3]
    raise ValueError(f"expected an image of shape (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")
