"""scripts/choose_default.py: the rule picks on the choosing photos only, at their own size; the pick is confirmed
once on other folders; --keep extends an earlier comparison."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from koala import outputs
from tests.conftest import make_photo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    """scripts/choose_default.py as a module, for its rule functions."""
    spec = importlib.util.spec_from_file_location("choose_default", ROOT / "scripts" / "choose_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders of colour photos of several sizes: one chooses, one confirms."""
    root = tmp_path_factory.mktemp("choose")
    for name, seeds in (("choose", range(4)), ("confirm", range(10, 13))):
        (root / name).mkdir()
        for seed in seeds:
            outputs.write_image(root / name / f"photo_{seed}.png", make_photo(seed, 90 + 10 * seed % 40, 130))
    return root / "choose", root / "confirm"


def _choose(candidates, folders, out, *extra):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "choose_default.py"), *candidates, "--choose", str(folders[0]),
         "--confirm", str(folders[1]), "--out", str(out), "--min-gain", "-100", "--min-share", "0", *extra],
        capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_the_rule_picks_the_most_colourful_and_confirms_it_once(tiny_model_dir, folders, tmp_path):
    # (an untrained model: far less colourful than the truth at every scale here, so colour alone decides)
    out = tmp_path / "comparison"
    name = tiny_model_dir.name
    first = _choose([f"{tiny_model_dir}@S=0.5", f"{tiny_model_dir}@S=1,R=2"], folders, out)
    rows = first["choose"]
    assert set(rows) == {f"{name} S=0.5", f"{name} S=1,R=2"}
    assert rows[f"{name} S=1,R=2"]["colorfulness_ratio"] > rows[f"{name} S=0.5"]["colorfulness_ratio"]
    assert rows[f"{name} S=0.5"]["count"] == 4 and rows[f"{name} S=0.5"]["ssim"] is None
    assert first["pick"] == f"{name} S=1,R=2"
    confirmed = first["confirm"][str(folders[1])]
    assert set(confirmed) == {f"{name} S=1,R=2"}  # only the pick is scored on the confirming photos
    assert confirmed[f"{name} S=1,R=2"]["count"] == 3 and 0 < confirmed[f"{name} S=1,R=2"]["ssim"] <= 1

    second = _choose([f"{tiny_model_dir}@S=2"], folders, out, "--keep")
    assert set(second["choose"]) == {f"{name} S=0.5", f"{name} S=1,R=2", f"{name} S=2"}
    assert second["choose"][f"{name} S=0.5"] == rows[f"{name} S=0.5"]  # reused, not rescored
    assert second["pick"] == f"{name} S=2"
    table = (out / "candidates.md").read_text()
    assert all(f"| {name} {setting} |" in table for setting in ("S=0.5", "S=1,R=2", "S=2"))

    third = _choose([f"{tiny_model_dir}@S=0.5"], folders, out, "--no-confirm")  # without --keep: only those named
    assert set(third["choose"]) == {f"{name} S=0.5"} and third["pick"] == f"{name} S=0.5"


def test_candidates_and_their_settings(script):
    assert script.parse_candidate("runs/a") == ("runs/a", {})
    assert script.parse_candidate("runs/a@S=1.2,R=4,E=0.002,T=0.5") == (
        "runs/a", {"chroma_scale": 1.2, "edge_radius": 4, "edge_epsilon": 0.002, "temperature": 0.5})
    assert script.label("runs/a", {"chroma_scale": 1.2, "edge_radius": 4}) == "a S=1.2,R=4"
    with pytest.raises(SystemExit, match="unknown setting"):
        script.parse_candidate("runs/a@X=1")


def test_accurate_enough_then_most_colourful_else_most_accurate_of_the_colourful(script):
    def row(gain, wins, colour, psnr=24.0):
        return {"gain": gain, "wins": wins, "count": 100, "colorfulness_ratio": colour, "psnr": psnr}

    rows = {"vivid": row(0.3, 70, 1.0), "calm": row(1.1, 75, 0.62), "close": row(0.6, 61, 0.8),
            "lucky": row(0.9, 55, 0.9)}  # a high mean from a few photos: fewer than 60 % better than grey
    ranking, branch = script.rank(rows)
    assert ranking == ["close", "calm"] and branch.startswith("accurate enough")
    rows["beyond"] = row(0.55, 65, 1.05, psnr=23.0)
    rows["at the truth"] = row(0.7, 66, 1.0, psnr=23.5)
    assert script.rank(rows)[0][:2] == ["at the truth", "beyond"]  # colour capped at the truth's: then PSNR
    none_pass = {"vivid": row(-0.4, 45, 0.95), "calm": row(0.2, 58, 0.65), "grey": row(0.4, 59, 0.3)}
    ranking, branch = script.rank(none_pass)
    assert ranking == ["calm", "vivid"] and branch.startswith("none accurate enough")
    assert script.rank({})[0] == []
    assert script.passes(row(0.5, 60, 0.6), 0.5, 0.6, 0.6) and not script.passes(row(0.5, 59, 0.6), 0.5, 0.6, 0.6)
