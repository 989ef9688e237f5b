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
CryLab's fast mode keeps its choices in a new file per run of this script (--fast-mode-choices FILE to
keep them elsewhere): the first round's fast process times its kernels and its whole step in its
warm-up, and the later rounds reuse those choices, as a user's later runs on the machine do.
--convergence-epochs N then pretrains Recipes/pretrain.yaml N epochs in every listed precision and
prints each one's final losses against fp32's, within a stated tolerance or not (recorded too).
--record FILE also appends to FILE (JSON lines) a description of the run (date, host, CPU, versions,
command) and then each process's JSON with its round and label, as each finishes; put it under
Benchmarks/results/ and Scripts/bench/results_table.py turns it into Benchmarks/RESULTS.md.
Every child gets OMP_WAIT_POLICY=PASSIVE unless it is already set (TensorFlow does not use OpenMP).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from records import host_description  # noqa: E402

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
parser.add_argument("--fast-mode-choices", metavar="FILE",
                    help="where CryLab's fast mode keeps its choices (default: a new file for this run, so the first fast "
                         "process times its kernels and whole step and the later rounds reuse the choices, as a user's "
                         "later runs do)")
parser.add_argument("--convergence-epochs", type=int, default=0, metavar="N",
                    help="after the speed rounds, pretrain the committed recipe N epochs in each CryLab precision and "
                         "state how far each ends from fp32's losses (Scripts/bench/convergence.py); 0 skips it")
args = parser.parse_args()

common = [f"--steps", str(args.steps), "--threads", str(args.threads), "--batch", str(args.batch)]
fast_mode_choices = args.fast_mode_choices or os.path.join(tempfile.mkdtemp(prefix="crylab-bench-"), "fast-mode-choices.json")


def run(command):
    # PyTorch uses OpenMP too; give it the passive wait policy CryLab's benchmark sets for itself.
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def record(entry):
    if args.record:
        with open(args.record, "a") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


description = host_description(root)
record(description)
print(f"host {description['host']}: {description['cpu_model']}, {description['cores']} cores; "
      f"amx_bf16 {'yes' if 'amx_bf16' in description['cpu_flags'] else 'no'}, "
      f"avx512_bf16 {'yes' if 'avx512_bf16' in description['cpu_flags'] else 'no'}")
print(f"{'workload':<18} {'framework':<12} {'samples/s':>10} {'GFLOP/s':>8} {'peak GiB':>9}")
# (name, command, options after the workload)
crylabs = [("crylab" if p == "fp32" else f"crylab-{p}", [args.binary], ["--precision", p, "--fast-mode-choices", fast_mode_choices])
           for p in args.precisions.split(",")]
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

if args.convergence_epochs > 0:
    # Speed is only half the claim: the faster precisions must also train to where fp32 does.
    command = [sys.executable, os.path.join(root, "Scripts", "bench", "convergence.py"), "--epochs", str(args.convergence_epochs),
               "--precisions", args.precisions, "--threads", str(args.threads),
               "--binary", os.path.join(os.path.dirname(args.binary), "crylab")]
    if args.record:
        command += ["--record", args.record, "--in-record"]
    subprocess.run(command, check=True)
