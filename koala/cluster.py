"""Colouring an archive on a Dask distributed cluster: ``koala colorize SRC... --output DST --cluster ADDRESS``.

The same folder job as :meth:`koala.colorize.Colorizer.colorize_files`, spread over the workers of a cluster::

    here:         plan_outputs (checks, the (photo, output) pairs) -> chunks of photos still to colour -> tasks
    each worker:  koala/cluster_worker.py: ColorizerPlugin loads the model once; colour_chunk runs
                  Colorizer.colorize_planned per photo (skip what exists, colour, write atomically, a failure
                  named) -> results back here
    here:         a progress bar that counts photos, one line per failure, the results in the plan's order

Our code is the per-photo job and the atomic, resumable output; scheduling, retries after a lost worker (its
chunks run elsewhere) and the dashboard are Dask's. Every worker must see the photos and the output folder at
the same absolute paths (one machine, or a shared file system such as NFS), and have Koala installed with
``requirements-cluster.txt``. ``ADDRESS`` is a scheduler (``tcp://host:8786``) or ``local:N``, a cluster of N
worker processes on this machine, each restarted by its nanny if it dies.
"""

from __future__ import annotations

import os
from pathlib import Path

from koala.colorize import ColorizeResult, plan_outputs, remove_stale_partials

CONNECT_TIMEOUT = "20s"


def parse_address(address: str) -> int | str:
    """The number of local worker processes for ``local:N``, else the scheduler's address as given.

    Raises:
        ValueError: ``local:`` without a whole number above 0, or an empty address.
    """
    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--cluster {address}: local:N needs a number of worker processes above 0, e.g. local:2")
        return int(count)
    if not address.strip():
        raise ValueError("--cluster needs a scheduler address (tcp://host:8786) or local:N")
    return address


def colorize_on_cluster(
    inputs: list[str | os.PathLike],
    output_dir: str | os.PathLike,
    address: str,
    *,
    settings: dict | None = None,
    output_format: str = "auto",
    overwrite: bool = False,
    reencode: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
    log=print,
) -> list[ColorizeResult]:
    """Colour files and folders into ``output_dir`` on a Dask cluster; what :meth:`Colorizer.colorize_files`
    does on this machine, with the same results.

    Args:
        address: a scheduler (``tcp://host:8786``) or ``local:N`` (N worker processes here, one thread each).
        settings: :class:`koala.colorize.Colorizer`'s arguments (model path, chroma scale, ...); the model path
            is made absolute, since the workers load it themselves.
        chunk_size: photos per task: a lost worker costs the chunks it held, which run again elsewhere.

    Raises:
        FileNotFoundError, ValueError: as :func:`plan_outputs`, or a malformed ``local:N``.
        ModuleNotFoundError: Dask is not installed (``pip install -r requirements-cluster.txt``).
        OSError: the scheduler cannot be reached.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    workers = parse_address(address)
    output_dir = Path(output_dir).resolve()
    jobs = [(source.resolve(), target) for source, target in plan_outputs(inputs, output_dir, output_format)]
    import distributed  # requirements-cluster.txt; `koala colorize` says what to install if it is missing
    from tqdm import tqdm

    from koala.cluster_worker import ColorizerPlugin, colour_chunk

    settings = dict(settings or {})
    if settings.get("model_path"):
        settings["model_path"] = str(Path(settings["model_path"]).resolve())
    remove_stale_partials(output_dir)
    results: dict[int, ColorizeResult] = {}
    todo = []
    for index, (source, target) in enumerate(jobs):
        if target.exists() and not overwrite:
            results[index] = ColorizeResult(str(source), str(target), "skipped")
        else:
            todo.append(index)
    bar = tqdm(total=len(jobs), initial=len(results), desc="colorize", unit="photo",
               disable=not progress or len(jobs) < 2)
    if todo:
        with _client(distributed, workers) as client:
            client.register_plugin(ColorizerPlugin(settings))
            chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
            futures = {
                client.submit(colour_chunk, [(str(jobs[i][0]), str(jobs[i][1])) for i in chunk], overwrite, reencode,
                              pure=False): chunk
                for chunk in chunks
            }
            for future in distributed.as_completed(futures):
                chunk = futures.pop(future)
                chunk_results = _chunk_results(future, [jobs[i] for i in chunk])
                future.release()  # done with: a worker lost later need not compute it again
                for index, result in zip(chunk, chunk_results):
                    if result.status == "skipped":  # written by an earlier try of this chunk, on a lost worker
                        result.status = "done"
                    if result.status == "failed":
                        bar.clear()  # the error gets a line of its own, not the end of the progress bar's
                        log(f"error: {result.error}")
                    results[index] = result
                    bar.update(1)
        remove_stale_partials(output_dir)  # what workers killed while writing left behind
    bar.close()
    return [results[index] for index in range(len(jobs))]


def _chunk_results(future, jobs) -> list[ColorizeResult]:
    """The chunk's results, or a failure for each of its photos if the task itself failed (a worker died with
    it more than Dask allows, or an unexpected error)."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - reported per photo, the run goes on
        reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        return [ColorizeResult(str(source), None, "failed", f"{source}: not coloured on the cluster ({reason})")
                for source, _ in jobs]


def _client(distributed, workers: int | str):
    """A client of the scheduler at ``workers`` (an address), or of a new local cluster of ``workers`` worker
    processes, which closes with it."""
    if isinstance(workers, str):
        return distributed.Client(workers, timeout=CONNECT_TIMEOUT)
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    return _ClosingClient(distributed.Client(cluster), cluster)


class _ClosingClient:
    """A context manager giving a client and closing it and its local cluster afterwards."""

    def __init__(self, client, cluster):
        self.client, self.cluster = client, cluster

    def __enter__(self):
        return self.client

    def __exit__(self, *exception):
        self.client.close()
        self.cluster.close()
