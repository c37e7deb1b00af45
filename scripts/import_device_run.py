"""Turn ``<recipe>.npz`` files from scripts/device_train.py into model folders (model.keras + config.json).

    python scripts/import_device_run.py /work/.device/.../out runs/device
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="folder with <recipe>.npz files")
    parser.add_argument("destination", help="folder to create one model folder per recipe in")
    arguments = parser.parse_args()

    import numpy as np

    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
    from koala.outputs import write_bytes_atomic
    from koala.train import save_head

    for path in sorted(Path(arguments.source).glob("*.npz")):
        packed = np.load(path)
        target = Path(arguments.destination) / path.stem
        target.mkdir(parents=True, exist_ok=True)
        config_text = bytes(packed["config_json"]).decode()
        config = ColorizerConfig(**json.loads(config_text))
        head = build_colorizer(config)
        names = sorted(key for key in packed.files if key.startswith("weight_"))
        head.set_weights([packed[name].astype(np.float32) for name in names])
        save_head(head, config, target / "model.keras")
        write_bytes_atomic(target / "config.json", config_text.encode())
        write_bytes_atomic(target / "history.csv", bytes(packed["history_csv"]))
        write_bytes_atomic(target / "summary.json", bytes(packed["summary_json"]))
        if "class_weights" in packed.files:
            import io

            buffer = io.BytesIO()
            np.save(buffer, packed["class_weights"])
            write_bytes_atomic(target / "class_weights.npy", buffer.getvalue())
        print(f"{path.name} -> {target}: {json.loads(bytes(packed['summary_json']))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
