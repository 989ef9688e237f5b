#!/usr/bin/env bash
# Compares oneDNN versions on the story U-Net's 3x3 convolution passes (see README.md here).
#
#   Benchmarks/onednn-versions/run.sh [ROUNDS] [RUNS]        (defaults: 4 rounds, 5 runs per pass)
#
# Fetches oneDNN 3.x wheels from PyPI with pip into .build-onednn/ (ignored by git), builds
# conv_passes.c against Debian's oneDNN 2.6 (libdnnl-dev) and against each 3.x, runs the versions
# interleaved shape by shape (the order rotates), then prints ratios new/old by round.
# VERSIONS="2.6 3.2" skips 3.13 (whose wheel needs about 1 GB of SYCL/OpenCL runtime wheels).
# ARGS="-l nhwc -o f32" passes options to conv_passes (here: CryLab's own layout and bf16 types).
# PRECISIONS="bf16" times one precision only.
# Results: .build-onednn/results/<stamp>/round<R>-<version>.jsonl, and summary.txt beside them.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rounds="${1:-4}"
runs="${2:-5}"
batch="${BATCH:-32}"
read -r -a extra <<< "${ARGS:-}"
precisions="${PRECISIONS:-f32 bf16}"
versions="${VERSIONS:-2.6 3.2 3.13}"
work="$root/.build-onednn"
wheels="$work/wheels"
unpacked="$work/unpacked"
bin="$work/bin"
mkdir -p "$wheels" "$unpacked" "$bin"

if [ ! -f /usr/include/oneapi/dnnl/dnnl.h ]; then
    echo "Debian's oneDNN headers are missing: apt-get install libdnnl-dev (Scripts/setup.sh does)" >&2
    exit 1
fi
pip="$root/.venv/bin/pip"
[ -x "$pip" ] || pip="python3 -m pip"

# name==version of each wheel; the opencl adapter of intel-cmplr-lib-ur 2025.3.3 goes to a folder
# of its own (2026.2.0 ships only Level Zero adapters, and SYCL needs OpenCL to see the CPU).
wheels_32="onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"
wheels_313="onednn==2026.1.0 onednn-devel==2026.1.0 tbb==2023.2.0 intel-cmplr-lib-rt==2026.2.0
            intel-sycl-rt==2026.2.0 intel-cmplr-lib-ur==2026.2.0 intel-opencl-rt==2026.2.0 umf==1.2.0"

fetch() { # fetch DEST SPEC...: pip download (no dependencies) and unzip each wheel into $unpacked
    local dest="$1"; shift
    mkdir -p "$dest"
    for spec in "$@"; do
        local name="${spec%%==*}" version="${spec##*==}"
        local stem="${name//-/_}-$version"
        if [ ! -d "$unpacked/$stem" ]; then
            $pip download --no-deps --quiet --disable-pip-version-check "$spec" -d "$dest"
            local whl
            whl="$(ls "$dest/$stem"-*.whl | head -1)"
            mkdir -p "$unpacked/$stem.tmp"
            python3 -m zipfile -e "$whl" "$unpacked/$stem.tmp"
            mv "$unpacked/$stem.tmp" "$unpacked/$stem"
        fi
    done
}
data() { echo "$unpacked/$1/$1.data/data"; } # data STEM: a wheel's data folder

libpath_32=""; libpath_313=""; ocl_icd=""
for v in $versions; do
    case "$v" in
    2.6)
        gcc -O2 -Wall -o "$bin/conv_passes-2.6" "$here/conv_passes.c" -ldnnl ;;
    3.2)
        # shellcheck disable=SC2086
        fetch "$wheels" $wheels_32
        libpath_32="$(data onednn_cpu_gomp-2023.2.0)/lib"
        gcc -O2 -Wall -I"$(data onednn_devel_cpu_gomp-2023.2.0)/include" -o "$bin/conv_passes-3.2" \
            "$here/conv_passes.c" -L"$libpath_32" -l:libdnnl.so.3 ;;
    3.13)
        # shellcheck disable=SC2086
        fetch "$wheels" $wheels_313
        fetch "$wheels/ur-2025" intel-cmplr-lib-ur==2025.3.3
        adapter="$work/ur-opencl-adapter"
        mkdir -p "$adapter"
        cp -a "$(data intel_cmplr_lib_ur-2025.3.3)"/lib/libur_adapter_opencl.so* "$adapter/"
        libpath_313="$(data onednn-2026.1.0)/lib"
        for stem in tbb-2023.2.0 intel_cmplr_lib_rt-2026.2.0 intel_sycl_rt-2026.2.0 \
                    intel_cmplr_lib_ur-2026.2.0 intel_opencl_rt-2026.2.0 umf-1.2.0; do
            libpath_313="$libpath_313:$(data $stem)/lib"
        done
        libpath_313="$libpath_313:$adapter"
        ocl_icd="$(data intel_opencl_rt-2026.2.0)/lib/libintelocl.so"
        # The library's own dependencies (SYCL, TBB) resolve at run time through LD_LIBRARY_PATH.
        gcc -O2 -Wall -I"$(data onednn_devel-2026.1.0)/include" -o "$bin/conv_passes-3.13" \
            "$here/conv_passes.c" -L"$(data onednn-2026.1.0)/lib" -l:libdnnl.so.3 \
            -Wl,--allow-shlib-undefined ;;
    *) echo "unknown version $v (2.6, 3.2 or 3.13)" >&2; exit 2 ;;
    esac
done

run_one() { # run_one VERSION ROUND OUT ARGS...: appends to OUT.jsonl, OUT.log and OUT.err
    local v="$1" r="$2" out="$3"; shift 3
    case "$v" in
    2.6) "$bin/conv_passes-2.6" -n "$runs" -b "$batch" -t "r$r" "$@" ;;
    3.2) LD_LIBRARY_PATH="$libpath_32" "$bin/conv_passes-3.2" -n "$runs" -b "$batch" -t "r$r" "$@" ;;
    3.13) OCL_ICD_FILENAMES="$ocl_icd" LD_LIBRARY_PATH="$libpath_313" \
              "$bin/conv_passes-3.13" -n "$runs" -b "$batch" -t "r$r" "$@" ;;
    esac >> "$out.log" 2>> "$out.err"
    grep '^{' "$out.log" > "$out.jsonl"
}

export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
results="$work/results/$stamp"
mkdir -p "$results"
{
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC') $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "# $(nproc) cores; flags: $(grep -o 'avx512_bf16\|amx_bf16\|avx512_fp16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds, $runs runs per pass, versions $versions"
    echo "# precisions $precisions; options: ${ARGS:-none}"
} | tee "$results/host.txt"

# Versions take turns shape by shape (one process per version, precision and shape, order
# rotating), so that the host's load, which other builds change from minute to minute, is about
# the same for the versions compared.
read -r -a order <<< "$versions"
shape_count=14
for ((r = 1; r <= rounds; r++)); do
    echo "round $r ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
    turn=$((r - 1))
    for precision in $precisions; do
        for ((s = 0; s < shape_count; s++)); do
            for ((i = 0; i < ${#order[@]}; i++)); do
                v="${order[$(( (i + turn) % ${#order[@]} ))]}"
                run_one "$v" "$r" "$results/round$r-$v" -p "$precision" -i "$s" ${extra[@]+"${extra[@]}"}
            done
            turn=$((turn + 1))
        done
    done
done
for v in $versions; do grep -m1 '^#' "$results/round1-$v.log"; done
python3 "$here/summarise.py" "$results" | tee "$results/summary.txt"
