"""What runs on each Dask worker of ``koala colorize --cluster`` (see :mod:`koala.cluster`): the plugin that loads
the colouriser once per worker process, and the task that colours a chunk of photos with it.

This module imports Dask; :mod:`koala.cluster` imports it only once it knows Dask is installed.
"""

from __future__ import annotations

from distributed import WorkerPlugin, get_worker

from koala.colorize import ColorizeResult

PLUGIN_NAME = "koala-colorizer"


class ColorizerPlugin(WorkerPlugin):
    """Each worker loads the colouriser once: when the plugin is registered, and again on a worker that starts
    later (one that joins, or one its nanny restarted). ``settings`` are :class:`koala.colorize.Colorizer`'s
    arguments, the same on every worker."""

    name = PLUGIN_NAME
    idempotent = False  # registering it again (other settings) replaces it

    def __init__(self, settings: dict):
        self.settings = settings
        self.colorizer = None

    def setup(self, worker) -> None:
        from koala.colorize import Colorizer

        self.colorizer = Colorizer(**self.settings)

    def teardown(self, worker) -> None:
        self.colorizer = None


def colour_chunk(pairs: list[tuple[str, str]], overwrite: bool, reencode: bool) -> list[ColorizeResult]:
    """A task: colour planned (photo, output) pairs with this worker's colouriser, exactly as a run on one
    machine does (:meth:`koala.colorize.Colorizer.colorize_planned`). Safe to run again after a lost worker: an
    output that exists is complete (written atomically) and is skipped."""
    colorizer = get_worker().plugins[PLUGIN_NAME].colorizer
    return [colorizer.colorize_planned(source, target, overwrite=overwrite, reencode=reencode)
            for source, target in pairs]
