"""An experiment of issue 23 (kept to reproduce its figures; not part of the library): a post-hoc chroma calibration.

The default model's predicted a*b* are multiplied, per bin of (the photo's L* at 256 px: 5 bins; the prediction's
hue: 12 bins; its chroma: 5 bins), by the least-squares slope of the true a*b* on the predicted ones in that bin
(shrunk towards 1 with a prior of 2,000 pixels), fitted on each ``--fit`` group of folders at 256 px; then each photo
of ``--eval`` is coloured at its own size as ``koala colorize`` colours it and scored against grey, for the plain
chroma scales and the calibrated ones (``--rules "plain:0.85,1.0;c0:1.0,1.2"``: c0 is the first --fit group, c1 the
second, ...). Result (models/README.md): fitted on other photos it lies on the default's curve; fitted on the very
photos it is scored on, +0.1-0.2 dB above it (an upper bound).

    python scripts/experiments/chroma_calibration.py --fit ~/.cache/koala-eval/mit-sweep \
        --fit ~/.cache/koala-src/voc ~/.cache/koala-src/people --eval ~/.cache/koala-eval/mit-sweep \
        --out calibration.json --rules "plain:0.85,1.0,1.15;c0:1.0,1.2,1.4;c1:1.0,1.2,1.4"
"""
import sys, time, json, argparse
import numpy as np
from koala import color, images, metrics, evaluate
from koala.colorize import Colorizer, _join
from koala.train import ab_from_output

p = argparse.ArgumentParser()
p.add_argument("--fit", nargs="*", action="append", default=[])  # one group per --fit
p.add_argument("--fit-limit", type=int, default=1500)
p.add_argument("--eval")
p.add_argument("--out")
p.add_argument("--rules", default="plain:0.85,1.0,1.15;c0:1.0,1.2,1.4")
a = p.parse_args()
col = Colorizer(input_size=0, flip_average=True)  # the network at 256 px, as when this ran
L_EDGES = np.array([20, 40, 60, 80]); HUES = 12; C_EDGES = np.array([4, 8, 14, 22])
NB = 5 * HUES * 5

def bins(small, ab):  # small L (N,256,256) 0..100, ab normalised (N,256,256,2)
    abu = ab * color.AB_SCALE
    c = np.hypot(abu[..., 0], abu[..., 1]); h = np.arctan2(abu[..., 1], abu[..., 0])
    hb = np.floor((h + np.pi) / (2 * np.pi) * HUES).astype(int) % HUES
    return (np.digitize(small, L_EDGES) * HUES + hb) * 5 + np.digitize(c, C_EDGES)

def fit(folders):
    A = np.zeros(NB); B = np.zeros(NB); N = np.zeros(NB); n = 0
    files = []
    for f in folders:
        fl = images.find_images([f]); step = max(1, len(fl) // max(1, a.fit_limit // len(folders)))
        files += [p for p, _ in fl[::step]]
    for i in range(0, len(files), 16):
        truth = []
        for path in files[i:i + 16]:
            try: rgb = images.resize_and_crop(images.read_image(path, shrink_to=512), 256)
            except images.ImageError: continue
            truth.append(rgb)
        truth = np.stack(truth)
        lab = np.stack([color.rgb_to_lab(t) for t in truth])
        small = lab[..., 0]; y = lab[..., 1:] / color.AB_SCALE
        m = ab_from_output(col.network_output(small), col.config, (256, 256), col.temperature, 1.0)
        b = bins(small, m).ravel()
        A += np.bincount(b, (m ** 2).sum(-1).ravel(), NB); B += np.bincount(b, (m * y).sum(-1).ravel(), NB)
        N += np.bincount(b, minlength=NB)
        n += len(truth)
    prior = 2000 * A.sum() / N.sum()
    s = np.clip((B + prior) / (A + prior), 0, 2)
    print(f"fit on {n} photos; overall slope {B.sum()/A.sum():.3f}; s pct 10/50/90:", np.percentile(s[N > 0], [10, 50, 90]).round(2), flush=True)
    return s

tables = {f"c{i}": fit(g) for i, g in enumerate(a.fit)}
rules = {}
for part in a.rules.split(";"):
    kind, ss = part.split(":")
    for S in ss.split(","):
        rules[f"{kind} S={S}"] = (kind, float(S))
res = {k: [] for k in rules}; t0 = time.time()
items, _ = evaluate.evaluation_images(a.eval, full_size=True, log=lambda *x: None)
for batch in evaluate._batches(iter(items), 8):
    truths = [rgb for _, rgb in batch]
    small = np.stack([color.rgb_to_lightness(images.resize_exact(t, col.size)) for t in truths])
    m = ab_from_output(col.network_output(small), col.config, (256, 256), col.temperature, 1.0)
    greys = [metrics.image_metrics(metrics.grey_baseline(t), t) for t in truths]
    for name, (kind, S) in rules.items():
        ab = m * S if kind == "plain" else m * S * tables[kind][bins(small, m)][..., None]
        ab = ab.astype(np.float32)
        for i, t in enumerate(truths):
            mm = metrics.image_metrics(_join(t, *col.colour_planes(small[i], ab[i])), t)
            res[name].append((mm.psnr - greys[i].psnr, mm.colorfulness, mm.true_colorfulness))
    print(len(res[name]), f"{time.time()-t0:.0f}s", flush=True)
summary = {}
for name, rows in res.items():
    r = np.array(rows)
    summary[name] = dict(gain=float(r[:, 0].mean()), better=float((r[:, 0] > 0).mean()), colour=float(r[:, 1].mean() / r[:, 2].mean()))
    print(f"{name:20s} {summary[name]['gain']:+.3f} dB {100*summary[name]['better']:.0f}% {summary[name]['colour']:.3f}x")
json.dump(dict(summary=summary, rows=res, tables={k: v.tolist() for k, v in tables.items()}), open(a.out, "w"))
