"""scripts/gain_colour_curve.py: candidates grouped into curves by everything but their chroma scale."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gain_colour_curve.py"


def _module():
    spec = importlib.util.spec_from_file_location("gain_colour_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(path, rows):
    path.write_text(json.dumps({"choose": {name: {"gain": gain, "colorfulness_ratio": colour}
                                           for name, (gain, colour) in rows.items()}}))
    return path


def test_curves_group_by_model_and_settings_and_sort_by_colour(tmp_path):
    first = _results(tmp_path / "a.json", {"default S=0.9,R=4,F=1": (0.4, 0.64), "default S=0.8,R=4,F=1": (0.6, 0.57)})
    second = _results(tmp_path / "b.json", {"default S=0.8,R=4,F=1": (0.6, 0.57),
                                            "default S=1,R=4,F=1,I=384": (0.2, 0.76), "soup": (0.3, 0.66)})
    curves = _module().curves([first, second])
    assert curves == {
        "default R=4,F=1": [(0.57, 0.6, 0.8), (0.64, 0.4, 0.9)],  # drawn once though scored in both files
        "default R=4,F=1,I=384": [(0.76, 0.2, 1.0)],
        "soup": [(0.66, 0.3, 1.0)],
    }
    out = tmp_path / "curve.png"
    assert _module().main([str(first), str(second), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_against_prints_each_point_less_the_reference_curve_at_its_colour(tmp_path, capsys):
    results = _results(tmp_path / "a.json", {"default S=0.8": (0.6, 0.6), "default S=1": (0.2, 0.8),
                                             "new S=1": (0.5, 0.7), "new S=1.2": (0.2, 0.9)})
    module = _module()
    reference = module.curves([results])["default"]
    assert abs(module.above(reference, 0.7) - 0.4) < 1e-12  # between the points
    assert abs(module.above(reference, 0.9) - 0.0) < 1e-12  # past the last: along the last segment
    assert module.main([str(results), "--out", str(tmp_path / "c.png"), "--against", "default"]) == 0
    printed = capsys.readouterr().out
    assert "new S=1: +0.50 dB at 0.70x, +0.10 dB against default\n" in printed  # within the curve: no remark
    assert "new S=1.2: +0.20 dB at 0.90x, +0.20 dB against default (extrapolated: past the ends of its curve)" in printed
    assert "default S=" not in printed


def test_the_title_names_the_folder_the_scores_were_chosen_on(tmp_path):
    module = _module()
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"choose_folder": "~/.cache/koala-eval/mit-sweep", "choose": {}}))
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"choose_folder": "~/.cache/koala-eval/choose/mit1003", "choose": {}}))
    assert module.choosing_sets([sweep]) == "koala-eval/mit-sweep"
    assert module.choosing_sets([full, full]) == "choose/mit1003"
    assert module.choosing_sets([full, sweep]) == "choose/mit1003 and koala-eval/mit-sweep"
    assert module.choosing_sets([_results(tmp_path / "a.json", {})]) == "the choosing set"
