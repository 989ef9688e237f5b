"""What a benchmark record says of the run: the host, its bf16 flags, versions, command and
commit. Shared by Scripts/keras/bench_side_by_side.py and Scripts/bench/convergence.py."""
import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys


def output_of(command):
    """First line a helper command prints, or None when it cannot run."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def host_description(root):
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
