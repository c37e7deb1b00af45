"""Choose the default model and its colouring settings on photos from other collections, at their own size.

    python scripts/choose_default.py models/default@S=1 models/default@S=1.3 runs/broad@S=1,R=4 ... \
        --choose ~/.cache/koala-eval/choose/mit1003 \
        --confirm ~/.cache/koala-eval/test/crowd ~/.cache/koala-eval/test/sun ../shared/data/photos \
        --historic ../shared/data/historic --out models/comparison-full

A candidate is a model folder with optional colouring settings after ``@``, comma-separated: ``S=`` chroma scale,
``T=`` classification temperature, ``R=`` edge radius, ``E=`` edge epsilon, ``F=1`` flip averaging and ``I=`` the
side the network reads each photo at (``ColorizerConfig``; ``R=0`` enlarges the colour bilinearly). Every photo is coloured at its own size exactly as ``koala colorize`` colours it (colour
predicted at the network's size, enlarged, joined with the photo's full-resolution lightness) and scored against
its true colours beside the grey baseline (the same lightness, no colour). The network runs once per photo and
model, whatever the number of settings.

The rule, on the ``--choose`` photos only: among the candidates at least ``--min-gain`` dB over grey on average
and better than grey on at least ``--min-share`` of the photos, the most colourful (mean colourfulness over the
truth's), counted up to the truth's, ties going to the higher PSNR; if none passes, the most accurate among those
at least ``--min-colour`` x as colourful as the truth. The pick is then scored once on each ``--confirm`` folder
(never used to choose) against the same three bars, with SSIM. The validation split of the training sources is
for losses and early stopping only: it chooses nothing here.

Writes ``candidates.md`` (the choosing table, the pick, the confirmation and the hue shares on the WWII
photos), ``results.json`` (a later run reuses the scores of candidates already in it; ``--keep`` also keeps
earlier candidates that are not named again in the tables and the rule) and ``historic.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTINGS = {"S": "chroma_scale", "T": "temperature", "R": "edge_radius", "E": "edge_epsilon", "F": "flip_average",
            "I": "input_size"}


def parse_candidate(text: str) -> tuple[str, dict]:
    """``MODEL`` or ``MODEL@S=1.2,R=4`` into (model folder, Colorizer keyword arguments)."""
    path, _, settings = text.partition("@")
    options = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        if key not in SETTINGS or not value:
            raise SystemExit(f"{text}: unknown setting {item!r} (use {', '.join(f'{key}=' for key in SETTINGS)})")
        options[SETTINGS[key]] = int(value) if key in ("R", "I") else bool(int(value)) if key == "F" else float(value)
    return path, options


def label(path: str, options: dict) -> str:
    """A candidate's name in the tables: the model folder's name and its settings."""
    short = {name: key for key, name in SETTINGS.items()}
    settings = ",".join(f"{short[name]}={value:g}" for name, value in options.items())
    return f"{Path(path).name} {settings}".strip()


def _caching_colorizer_class():
    """A Colorizer that remembers the network's raw output per input batch, so that scoring one model with
    several settings runs the network once."""
    import numpy as np

    from koala.colorize import Colorizer

    outputs: dict[tuple[str, str], np.ndarray] = {}

    class CachingColorizer(Colorizer):
        def network_output(self, lightness):
            key = (str(self.model_path), self.flip_average, self.size,
                   hashlib.sha1(np.ascontiguousarray(lightness).tobytes()).hexdigest())
            if key not in outputs:
                outputs[key] = np.asarray(super().network_output(lightness))
            return outputs[key]

    return CachingColorizer


def score_folder(colorizers: dict, folder: str, *, ssim: bool = False, limit: int | None = None,
                 batch_size: int = 8, log=print) -> dict[str, dict]:
    """Score every colouriser on the colour photos of ``folder`` at their own size: one row per label with the
    mean PSNR gain over grey, the photos better than grey, the colourfulness ratio and (with ``ssim``) SSIM."""
    import itertools

    import numpy as np

    from koala import metrics
    from koala.evaluate import evaluation_images

    # "~" kept as written in results.json (the table names the folder as the command gave it), expanded to read
    items, _ = evaluation_images(Path(folder).expanduser(), full_size=True,
                                 log=lambda message: log(f"{folder}: {message}"))
    if limit:
        items = itertools.islice(items, limit)
    sums = {name: {"gain": [], "psnr": [], "colour": [], "ssim": []} for name in colorizers}
    grey_psnr, grey_ssim, true_colour = [], [], []
    while batch := list(itertools.islice(items, batch_size)):
        truth = [rgb for _, rgb in batch]
        greys = [metrics.grey_baseline(rgb) for rgb in truth]
        grey_scores = [metrics.psnr(grey, rgb) for grey, rgb in zip(greys, truth)]
        grey_psnr += grey_scores
        true_colour += [metrics.colorfulness(rgb) for rgb in truth]
        if ssim:
            grey_ssim += [metrics.ssim(grey, rgb) for grey, rgb in zip(greys, truth)]
        for name, colorizer in colorizers.items():
            for output, rgb, grey_score in zip(colorizer.colorize_batch(truth), truth, grey_scores):
                score = metrics.psnr(output, rgb)
                sums[name]["psnr"].append(score)
                sums[name]["gain"].append(score - grey_score)
                sums[name]["colour"].append(metrics.colorfulness(output))
                if ssim:
                    sums[name]["ssim"].append(metrics.ssim(output, rgb))
    rows = {}
    for name, values in sums.items():
        gains = np.array(values["gain"], dtype=np.float64)
        rows[name] = {
            "psnr": float(np.mean(values["psnr"])), "grey_psnr": float(np.mean(grey_psnr)),
            "gain": float(gains.mean()), "gain_se": float(gains.std(ddof=1) / math.sqrt(len(gains))),
            "wins": int((gains > 0).sum()), "count": len(gains),
            "colorfulness_ratio": float(np.mean(values["colour"]) / np.mean(true_colour)),
            "ssim": float(np.mean(values["ssim"])) if ssim else None,
            "grey_ssim": float(np.mean(grey_ssim)) if ssim else None,
        }
    return rows


def passes(row: dict, min_gain: float, min_share: float, min_colour: float | None = None) -> bool:
    """Whether a row clears the bars: mean gain, share of photos better than grey, and (if given) colour."""
    ok = row["gain"] >= min_gain and row["wins"] >= min_share * row["count"]
    return ok and (min_colour is None or row["colorfulness_ratio"] >= min_colour)


def rank(rows: dict[str, dict], min_gain: float = 0.5, min_share: float = 0.6, min_colour: float = 0.6):
    """The candidates in the rule's order, best first, and which branch of the rule ordered them.

    Those at least ``min_gain`` dB over grey and better than grey on ``min_share`` of the photos, by colourfulness
    capped at the truth's (ties at the cap: the higher PSNR); if there are none, those at least ``min_colour`` x
    as colourful as the truth, by PSNR gain."""
    accurate = [name for name, row in rows.items() if passes(row, min_gain, min_share)]
    if accurate:
        return sorted(accurate, key=lambda name: (min(rows[name]["colorfulness_ratio"], 1.0), rows[name]["psnr"]),
                      reverse=True), "accurate enough: the most colourful"
    colourful = [name for name, row in rows.items() if row["colorfulness_ratio"] >= min_colour]
    return (sorted(colourful, key=lambda name: rows[name]["gain"], reverse=True),
            "none accurate enough: the most accurate of those colourful enough")


def _table(title: str, rows: dict[str, dict]) -> list[str]:
    lines = [f"### {title}", "", "| candidate | PSNR (dB) | gain over grey | better than grey | colourfulness × truth | SSIM |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    any_row = next(iter(rows.values()))
    grey_ssim = f"{any_row['grey_ssim']:.4f}" if any_row.get("grey_ssim") is not None else ""
    lines.append(f"| grey baseline | {any_row['grey_psnr']:.2f} | 0 | | 0.00 | {grey_ssim} |")
    for name, row in rows.items():
        ssim = f"{row['ssim']:.4f}" if row.get("ssim") is not None else ""
        lines.append(f"| {name} | {row['psnr']:.2f} | {row['gain']:+.2f} ± {row['gain_se']:.2f} | "
                     f"{row['wins']}/{row['count']} ({100 * row['wins'] / row['count']:.0f} %) | "
                     f"{row['colorfulness_ratio']:.2f} | {ssim} |")
    return lines + [""]


def hue_row(coloured: list) -> dict:
    """The mean hue shares (koala.metrics.hue_shares) of colourised photos that have no truth."""
    import numpy as np

    from koala import metrics

    shares = [metrics.hue_shares(image) for image in coloured]
    return {
        "mean_chroma": float(np.mean([item.mean_chroma for item in shares])),
        "bluish": float(np.mean([item.bluish for item in shares])),
        "greenish": float(np.mean([item.greenish for item in shares])),
        "warm": float(np.mean([item.warm for item in shares])),
        "mean_ab": [float(np.mean([item.mean_ab[k] for item in shares])) for k in (0, 1)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", help="MODEL or MODEL@S=1.2,R=4 (see above)")
    parser.add_argument("--choose", required=True, help="folder of colour photos from other collections: it chooses")
    parser.add_argument("--confirm", nargs="*", default=[], help="folders of colour photos that confirm the pick")
    parser.add_argument("--historic", default=None, help="folder of real black-and-white photos (no truth: for looking)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--min-gain", type=float, default=0.5, help="mean PSNR gain over grey (dB) a candidate needs")
    parser.add_argument("--min-share", type=float, default=0.6, help="share of photos it must colour better than grey")
    parser.add_argument("--min-colour", type=float, default=0.6, help="colourfulness x truth's, in the fallback")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N photos of each folder")
    parser.add_argument("--keep", action="store_true", help="keep earlier candidates of --out in the tables and the rule")
    parser.add_argument("--no-confirm", action="store_true", help="choose only (a sweep); confirm in a later run")
    arguments = parser.parse_args()

    from koala import images

    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    colorizer_class = _caching_colorizer_class()
    colorizers = {}
    for text in arguments.candidates:
        path, options = parse_candidate(text)
        colorizers[label(path, options)] = colorizer_class(path, **options)

    saved = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    previous = saved.get("choose", {}) if saved.get("choose_folder") == arguments.choose else {}
    confirmations = saved.get("confirm", {})
    chosen_rows = {name: row for name, row in previous.items() if arguments.keep or name in colorizers}
    new = {name: colorizer for name, colorizer in colorizers.items() if name not in previous}
    if new:
        chosen_rows.update(score_folder(new, arguments.choose, limit=arguments.limit))
    for name in chosen_rows:
        print(f"{name}: {chosen_rows[name]}", flush=True)
    ranking, branch = rank(chosen_rows, arguments.min_gain, arguments.min_share, arguments.min_colour)
    pick = ranking[0] if ranking else None

    if pick and not arguments.no_confirm:
        if pick not in colorizers:
            raise SystemExit(f"the pick {pick} was scored in an earlier run: name it again to confirm it")
        for folder in arguments.confirm:
            if pick not in confirmations.get(folder, {}):
                rows = score_folder({pick: colorizers[pick]}, folder, ssim=True, limit=arguments.limit)
                confirmations.setdefault(folder, {})[pick] = rows[pick]
                print(f"{pick} on {folder}: {rows[pick]}", flush=True)

    historic_rows = saved.get("historic", {})
    columns = []
    if arguments.historic:
        photos = [images.read_image(path) for path, _ in images.find_images([arguments.historic])]
        columns.append(("input", photos[:6]))
        for name, colorizer in colorizers.items():
            coloured = [colorizer.colorize(photo) for photo in photos]
            historic_rows[name] = hue_row(coloured)
            columns.append((name, coloured[:6]))

    lines = ["# Choosing the default on photos from other collections, at their own size", "",
             f"Chosen on `{arguments.choose}` by the rule: at least {arguments.min_gain:+.1f} dB over grey and better than "
             f"grey on at least {100 * arguments.min_share:.0f} % of the photos, then the most colourful up to the truth's; "
             f"if none passes, the most accurate at {arguments.min_colour:.1f}x colour or more. "
             "Every photo is coloured at its own size as `koala colorize` colours it.", ""]
    lines += _table("Choosing set", chosen_rows)
    lines += [f"**Rule ({branch}): {pick or 'no candidate'}**", ""]
    for folder, rows in confirmations.items():
        if pick in rows:
            row = rows[pick]
            verdict = "meets" if passes(row, arguments.min_gain, arguments.min_share, arguments.min_colour) else "misses"
            lines += _table(f"Confirmation: `{folder}` ({verdict} the bars)", {pick: row})
    if historic_rows:
        lines += ["### Real WWII photos (no truth)", "",
                  "| candidate | mean chroma | bluish pixels (b* < -3) | greenish pixels (a* < -3) | warm pixels | mean a*, b* |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
        for name, row in historic_rows.items():
            if name in chosen_rows:
                lines.append(f"| {name} | {row['mean_chroma']:.1f} | {100 * row['bluish']:.1f} % | "
                             f"{100 * row['greenish']:.1f} % | {100 * row['warm']:.1f} % | "
                             f"{row['mean_ab'][0]:+.1f}, {row['mean_ab'][1]:+.1f} |")
        lines.append("")
    (out / "candidates.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(
        {"choose_folder": arguments.choose, "pick": pick, "branch": branch, "choose": chosen_rows,
         "confirm": confirmations, "historic": historic_rows}, indent=1))
    if columns and columns[0][1]:
        from koala.plots import picture_columns, save_figure

        save_figure(picture_columns(columns), out / "historic.png", dpi=80)
    print(f"pick: {pick} ({branch}); wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
