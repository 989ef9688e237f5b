#!/usr/bin/env python3
"""Does a faster precision train to the same place? Pretrains the committed recipe from the same
seed in each precision (fp32 first, as the reference) and prints each run's final training and
validation losses, how far they end from fp32's, and whether that is within the tolerance.

Runs `crylab pretrain --recipe R --data STORE --epochs N --precision P --json --quiet` into
Checkpoints/convergence/<recipe>-<precision> (replaced each run). Without --data it makes the
recipe's usual store from the Donate-a-Cry raw uploads first (Checkpoints/raw.h5, kept for
later runs). Python 3 standard library only.

    swift build -c release --product crylab
    python3 Scripts/bench/convergence.py [--recipe Recipes/pretrain.yaml] [--epochs 4] \
        [--precisions fp32,bf16,fast] [--tolerance 0.02] [--record Benchmarks/results/<date>-<host>.jsonl]

The tolerance is relative, on the final epoch's losses. What it is measured against: changing
the recipe's seed alone moved its validation loss by 11 % (docs/performance-notes.md), so a
precision that ends within 2 % of fp32's from the same seed follows fp32 far more closely than
two fp32 runs of different seeds follow each other. The exit status is 0 either way; the verdict
is printed and recorded.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys

from records import host_description

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="Recipes/pretrain.yaml")
    parser.add_argument("--data", help="feature store (default: Checkpoints/raw.h5, made if missing)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--precisions", default="fp32,bf16,fast")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative, on the final losses")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "crylab"))
    parser.add_argument("--record", metavar="FILE", help="append a description of the run and each precision's figures (JSON lines) to FILE")
    parser.add_argument("--in-record", action="store_true",
                        help="the caller has started the record in FILE (bench_side_by_side.py): append the figures only")
    args = parser.parse_args()
    if args.record and not args.in_record:
        with open(args.record, "a") as out:
            out.write(json.dumps(host_description(ROOT), sort_keys=True) + "\n")

    precisions = args.precisions.split(",")
    if precisions[0] != "fp32":
        precisions = ["fp32"] + [p for p in precisions if p != "fp32"]
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} is missing: run `swift build -c release --product crylab` first")
    data = args.data or make_store(args.binary)
    recipe_name = os.path.splitext(os.path.basename(args.recipe))[0]

    runs = {}
    for precision in precisions:
        output = os.path.join(ROOT, "Checkpoints", "convergence", f"{recipe_name}-{precision}")
        shutil.rmtree(output, ignore_errors=True)
        command = [args.binary, "pretrain", "--recipe", args.recipe, "--data", data, "--epochs", str(args.epochs),
                   "--precision", precision, "--output", output, "--json", "--quiet"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        print(f"{precision}: {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in command)}", flush=True)
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{precision} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        runs[precision] = json.loads(result.stdout[result.stdout.index("{"):])  # the summary, pretty-printed

    reference = runs["fp32"]
    print(f"\n{args.recipe}, {args.epochs} epochs, seed of the recipe; tolerance {args.tolerance:.1%} of fp32's final losses")
    print(f"{'precision':<10} {'train loss':>11} {'vs fp32':>8} {'validation':>11} {'vs fp32':>8} {'samples/s':>10}  within?")
    for precision, run in runs.items():
        train, validation = run.get("trainLoss"), run.get("validationLoss")
        train_gap = relative(train, reference.get("trainLoss"))
        validation_gap = relative(validation, reference.get("validationLoss"))
        gaps = [g for g in (train_gap, validation_gap) if g is not None]
        within = all(g <= args.tolerance for g in gaps)
        print(f"{precision:<10} {fmt(train):>11} {pct(train_gap):>8} {fmt(validation):>11} {pct(validation_gap):>8} "
              f"{run.get('samplesPerSecond', 0):>10.1f}  {'yes' if within or precision == 'fp32' else 'NO'}")
        if args.record:
            with open(args.record, "a") as out:
                out.write(json.dumps({
                    "kind": "convergence", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "recipe": args.recipe, "epochs": args.epochs, "precision": precision,
                    "train_loss": train, "validation_loss": validation,
                    "train_gap_to_fp32": train_gap, "validation_gap_to_fp32": validation_gap,
                    "tolerance": args.tolerance, "within_tolerance": within,
                    "samples_per_second": run.get("samplesPerSecond"),
                }, sort_keys=True) + "\n")


def make_store(binary):
    store = os.path.join(ROOT, "Checkpoints", "raw.h5")
    if os.path.exists(store):
        return store
    corpus = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "donateacry"))
    if not os.path.isdir(corpus):
        sys.exit(f"no --data given and {corpus} is missing: pass --data with a feature store made by `crylab features`")
    print(f"making {os.path.relpath(store, ROOT)} from {corpus}/raw-ios and raw-android", flush=True)
    subprocess.run([binary, "features", os.path.join(corpus, "raw-ios"), os.path.join(corpus, "raw-android"),
                    "--unlabeled", "-o", store], cwd=ROOT, check=True)
    return store


def relative(value, reference):
    if value is None or reference is None or reference == 0:
        return None
    return abs(value - reference) / abs(reference)


def fmt(value):
    return "-" if value is None else f"{value:.5f}"


def pct(value):
    return "-" if value is None else f"{value:.2%}"


if __name__ == "__main__":
    main()
