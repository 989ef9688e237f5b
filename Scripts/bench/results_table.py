#!/usr/bin/env python3
"""Regenerates the recorded-runs part of Benchmarks/RESULTS.md from benchmark JSON.

    python3 Scripts/bench/results_table.py [RECORD.jsonl ...]   # default: Benchmarks/results/*.jsonl
    python3 Scripts/bench/results_table.py --check              # exit 1 if RESULTS.md is out of date

A record is what `Scripts/keras/bench_side_by_side.py --record FILE` appends to FILE: a JSON line
describing the run (kind "run-info": date, host, CPU model and flags, versions, command, commit),
then one line per benchmark process (kind "run"), the JSON that crylab-engine-bench, bench_keras.py
or bench_torch.py printed, with its round and label added. A file may hold several records. For
each host and workload the newest record that has the workload wins. Only the text between the two marker lines of RESULTS.md is
replaced; everything else in the file is kept as written. Python 3 standard library only.
"""
import argparse
import glob
import json
import os
import statistics
import sys

root = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
results_path = os.path.join(root, "Benchmarks", "RESULTS.md")
BEGIN = "<!-- results_table.py: generated from Benchmarks/results/*.jsonl, begin -->"
END = "<!-- results_table.py: end -->"
REFERENCES = ["keras", "keras-bf16", "torch"]


def read_records(path):
    """[(description, runs)] of a record file: a run-info line starts a record, and the runs after it
    belong to it, so that several runs can be appended to one file. Lines that are not JSON objects
    are skipped."""
    records = []
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                sys.exit(f"{path}:{number}: not JSON ({error}); a record holds one JSON object per line")
            if entry.get("kind") == "run-info":
                records.append((entry, []))
            elif entry.get("kind") in ("run", "convergence"):
                if not records:
                    sys.exit(f"{path}:{number}: a run before any run-info line; records come from bench_side_by_side.py --record")
                records[-1][1].append(entry)
    if not records:
        sys.exit(f"{path}: no run-info line; records come from bench_side_by_side.py --record")
    return records


def host_key(info):
    return (info.get("host") or "unknown host", info.get("cpu_model") or "unknown CPU")


def spread(values, digits):
    """'median (min-max)' of a list of numbers."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def round_ratios(runs, label, reference):
    """CryLab/reference speed per round, for rounds where both ran (they ran back to back)."""
    speed = {}
    for run in runs:
        speed.setdefault(run["label"], {})[run["round"]] = run["samples_per_second"]
    mine, theirs = speed.get(label, {}), speed.get(reference, {})
    return [mine[r] / theirs[r] for r in sorted(mine) if r in theirs]


def describe(info):
    flags = info.get("cpu_flags") or []
    amx = "yes" if "amx_bf16" in flags else "no"
    bf16 = "yes" if "avx512_bf16" in flags else "no"
    versions = ", ".join(f"{name} {version}" for name, version in sorted((info.get("versions") or {}).items()) if version)
    command = " ".join(info.get("command") or [])
    return (f"{info.get('date', 'undated')}: `{command}`, commit {info.get('commit') or 'unknown'}; "
            f"{info.get('cores', '?')} cores, avx512_bf16 {bf16}, amx_bf16 {amx}; {versions}")


def render(records):
    """The markdown between the markers: per host, the newest figures of every workload."""
    if not records:
        return ("No run has been recorded yet. Record one with `bench_side_by_side.py --record "
                "Benchmarks/results/<date>-<host>.jsonl` (see the top of this file).\n")
    newest = {}  # (host, workload) -> (info, runs of that workload)
    convergence = {}  # host -> (info, convergence entries of the newest record that has them)
    for info, entries in records:
        checks = [entry for entry in entries if entry["kind"] == "convergence"]
        if checks and (host_key(info) not in convergence or info.get("date", "") > convergence[host_key(info)][0].get("date", "")):
            convergence[host_key(info)] = (info, checks)
        runs = [entry for entry in entries if entry["kind"] == "run"]
        for workload in sorted({run["workload"] for run in runs}):
            key = (host_key(info), workload)
            if key not in newest or info.get("date", "") > newest[key][0].get("date", ""):
                newest[key] = (info, [run for run in runs if run["workload"] == workload])
    out = []
    for host in sorted({host for host, _ in newest} | set(convergence)):
        out.append(f"### {host[0]}: {host[1]}\n")
        used = []
        rows = []
        for (key, workload), (info, runs) in sorted(newest.items()):
            if key != host:
                continue
            if info not in used:
                used.append(info)
            run_number = used.index(info) + 1
            labels = sorted({run["label"] for run in runs}, key=lambda l: (l in REFERENCES, l))
            for label in labels:
                mine = [run for run in runs if run["label"] == label]
                ratios = []
                for reference in REFERENCES:
                    if label not in REFERENCES and any(run["label"] == reference for run in runs):
                        by_round = round_ratios(runs, label, reference)
                        if by_round:
                            ratios.append(f"{spread(by_round, 2)}x vs {reference}")
                rows.append(f"| {workload} | {label} | {spread([r['samples_per_second'] for r in mine], 2)} | "
                            f"{spread([r['peak_rss_gib'] for r in mine], 2)} | {'; '.join(ratios) or '-'} | {run_number} |")
        if rows:
            out.append("| workload | framework | samples/s, median (range) over rounds | peak GiB | speed by round, median (range) | run |")
            out.append("|---|---|---|---|---|---|")
            out.extend(rows)
            out.append("")
        if host in convergence:
            info, checks = convergence[host]
            if info not in used:
                used.append(info)
            first = checks[0]
            out.append(f"Convergence (run {used.index(info) + 1}): `{first['recipe']}`, {first['epochs']} epochs from the recipe's "
                       f"seed; final losses against fp32's, tolerance {first['tolerance']:.0%}.\n")
            out.append("| precision | train loss | vs fp32 | validation loss | vs fp32 | within tolerance |")
            out.append("|---|---|---|---|---|---|")
            for check in checks:
                def gap(value):
                    return "-" if value is None else f"{value:.2%}"
                def loss(value):
                    return "-" if value is None else f"{value:.5f}"
                within = "reference" if check["precision"] == "fp32" else ("yes" if check["within_tolerance"] else "no")
                out.append(f"| {check['precision']} | {loss(check['train_loss'])} | {gap(check['train_gap_to_fp32'])} | "
                           f"{loss(check['validation_loss'])} | {gap(check['validation_gap_to_fp32'])} | {within} |")
            out.append("")
        for number, info in enumerate(used, 1):
            out.append(f"{number}. {describe(info)}")
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", help="record files (default: Benchmarks/results/*.jsonl)")
    parser.add_argument("--check", action="store_true", help="only check that RESULTS.md is up to date")
    args = parser.parse_args()
    paths = args.records or sorted(glob.glob(os.path.join(root, "Benchmarks", "results", "*.jsonl")))
    records = [record for path in paths for record in read_records(path)]
    generated = render(records)
    with open(results_path) as f:
        text = f.read()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        sys.exit(f"{results_path}: needs one line '{BEGIN}' and, after it, one line '{END}'")
    before, rest = text.split(BEGIN)
    after = rest.split(END)[1]
    updated = f"{before}{BEGIN}\n{generated}{END}{after}"
    if args.check:
        if updated != text:
            sys.exit(f"{results_path} is out of date: run python3 Scripts/bench/results_table.py")
        return
    with open(results_path, "w") as f:
        f.write(updated)
    print(f"wrote {os.path.relpath(results_path)} from {len(records)} record(s) in {len(paths)} file(s)")


if __name__ == "__main__":
    main()
