"""What the Keras and PyTorch reference benchmarks share: their command line, and timing a
step function and printing the result as one JSON line with the fields of the Swift benchmark
(Benchmarks/engine/main.swift). Imported from the script's own folder by both."""
import argparse
import json
import resource
import time

WORKLOADS = ["unet-train", "small-unet-train", "classifier-infer"]


def parse_arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--policy", default="float32",
                        help="Keras dtype policy: float32, or mixed_bfloat16 (bf16 compute, fp32 weights)")
    return parser.parse_args()


def time_and_report(framework, args, step, flops):
    """Runs `step` once to warm up, then `args.steps` times; prints the median as JSON.
    `flops` is the work of one step (multiply-adds x2)."""
    step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(json.dumps({
        "framework": framework, "policy": args.policy, "workload": args.workload, "batch": args.batch, "threads": args.threads,
        "steps": args.steps, "seconds_per_step_median": median, "samples_per_second": args.batch / median,
        "gflops_per_second": flops / median / 1e9, "gflop_per_step": flops / 1e9,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024,
    }, sort_keys=True))
