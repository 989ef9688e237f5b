#!/usr/bin/env python3
"""Runs the CryLab engine benchmark and the Keras reference on the same machine, interleaved
(CryLab, Keras, CryLab, Keras, ... per workload, each in a fresh process), and prints the ratios.

    swift build -c release --scratch-path .build-engine --product crylab-engine-bench
    /work/venv/bin/python Scripts/keras/bench_side_by_side.py [--rounds 2] [--steps 5] [--threads 2]

Ratio = CryLab samples/s / Keras samples/s (best round of each); RSS ratio = CryLab / Keras peak.
"""
import argparse
import json
import os
import subprocess
import sys

root = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--binary", default=os.path.join(root, ".build-engine", "release", "crylab-engine-bench"))
parser.add_argument("--workloads", default="unet-train,small-unet-train,classifier-infer")
args = parser.parse_args()

common = [f"--steps", str(args.steps), "--threads", str(args.threads), "--batch", str(args.batch)]


def run(command):
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


print(f"{'workload':<18} {'framework':<8} {'samples/s':>10} {'GFLOP/s':>8} {'peak GiB':>9}")
for workload in args.workloads.split(","):
    best = {}
    for _ in range(args.rounds):
        for name, command in (("crylab", [args.binary, workload]),
                              ("keras", [sys.executable, os.path.join(root, "Scripts/keras/bench_keras.py"), workload])):
            r = run(command + common)
            print(f"{workload:<18} {name:<8} {r['samples_per_second']:>10.2f} {r['gflops_per_second']:>8.1f} {r['peak_rss_gib']:>9.2f}",
                  flush=True)
            if name not in best or r["samples_per_second"] > best[name]["samples_per_second"]:
                best[name] = r
    c, k = best["crylab"], best["keras"]
    print(f"{workload:<18} ratio    speed {c['samples_per_second'] / k['samples_per_second']:.2f}x   "
          f"peak RSS {c['peak_rss_gib'] / k['peak_rss_gib']:.2f}x", flush=True)
