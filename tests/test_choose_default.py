"""scripts/choose_default.py: the rule picks on validation only, and --keep extends an earlier comparison."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from koala import data

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    """scripts/choose_default.py as a module, for its rule functions."""
    spec = importlib.util.spec_from_file_location("choose_default", ROOT / "scripts" / "choose_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def split_set(prepared, tmp_path):
    """The prepared photos with 6 in validation and 6 in test, whatever their hashes say."""
    folder = tmp_path / "set"
    shutil.copytree(prepared, folder, ignore=shutil.ignore_patterns("features-*"))
    rows = data.read_manifest(folder)
    for index, row in enumerate(rows):
        row["split"] = "validation" if index < 6 else "test" if index < 12 else "train"
    data.write_manifest(folder, rows)
    return folder


def _choose(candidates, split_set, out, *extra):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "choose_default.py"), *candidates, "--data", str(split_set),
         "--out", str(out), "--min-gain", "-100", "--photos", "2", *extra],
        capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_the_rule_picks_the_most_colourful_on_validation_and_keep_extends_the_comparison(
        tiny_model_dir, split_set, tmp_path):
    # (an untrained model: far less colourful than the truth at every scale here, so colour alone decides)
    out = tmp_path / "comparison"
    first = _choose([f"{tiny_model_dir}@S=0.5", f"{tiny_model_dir}@S=1"], split_set, out)
    name = tiny_model_dir.name
    validation = first["results"]["validation"]
    assert set(validation) == {f"{name} S=0.5", f"{name} S=1"}
    assert validation[f"{name} S=1"]["colorfulness_ratio"] > validation[f"{name} S=0.5"]["colorfulness_ratio"]
    assert first["chosen"] == f"{name} S=1"  # every candidate passes a -100 dB bar: the most colourful wins
    assert validation[f"{name} S=1"]["count"] == 6 and first["results"]["test"][f"{name} S=1"]["count"] == 6

    second = _choose([f"{tiny_model_dir}@S=2"], split_set, out, "--keep")
    assert set(second["results"]["validation"]) == {f"{name} S=0.5", f"{name} S=1", f"{name} S=2"}
    assert second["results"]["validation"][f"{name} S=1"] == validation[f"{name} S=1"]  # reused, not rescored
    assert second["results"]["validation"][f"{name} S=2"]["colorfulness_ratio"] < 1
    assert second["chosen"] == f"{name} S=2"
    table = (out / "candidates.md").read_text()
    assert all(f"| {name} S={scale} |" in table for scale in ("0.5", "1", "2"))

    third = _choose([f"{tiny_model_dir}@S=0.5"], split_set, out)  # without --keep: only the candidates named
    assert set(third["results"]["validation"]) == {f"{name} S=0.5"} and third["chosen"] == f"{name} S=0.5"


def test_colour_counts_up_to_the_truths_and_beyond_it_accuracy_decides(script):
    rows = {"calm": {"colorfulness_ratio": 0.8, "psnr": 25.0}, "close": {"colorfulness_ratio": 0.97, "psnr": 24.0}}
    assert script.rank(rows)[0] == "close"
    rows |= {"vivid": {"colorfulness_ratio": 1.04, "psnr": 23.5}, "just": {"colorfulness_ratio": 1.01, "psnr": 23.9}}
    assert script.rank(rows)[0] == "just"  # both reach the truth: the more accurate one
    assert script.rank({}) == []


def test_a_pick_the_test_sets_do_not_confirm_is_not_shipped(script):
    validation = {"vivid": {"colorfulness_ratio": 1.04, "psnr": 23.5}, "close": {"colorfulness_ratio": 0.97, "psnr": 24.0},
                  "calm": {"colorfulness_ratio": 0.7, "psnr": 25.0}}
    results = {"validation": validation,
               "test": {"vivid": {"gain": 0.45}, "close": {"gain": 0.7}, "calm": {"gain": 1.6}},
               "other-test": {"vivid": {"gain": 0.27, "colorfulness_ratio": 1.01},
                              "close": {"gain": 0.57, "colorfulness_ratio": 0.91},
                              "calm": {"gain": 1.3, "colorfulness_ratio": 0.69}}}
    assert script.rank(validation) == ["vivid", "close", "calm"]
    confirmed, failed = script.confirm(script.rank(validation), results, 0.3, 0.5, 0.6)
    assert confirmed == "close" and failed == [("vivid", "other test +0.27 dB < +0.50")]
    results["other-test"]["close"]["colorfulness_ratio"] = 0.5
    confirmed, failed = script.confirm(script.rank(validation), results, 0.3, 0.5, 0.6)
    assert confirmed == "calm" and failed[1] == ("close", "other test colourfulness 0.50x < 0.60x")
    assert script.confirm([], results, 0.3, 0.5, 0.6) == (None, [])
