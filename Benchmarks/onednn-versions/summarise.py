#!/usr/bin/env python3
"""Summarises run.sh's results: time ratios new/old (below 1 = the newer oneDNN is faster).

    python3 summarise.py RESULTS_DIR        (the folder of round<R>-<version>.jsonl files)

Step total: the sum over the story U-Net's 3x3 convolutions of the pass's median time, each
shape weighted by how often it occurs (WEIGHTS), without the first layer's backward-data pass,
which training does not run (the input needs no gradient).
"""
import glob
import json
import os
import re
import statistics
import sys

# (ic, oc, hw) -> convolutions of that shape in the story U-Net (18 in all): encoder levels at
# 128, 64, 32, 16 and the bottleneck at 8 have two each; each decoder level (16, 32, 64, 128) has
# a first convolution on the concatenation [upsampled, skip] and a second one at its own width.
WEIGHTS = {
    (1, 32, 128): 1, (32, 32, 128): 2,        # encoder level 0 + decoder level 0's second
    (32, 64, 64): 1, (64, 64, 64): 2,         # encoder level 1 + decoder level 1's second
    (64, 128, 32): 1, (128, 128, 32): 2,      # encoder level 2 + decoder level 2's second
    (128, 256, 16): 1, (256, 256, 16): 2,     # encoder level 3 + decoder level 3's second
    (256, 512, 8): 1, (512, 512, 8): 1,       # bottleneck
    (512, 256, 16): 1, (256, 128, 32): 1,     # decoder first convolutions (concatenated input)
    (128, 64, 64): 1, (64, 32, 128): 1,
}
PASSES = ["fwd", "bwd_data", "bwd_weights"]
PRECISIONS = []  # from the data: f32, bf16, or variants such as bf16-f32out-nhwc
W = 16  # column width


def weight(key, pass_name):
    if pass_name == "bwd_data" and key == (1, 32, 128):
        return 0
    return WEIGHTS[key]


def load(folder):
    """{(round, version): {(precision, pass, ic, oc, hw): (median_ms, gflops, impl)}}"""
    data = {}
    for path in glob.glob(os.path.join(folder, "round*-*.jsonl")):
        m = re.match(r"round(\d+)-(.+)\.jsonl$", os.path.basename(path))
        rows = {}
        with open(path) as f:
            for line in f:
                j = json.loads(line)
                rows[(j["precision"], j["pass"], j["ic"], j["oc"], j["hw"])] = (
                    j["median_ms"], j.get("gflops"), j["impl"])
        data[(int(m.group(1)), m.group(2))] = rows
    return data


def total(rows, precision, passes):
    s = 0.0
    for key, w in WEIGHTS.items():
        for p in passes:
            ms = rows.get((precision, p) + key, (None,))[0]
            if ms is None:
                return None
            s += weight(key, p) * ms
    return s


def vkey(v):
    return tuple(int(x) for x in v.split("."))


def main():
    data = load(sys.argv[1])
    rounds = sorted({r for r, _ in data})
    versions = sorted({v for _, v in data}, key=vkey)
    old, news = versions[0], versions[1:]
    kinds = [(p, [p]) for p in PASSES] + [("step", PASSES)]
    global PRECISIONS, W
    PRECISIONS = sorted({k[0] for rows in data.values() for k in rows}, key=lambda p: (p[:3] != "f32", p))
    W = max(16, max(len(p) for p in PRECISIONS) + 13)

    print(f"Weighted time per training step of the 3x3 convolutions, oneDNN {old} (ms):")
    print("round  " + "  ".join(f"{pr + ' ' + k:>{W}}" for pr in PRECISIONS for k, _ in kinds))
    for r in rounds:
        rows = data.get((r, old), {})
        cells = [total(rows, pr, ps) for pr in PRECISIONS for _, ps in kinds]
        print(f"{r:>5}  " + "  ".join(f"{c:{W}.0f}" if c else f"{'-':>{W}}" for c in cells))

    for new in news:
        print(f"\nTime ratio oneDNN {new} / {old} by round (below 1: {new} faster):")
        print("round  " + "  ".join(f"{pr + ' ' + k:>{W}}" for pr in PRECISIONS for k, _ in kinds))
        per_kind = {}
        for r in rounds:
            a, b = data.get((r, old)), data.get((r, new))
            cells = []
            for pr in PRECISIONS:
                for k, ps in kinds:
                    ta, tb = (total(a, pr, ps) if a else None), (total(b, pr, ps) if b else None)
                    c = tb / ta if ta and tb else None
                    per_kind.setdefault((pr, k), []).append(c)
                    cells.append(c)
            print(f"{r:>5}  " + "  ".join(f"{c:{W}.3f}" if c else f"{'-':>{W}}" for c in cells))
        def span(xs):
            xs = [x for x in xs if x]
            return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "-"
        print("range  " + "  ".join(f"{span(per_kind[(pr, k)]):>{W}}" for pr in PRECISIONS for k, _ in kinds))

    print(f"\nPer pass, median over rounds: GFLOP/s of each version, and ratios of time new/old"
          f" (range over rounds):")
    head = f"{'precision':<16} {'pass':<12} {'shape':<12} {'w':>2} " + " ".join(
        f"{v:>7}" for v in versions) + "  " + "  ".join(f"{v + '/' + old:>18}" for v in news)
    print(head)
    for pr in PRECISIONS:
        for p in PASSES:
            for key in WEIGHTS:
                k = (pr, p) + key
                gf = []
                for v in versions:
                    vals = [data[(r, v)][k][1] for r in rounds if (r, v) in data and k in data[(r, v)]
                            and data[(r, v)][k][1] is not None]
                    gf.append(statistics.median(vals) if vals else None)
                ratios = []
                for v in news:
                    rs = [data[(r, v)][k][0] / data[(r, old)][k][0] for r in rounds
                          if (r, v) in data and (r, old) in data and k in data[(r, v)]
                          and k in data[(r, old)] and data[(r, v)][k][0] and data[(r, old)][k][0]]
                    ratios.append(f"{statistics.median(rs):5.2f} ({min(rs):.2f}-{max(rs):.2f})"
                                  if rs else "-")
                shape = f"{key[0]}->{key[1]}@{key[2]}"
                print(f"{pr:<16} {p:<12} {shape:<12} {weight(key, p):>2} " + " ".join(
                    f"{g:7.1f}" if g else f"{'-':>7}" for g in gf) + "  " + "  ".join(
                    f"{x:>18}" for x in ratios))

    impls = {}
    for (r, v), rows in data.items():
        for (pr, p, *_), (_, _, impl) in rows.items():
            impls.setdefault((v, pr, p), set()).add(impl)
    print("\nImplementations chosen:")
    for (v, pr, p), names in sorted(impls.items(), key=lambda x: (vkey(x[0][0]), x[0][1:])):
        print(f"  {v:<5} {pr:<5} {p:<12} {', '.join(sorted(str(n) for n in names))}")


if __name__ == "__main__":
    main()
