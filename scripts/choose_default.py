"""Choose the default model by the rule, on validation photos; confirm it on two test sets; show WWII photos.

    python scripts/choose_default.py runs/a runs/a@S=0.8 runs/b@T=0.38 runs/b@T=0.6 models/default \
        --data ~/.cache/koala-data/main --other-test ../shared/data/photos \
        --historic ../shared/data/historic --out models/comparison-unet

A candidate is a model folder, with ``@T=0.5`` for a classification model's annealed-mean temperature or
``@S=0.8`` for a chroma scale (``ColorizerConfig.chroma_scale``). The rule:
among the candidates whose PSNR beats the grey baseline by at least ``--min-gain`` dB on the validation split,
the most colourful (mean colourfulness over the truth's), counted up to the truth's: colour beyond what the true
photos have is not more believable colour, so among the candidates that reach the truth's colourfulness the most
accurate (highest validation PSNR) is chosen. Test sets are scored for every candidate but never used to rank.
The pick is then confirmed on them: at least ``--min-gain`` over grey on the test split, and on ``--other-test``
the issue's aim (``--aim-gain`` dB and ``--aim-colour`` x the truth's colourfulness). A pick that fails is not
shipped; the next candidate in the validation ranking is tried. Writes ``candidates.md`` (validation, test and
other-source test tables, the choice, and the
hue shares on the WWII photos), ``historic.png`` and ``test-photos.png``, and ``results.json`` (a later run with
more candidates reuses the scores of those already in it). With ``--keep``, the candidates scored by earlier runs
into the same ``--out`` stay in the tables and in the choice, so a new model can be added to a comparison
without scoring every earlier one again; the figures show only the candidates named in this run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _candidate(text: str):
    """MODEL, MODEL@T=0.5 (classification temperature) or MODEL@S=0.8 (chroma scale); MODEL@0.5 is a temperature."""
    path, _, setting = text.partition("@")
    name, _, value = setting.rpartition("=")
    if not setting:
        return path, {}
    return path, {"chroma_scale" if name == "S" else "temperature": float(value)}


def _label(path: str, setting: dict) -> str:
    name = Path(path).name
    for key, short in (("temperature", "T"), ("chroma_scale", "S")):
        if key in setting:
            name += f" {short}={setting[key]:g}"
    return name


def _make_caching_colorizer():
    """A Colorizer that remembers the network's raw output per input batch, so that scoring one model at
    several temperatures or chroma scales runs the network once."""
    import numpy as np

    from koala.colorize import Colorizer

    outputs: dict[tuple[str, str], np.ndarray] = {}

    class CachingColorizer(Colorizer):
        def network_output(self, lightness):
            key = (str(self.model_path), hashlib.sha1(np.ascontiguousarray(lightness).tobytes()).hexdigest())
            if key not in outputs:
                outputs[key] = np.asarray(super().network_output(lightness))
            return outputs[key]

    return CachingColorizer


def _row(result) -> dict:
    summary = result.summary_dict()
    model, grey = summary["model"], summary["grey baseline"]
    return {
        "psnr": model["psnr"], "grey_psnr": grey["psnr"], "gain": model["psnr"] - grey["psnr"],
        "ssim": model["ssim"], "grey_ssim": grey["ssim"], "auc": model["auc"], "grey_auc": grey["auc"],
        "colorfulness_ratio": model["colorfulness_ratio"], "wins": result.wins, "count": len(result.images),
    }


def rank(eligible: dict[str, dict]) -> list[str]:
    """Validation rows that pass the PSNR bar, best first by the rule: the highest colourfulness ratio, capped at 1
    (the truth's); ties at the cap go to the higher PSNR."""
    return sorted(eligible, key=lambda label: (min(eligible[label]["colorfulness_ratio"], 1.0), eligible[label]["psnr"]),
                  reverse=True)


def confirm(ranking: list[str], results: dict, min_gain: float, aim_gain: float, aim_colour: float):
    """The first of ``ranking`` (best first, by validation) that the test sets confirm, and why each before it failed."""
    failed = []
    for label in ranking:
        reasons = []
        test = results["test"].get(label)
        if test is not None and test["gain"] < min_gain:
            reasons.append(f"test {test['gain']:+.2f} dB < {min_gain:+.2f}")
        other = results["other-test"].get(label)
        if other is not None and other["gain"] < aim_gain:
            reasons.append(f"other test {other['gain']:+.2f} dB < {aim_gain:+.2f}")
        if other is not None and other["colorfulness_ratio"] < aim_colour:
            reasons.append(f"other test colourfulness {other['colorfulness_ratio']:.2f}x < {aim_colour:.2f}x")
        if not reasons:
            return label, failed
        failed.append((label, "; ".join(reasons)))
    return None, failed


def _table(title: str, rows: dict[str, dict]) -> list[str]:
    lines = [f"### {title}", "", "| model | PSNR (dB) | gain over grey | SSIM | colourfulness × truth | AuC | better than grey |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    any_row = next(iter(rows.values()))
    lines.append(f"| grey baseline | {any_row['grey_psnr']:.2f} | 0 | {any_row['grey_ssim']:.4f} | 0.00 | "
                 f"{any_row['grey_auc']:.4f} | |")
    for label, row in rows.items():
        lines.append(f"| {label} | {row['psnr']:.2f} | {row['gain']:+.2f} | {row['ssim']:.4f} | "
                     f"{row['colorfulness_ratio']:.2f} | {row['auc']:.4f} | "
                     f"{row['wins']}/{row['count']} ({100 * row['wins'] / row['count']:.0f} %) |")
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", help="model folders, MODEL@T for a classification temperature")
    parser.add_argument("--data", required=True, help="prepared set: its validation split chooses, its test split confirms")
    parser.add_argument("--other-test", default=None, help="a folder of colour photos from another source (test only)")
    parser.add_argument("--historic", default=None, help="folder of real black-and-white photos (no truth: for looking)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--min-gain", type=float, default=0.3, help="validation PSNR gain over grey a candidate needs")
    parser.add_argument("--photos", type=int, default=6, help="test photos in the figure")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N photos of each set (a quick check)")
    parser.add_argument("--aim-gain", type=float, default=0.5, help="PSNR gain over grey the pick needs on --other-test")
    parser.add_argument("--aim-colour", type=float, default=0.6, help="colourfulness x truth the pick needs on --other-test")
    parser.add_argument("--keep", action="store_true",
                        help="keep the candidates of earlier runs into --out in the tables and the choice")
    arguments = parser.parse_args()

    import numpy as np

    from koala import color, images, metrics
    from koala.evaluate import evaluate, evaluation_images, predict
    from koala.plots import picture_columns, save_figure

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    caching_colorizer = _make_caching_colorizer()
    candidates = [_candidate(text) for text in arguments.candidates]
    colorizers = {}
    for path, setting in candidates:
        colorizers[_label(path, setting)] = caching_colorizer(path, **setting)

    quiet = dict(progress=False, log=lambda message: None, limit=arguments.limit)
    results: dict[str, dict[str, dict]] = {"validation": {}, "test": {}, "other-test": {}}
    previous, previous_hues = {}, {}
    if (out / "results.json").exists():  # scores of candidates already measured (same data) are reused
        saved = json.loads((out / "results.json").read_text())
        previous, previous_hues = saved["results"], saved.get("historic", {})
    if arguments.keep:
        for part in results:
            results[part].update({label: row for label, row in previous.get(part, {}).items() if label not in colorizers})
    for label, colorizer in colorizers.items():
        if label in previous.get("validation", {}):
            for part in results:
                if label in previous.get(part, {}):
                    results[part][label] = previous[part][label]
            continue
        results["validation"][label] = _row(evaluate(colorizer, arguments.data, split="validation", **quiet))
        print(f"{label}: validation {results['validation'][label]}", flush=True)
    eligible = {label: row for label, row in results["validation"].items() if row["gain"] >= arguments.min_gain}
    ranking = rank(eligible)
    chosen = ranking[0] if ranking else None
    for label, colorizer in colorizers.items():
        if label in results["test"]:
            continue
        results["test"][label] = _row(evaluate(colorizer, arguments.data, split="test", **quiet))
        if arguments.other_test:
            results["other-test"][label] = _row(evaluate(colorizer, arguments.other_test, **quiet))
        print(f"{label}: test {results['test'][label]}", flush=True)
    confirmed, failed = confirm(ranking, results, arguments.min_gain, arguments.aim_gain, arguments.aim_colour)

    historic = []
    if arguments.historic:
        historic = [(path.name, images.read_image(path)) for path, _ in images.find_images([arguments.historic])]
    hue_rows = {label: row for label, row in previous_hues.items() if label not in colorizers} if arguments.keep else {}
    historic_columns = [("input", [image for _, image in historic[:6]])]
    truth = [image for _, image in evaluation_images(arguments.data, "test", 256, log=lambda message: None)[0]]
    chosen_photos = np.linspace(0, len(truth) - 1, arguments.photos).astype(int)
    test_columns = [("grey input", [color.grey_to_rgb(color.rgb_to_lightness(truth[i])) for i in chosen_photos])]
    for label, colorizer in colorizers.items():
        coloured = [colorizer.colorize(image) for _, image in historic]
        shares = [metrics.hue_shares(image) for image in coloured]
        if shares:
            hue_rows[label] = {
                "mean_chroma": float(np.mean([item.mean_chroma for item in shares])),
                "bluish": float(np.mean([item.bluish for item in shares])),
                "greenish": float(np.mean([item.greenish for item in shares])),
                "warm": float(np.mean([item.warm for item in shares])),
                "mean_ab": [float(np.mean([item.mean_ab[k] for item in shares])) for k in (0, 1)],
            }
        historic_columns.append((label, coloured[:6]))
        test_columns.append((label, predict(colorizer, [truth[i] for i in chosen_photos])))
    test_columns.append(("true colours", [truth[i] for i in chosen_photos]))

    lines = ["# Candidates for the default model", "",
             f"Chosen on the validation split of `{arguments.data}` by the rule: PSNR at least "
             f"{arguments.min_gain} dB over grey, then the highest colourfulness up to the truth's (among those reaching it, "
             "the highest PSNR). Test sets confirm; they choose nothing.",
             ""]
    lines += _table("Validation (chooses)", results["validation"])
    lines += [f"**Chosen: {chosen or 'none: no candidate gains enough'}**", ""]
    for label, reason in failed:
        lines += [f"Not confirmed on the test sets: {label} ({reason}); the next in the validation ranking is tried.", ""]
    if chosen:
        lines += [f"**Confirmed (ships): {confirmed or 'none'}**", ""]
    lines += _table("Test (a): held out from the same sources", results["test"])
    if results["other-test"]:
        lines += _table(f"Test (b): another source, `{arguments.other_test}`", results["other-test"])
    if hue_rows:
        lines += [f"### Real WWII photos ({len(historic)}; no truth)", "",
                  "| model | mean chroma | bluish pixels (b* < -3) | greenish pixels (a* < -3) | warm pixels | mean a*, b* |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
        for label, row in hue_rows.items():
            lines.append(f"| {label} | {row['mean_chroma']:.1f} | {100 * row['bluish']:.1f} % | "
                         f"{100 * row['greenish']:.1f} % | {100 * row['warm']:.1f} % | "
                         f"{row['mean_ab'][0]:+.1f}, {row['mean_ab'][1]:+.1f} |")
        lines.append("")
    (out / "candidates.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"chosen": chosen, "confirmed": confirmed, "results": results,
                                                  "historic": hue_rows}, indent=1))

    for file_name, columns in (("test-photos.png", test_columns), ("historic.png", historic_columns)):
        if columns[0][1]:
            save_figure(picture_columns(columns), out / file_name, dpi=80)
    print(f"chosen: {chosen}; confirmed: {confirmed}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
