#!/usr/bin/env python3
"""Data-parallel pretraining on one host: one process with 2 threads against `mpirun -np 2` with
one thread per rank, on the story's U-Net (Recipes/pretrain-seed.yaml, global batch 32), the
ranks summing gradients during the backward pass (with and without the progress thread) and
after it. Then the scaling of the
measured step to N hosts, on paper.

Runs `crylab pretrain --max-steps S --json` (samples/s leave out the first step) in rounds, the
the set-ups back to back in each round, and prints samples/s and the allreduce time per step
that the backward pass did not hide, by round. Python 3 standard library only.

    swift build -c release --product crylab
    python3 Scripts/bench/mpi_pretrain.py --rounds 3 --steps 6 [--record Benchmarks/results/mpi-<date>-<host>.jsonl]
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]


def host_flags():
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    model = re.search(r"model name\s*:\s*(.*)", text)
    return {"cpu": model.group(1).strip() if model else platform.processor(),
            "cores": os.cpu_count(),
            "amx_bf16": " amx_bf16" in text, "avx512_bf16": " avx512_bf16" in text}


def load_average():
    return round(os.getloadavg()[0], 2)


def run_pretrain(crylab, recipe, store, output, steps, ranks, threads, extra):
    command = [crylab, "pretrain", "--recipe", recipe, "--data", store, "--max-steps", str(steps),
               "--threads", str(threads), "--quiet", "--json", "-o", output] + extra
    if ranks > 1:
        command = LAUNCHER + ["-np", str(ranks), "--bind-to", "none"] + command
    before = load_average()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
    summary = json.loads(done.stdout)
    return {"command": " ".join(command), "samplesPerSecond": summary["samplesPerSecond"],
            "firstStepSeconds": summary.get("firstStepSeconds"), "allreduce": summary.get("allreduce"),
            "loadBefore": before, "loadAfter": load_average()}


def ring_allreduce_seconds(nbytes, hosts, gigabits, latency):
    """Ring allreduce: 2 (N - 1) steps, each moving nbytes / N per host, plus a latency per step."""
    if hosts < 2:
        return 0.0
    return 2 * (hosts - 1) / hosts * nbytes / (gigabits * 1e9 / 8) + 2 * (hosts - 1) * latency


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crylab", default=os.path.join(ROOT, ".build/release/crylab"))
    parser.add_argument("--recipe", default=os.path.join(ROOT, "Recipes/pretrain-seed.yaml"))
    parser.add_argument("--audio", default=os.path.join(ROOT, "../shared/data/donateacry/labeled"),
                        help="audio for the feature store when --store does not exist")
    parser.add_argument("--store", default=os.path.join(ROOT, "Checkpoints/bench-seed.h5"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--record", help="append the runs as JSON lines to this file")
    args = parser.parse_args()

    if not os.path.exists(args.store):
        print(f"making {args.store} from {args.audio} (the seed front end)", file=sys.stderr)
        subprocess.run([args.crylab, "features", args.audio, "--unlabeled", "--preset", "seed", "--quiet",
                        "-o", args.store], check=True)
    flags = host_flags()
    print(f"host: {platform.node()}, {flags.get('cpu')}, {flags.get('cores')} cores, "
          f"amx_bf16 {'yes' if flags.get('amx_bf16') else 'no'}, avx512_bf16 {'yes' if flags.get('avx512_bf16') else 'no'}")
    setups = [("1 process, 2 threads", 1, 2, []),
              ("2 ranks x 1 thread, overlap", 2, 1, []),
              ("2 ranks, overlap, no progress thread", 2, 1, ["--progress-us", "0"]),
              ("2 ranks x 1 thread, no overlap", 2, 1, ["--no-overlap"])]
    output = os.path.join(ROOT, "Checkpoints/bench-mpi")
    results = {name: [] for name, *_ in setups}
    records = []
    for round_ in range(1, args.rounds + 1):
        for name, ranks, threads, extra in setups:
            result = run_pretrain(args.crylab, args.recipe, args.store, output, args.steps, ranks, threads, extra)
            result.update(setup=name, round=round_)
            results[name].append(result)
            records.append(result)
            exposed = result["allreduce"]["exposedSecondsPerStep"] * 1000 if result["allreduce"] else None
            print(f"round {round_}: {name:32s} {result['samplesPerSecond']:6.2f} samples/s"
                  + (f", allreduce not hidden {exposed:6.1f} ms/step" if exposed is not None else "")
                  + f" (load {result['loadBefore']}-{result['loadAfter']})", flush=True)

    print("\n| set-up | samples/s, median (range) | vs 1 process, by round | allreduce not hidden, ms/step |")
    print("|---|---|---|---|")
    base = [r["samplesPerSecond"] for r in results[setups[0][0]]]
    for name, *_ in setups:
        rates = [r["samplesPerSecond"] for r in results[name]]
        ratios = [rate / b for rate, b in zip(rates, base)]
        exposed = [r["allreduce"]["exposedSecondsPerStep"] * 1000 for r in results[name] if r["allreduce"]]
        print(f"| {name} | {statistics.median(rates):.2f} ({min(rates):.2f}-{max(rates):.2f}) "
              f"| {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) "
              f"| {f'{statistics.median(exposed):.1f} ({min(exposed):.1f}-{max(exposed):.1f})' if exposed else '-'} |")

    allreduce = results[setups[1][0]][0]["allreduce"]
    nbytes = allreduce["gradientBytes"]
    # The allreduce alone, with nothing else running on the ranks: what communication costs
    # here, apart from the ranks waiting for each other.
    check = subprocess.run(LAUNCHER + ["-np", "2", args.crylab, "mpi-check", "--megabytes", f"{nbytes / 1048576:.2f}"],
                           capture_output=True, text=True)
    alone = re.search(r"allreduce of ([0-9.]+) MB: median ([0-9.]+) ms", check.stdout)
    alone_ms = float(alone.group(2)) if alone else None
    if alone_ms is not None:
        print(f"\nThe gradients' allreduce alone, one buffer (`mpirun -np 2 crylab mpi-check --megabytes {nbytes / 1048576:.2f}`): "
              f"median {alone_ms:.1f} ms. The time not hidden in training also holds any wait for the slower rank.")
    step = 32 / statistics.median(base)  # one host's step at batch 32, both cores
    backward = 2 / 3 * step  # the backward pass is about two thirds of a training step
    print(f"\nScaling on paper: {nbytes / 1e6:.1f} MB of fp32 gradients per step ({allreduce['buckets']} buckets), "
          f"a step of {step:.2f} s for 32 clips on this host (both cores).")
    print("Each host keeps a batch of 32 (the global batch grows with N); ring allreduce 2(N-1)/N x bytes / bandwidth "
          "+ 2(N-1) x latency (25 us per hop at 10 Gb/s TCP, 5 us at 100 Gb/s); efficiency = step / (step + allreduce) "
          "without overlap, step / (step + max(0, allreduce - backward)) with it, backward taken as 2/3 of the step.")
    estimates = []
    for speedup in (1, 20):
        host_step = step / speedup
        host_backward = backward / speedup
        print(f"\nA step of {host_step:.3f} s per host ("
              + ("this host" if speedup == 1 else f"a host {speedup}x faster than this one, such as a many-core server") + "):\n")
        print("| hosts | allreduce at 10 Gb/s | efficiency, no overlap / overlap | allreduce at 100 Gb/s | efficiency, no overlap / overlap |")
        print("|---|---|---|---|---|")
        for hosts in (2, 4, 8, 16, 64):
            row = {"hosts": hosts, "stepSeconds": host_step}
            cells = []
            for gigabits, latency in ((10, 25e-6), (100, 5e-6)):
                seconds = ring_allreduce_seconds(nbytes, hosts, gigabits, latency)
                plain = host_step / (host_step + seconds)
                hidden = host_step / (host_step + max(0.0, seconds - host_backward))
                row[f"{gigabits}Gbps"] = {"allreduceSeconds": seconds, "efficiency": plain, "efficiencyWithOverlap": hidden}
                cells += [f"{seconds * 1000:.0f} ms", f"{plain:.0%} / {hidden:.0%}"]
            estimates.append(row)
            print(f"| {hosts} | " + " | ".join(cells) + " |")

    if args.record:
        head = {"kind": "run", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "host": platform.node(), **flags, "script": "Scripts/bench/mpi_pretrain.py",
                "openmpi": subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
                "arguments": sys.argv[1:], "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"],
                                                                    capture_output=True, text=True).stdout.strip()}
        with open(args.record, "a") as f:
            f.write(json.dumps(head) + "\n")
            for record in records:
                f.write(json.dumps({"kind": "result", **record}) + "\n")
            f.write(json.dumps({"kind": "scaling", "gradientBytes": nbytes, "stepSeconds": step, "allreduceAloneMs": alone_ms,
                                "estimates": estimates}) + "\n")


if __name__ == "__main__":
    main()
