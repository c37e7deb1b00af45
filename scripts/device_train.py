"""Train the recipes on one accelerator with the in-memory pipeline and pack compact results.

Used on the lent GPU machine (JAX backend, bfloat16), one call for everything:

    KERAS_BACKEND=jax python scripts/device_train.py --data data/prepared/all --out $OUT --seconds 80

For each recipe it trains for a fixed wall-clock budget (the same for every recipe: a fair comparison),
then writes ``<recipe>.npz`` holding the head's weights (float16, to fit the transfer limits), its
config, history and throughput summary. ``scripts/import_device_run.py`` turns them back into model
folders on this machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPES = {
    "fusion-mse": dict(fusion=True, loss="mse"),
    "fusion-classification": dict(fusion=True, loss="classification"),
    "fusion-colorful": dict(fusion=True, loss="colorful"),
    "plain-mse": dict(fusion=False, loss="mse"),
    # the longer runs (issue 10, scripts/device_long_run.sh): classification without rebalancing, and the
    # colourful loss with lighter penalties
    "plain-classification-flat": dict(fusion=False, loss="classification", rebalance=1.0),
    "plain-classification": dict(fusion=False, loss="classification"),
    "fusion-classification-flat": dict(fusion=True, loss="classification", rebalance=1.0),
    "plain-colorful-light": dict(fusion=False, loss="colorful", colorful_weight=0.2),
    "plain-colorful-lighter": dict(fusion=False, loss="colorful", colorful_weight=0.1),
}
COMPARED = ("fusion-mse", "fusion-classification", "fusion-colorful", "plain-mse")  # the same-budget comparison
H100_H200_BF16_DENSE_PEAK_TFLOPS = 989.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", default=",".join(COMPARED), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--seconds", type=float, default=80.0, help="training budget per recipe, counted after the first (compiling) epoch")
    parser.add_argument("--deadline", type=float, default=None,
                        help="stop training at this time (seconds since the epoch, as `date +%%s` prints)")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay over the time budget")
    parser.add_argument("--validate-every", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100_000, help="at most this many epochs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false")
    arguments = parser.parse_args()

    import keras
    import numpy as np

    from koala.accelerated import train_in_memory
    from koala.config import ColorizerConfig

    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, devices {keras.distribution.list_devices()}",
          flush=True)
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in arguments.recipes.split(","):
        started = time.time()
        config = ColorizerConfig(
            data=arguments.data, run_dir=f"/tmp/koala-runs/{name}", epochs=arguments.epochs,
            batch_size=arguments.batch_size, learning_rate=arguments.learning_rate,
            embedder="efficientnet-lite0", embedder_weights="imagenet", **RECIPES[name],
        )
        summary = train_in_memory(config, seconds=arguments.seconds, deadline=arguments.deadline,
                                  cosine=arguments.cosine, validate_every=arguments.validate_every,
                                  mixed_precision=arguments.mixed_precision,
                                  log=lambda message: print(message, flush=True))
        summary["recipe"] = name
        summary["batch_size"] = arguments.batch_size
        summary["learning_rate"] = arguments.learning_rate
        summary["mfu_vs_989_tflops"] = summary["train_tflops"] / H100_H200_BF16_DENSE_PEAK_TFLOPS
        summary["wall_seconds"] = time.time() - started
        run_dir = Path(config.run_dir)
        head = keras.saving.load_model(run_dir / "model.keras", compile=False)
        arrays = {f"weight_{index:03d}": weight.astype(np.float16) for index, weight in enumerate(head.get_weights())}
        arrays["config_json"] = np.frombuffer((run_dir / "config.json").read_bytes(), dtype=np.uint8)
        arrays["history_csv"] = np.frombuffer((run_dir / "history.csv").read_bytes(), dtype=np.uint8)
        arrays["summary_json"] = np.frombuffer(json.dumps(summary).encode(), dtype=np.uint8)
        if (run_dir / "class_weights.npy").exists():
            arrays["class_weights"] = np.load(run_dir / "class_weights.npy")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        (out / f"{name}.npz").write_bytes(buffer.getvalue())
        print("SUMMARY", json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    raise SystemExit(main())
