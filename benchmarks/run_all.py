"""Run every benchmark, each in a fresh process, and print their figures (``make benchmarks``).

    .venv/bin/python benchmarks/run_all.py [--only full_resolution memory ...] [--serve]

Each benchmark measures its ratios within its own run (a baseline and the figure it is compared with, on the
same machine, minutes apart at most), so the ratios hold on any machine; the absolute figures are this one's.
``--serve`` adds the web-service load test (benchmarks/serve_load.py, which starts its own server).
The latest figures, with the machine they came from, are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("architectures", "full_resolution", "inference_throughput", "training_throughput", "prepare_throughput", "memory",
              "scale_out", "archive_formats")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS + ("serve_load",), help="run only these")
    parser.add_argument("--serve", action="store_true", help="also run the service load test")
    arguments = parser.parse_args(argv)
    names = list(arguments.only or BENCHMARKS) + (["serve_load"] if arguments.serve and not arguments.only else [])
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    failed = []
    for name in names:
        print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent, env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        print(result.stdout, end="", flush=True)
        if result.returncode:
            failed.append(name)
            print(result.stderr[-3000:], file=sys.stderr)
        print(f"--- {name}: {time.perf_counter() - started:.0f} s{' (FAILED)' if result.returncode else ''}", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
