#!/usr/bin/env python3
"""Runs the CryLab engine benchmark and the Keras reference (and PyTorch, if given a Python that
has it) on the same machine, interleaved (CryLab, Keras, [PyTorch], CryLab, ... per workload, each
in a fresh process), and prints the ratios.

    swift build -c release --product crylab-engine-bench
    $(Scripts/python-env.sh tensorflow-cpu keras) Scripts/keras/bench_side_by_side.py [--rounds 2] [--steps 5] [--threads 2] \
        [--torch-python /path/to/python-with-torch] [--precisions fp32,fast]

Ratio = CryLab samples/s / reference samples/s, from the median round of each (rounds are
interleaved, so load from other processes hits every framework alike); RSS ratio = CryLab / reference.
Each round's own ratio (CryLab and the reference run one after the other) is printed too, with the
median and range over rounds: on a host whose speed drifts, these pairs share the conditions.
--precisions runs CryLab once per listed convolution precision in every round (fp32, bf16, winograd, fast).
--keras-policies runs Keras once per listed dtype policy in every round: float32 (label keras) and
mixed_bfloat16 (label keras-bf16, Keras's own fast mode: bf16 compute, fp32 weights), both by default.
The host's bf16 flags (amx_bf16, avx512_bf16) are printed first: they decide which mode is fast.
--record FILE also appends to FILE (JSON lines) a description of the run (date, host, CPU, versions,
command) and then each process's JSON with its round and label, as each finishes; put it under
Benchmarks/results/ and Scripts/bench/results_table.py turns it into Benchmarks/RESULTS.md.
Every child gets OMP_WAIT_POLICY=PASSIVE unless it is already set (TensorFlow does not use OpenMP).
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys

root = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--binary", default=os.path.join(root, ".build", "release", "crylab-engine-bench"))
parser.add_argument("--workloads", default="unet-train,small-unet-train,classifier-infer")
parser.add_argument("--torch-python", default=None)
parser.add_argument("--precisions", default="fp32", help="CryLab convolution precisions, comma-separated")
parser.add_argument("--keras-policies", default="float32,mixed_bfloat16", help="Keras dtype policies, comma-separated")
parser.add_argument("--record", metavar="FILE", help="append the run's description and every process's JSON to FILE")
args = parser.parse_args()

common = [f"--steps", str(args.steps), "--threads", str(args.threads), "--batch", str(args.batch)]


def run(command):
    # PyTorch uses OpenMP too; give it the passive wait policy CryLab's benchmark sets for itself.
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def output_of(command):
    """First line a helper command prints, or None when it cannot run."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def host_description():
    """What a later reader needs to compare figures across hosts and versions."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and model is None:
                    model = value.strip()
                if name.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for package in ["keras", "tensorflow", "tensorflow-cpu", "torch"]:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for package in ["libdnnl-dev", "libopenblas-dev"]:
        versions[package] = output_of(["dpkg-query", "-W", "-f", "${Version}", package])
    versions["swift"] = output_of(["swift", "--version"])
    commit = output_of(["git", "-C", root, "rev-parse", "HEAD"])
    if commit and output_of(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {
        "kind": "run-info", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "cpu_model": model, "cores": os.cpu_count(),
        # The flags that decide which kernels oneDNN can use (bf16 without AMX was slow here).
        "cpu_flags": sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512f"}),
        "command": [os.path.relpath(sys.argv[0], root)] + sys.argv[1:], "commit": commit, "versions": versions,
    }


def record(entry):
    if args.record:
        with open(args.record, "a") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


description = host_description()
record(description)
print(f"host {description['host']}: {description['cpu_model']}, {description['cores']} cores; "
      f"amx_bf16 {'yes' if 'amx_bf16' in description['cpu_flags'] else 'no'}, "
      f"avx512_bf16 {'yes' if 'avx512_bf16' in description['cpu_flags'] else 'no'}")
print(f"{'workload':<18} {'framework':<12} {'samples/s':>10} {'GFLOP/s':>8} {'peak GiB':>9}")
# (name, command, options after the workload)
crylabs = [("crylab" if p == "fp32" else f"crylab-{p}", [args.binary], ["--precision", p]) for p in args.precisions.split(",")]
keras_labels = {"float32": "keras", "mixed_bfloat16": "keras-bf16"}
frameworks = crylabs + [(keras_labels.get(policy, f"keras-{policy}"), [sys.executable, os.path.join(root, "Scripts/keras/bench_keras.py")],
                         ["--policy", policy]) for policy in args.keras_policies.split(",")]
if args.torch_python:
    frameworks.append(("torch", [args.torch_python, os.path.join(root, "Scripts/keras/bench_torch.py")], []))

for workload in args.workloads.split(","):
    runs = {name: [] for name, _, _ in frameworks}
    for round_index in range(args.rounds):
        for name, command, options in frameworks:
            r = run(command + [workload] + options + common)
            record({"kind": "run", "round": round_index, "label": name, **r})
            print(f"{workload:<18} {name:<12} {r['samples_per_second']:>10.2f} {r['gflops_per_second']:>8.1f} {r['peak_rss_gib']:>9.2f}",
                  flush=True)
            runs[name].append(r)
    median = {name: sorted(rs, key=lambda r: r["samples_per_second"])[len(rs) // 2] for name, rs in runs.items()}
    for mine, _, _ in crylabs:
        c = median[mine]
        for name, r in median.items():
            if not name.startswith("crylab"):
                print(f"{workload:<18} {mine}/{name:<10} speed {c['samples_per_second'] / r['samples_per_second']:.2f}x   "
                      f"peak RSS {c['peak_rss_gib'] / r['peak_rss_gib']:.2f}x   (median rounds)", flush=True)
                paired = sorted(a["samples_per_second"] / b["samples_per_second"] for a, b in zip(runs[mine], runs[name]))
                print(f"{workload:<18} {mine}/{name:<10} speed by round, sorted {', '.join(f'{x:.2f}' for x in paired)}: "
                      f"median {paired[len(paired) // 2]:.2f}x, range {paired[0]:.2f}-{paired[-1]:.2f}x", flush=True)
