#!/usr/bin/env bash
# Benchmark: `crylab features --preset seed` against the equivalent librosa pipeline
# (librosa.load(sr=16000, duration=5.0) + melspectrogram(n_mels=128)) on the same files, side by
# side in one run. Reports files per second for each and the ratios.
#   usage: Scripts/bench/features.sh [FOLDER] [ROUNDS]   (default: ../shared/data/donateacry/labeled, 3)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
folder="${1:-$root/../shared/data/donateacry/labeled}"
rounds="${2:-3}"
[ -d "$folder" ] || { echo "no folder $folder: pass a folder of .wav files" >&2; exit 1; }
cd "$root"
swift build -c release --product crylab >&2
crylab="$root/.build/release/crylab"
python="$("$root/Scripts/python-env.sh" librosa)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

best() {  # best files/s of $rounds runs of crylab with $1 threads
  local best=0
  for _ in $(seq "$rounds"); do
    local rate
    rate=$("$crylab" features "$folder" --preset seed --threads "$1" --quiet -o "$out/f.h5" \
           | sed -n 's/.*(\([0-9.]*\) files\/s).*/\1/p')
    best=$(python3 -c "print(max($best, $rate))")
  done
  echo "$best"
}

librosa_rate=$("$python" "$root/Scripts/bench/librosa_features.py" "$folder" --rounds "$rounds" | sed -n 's/librosa_files_per_second=//p')
one=$(best 1)
all=$(best "$(nproc)")
python3 - "$librosa_rate" "$one" "$all" "$(nproc)" <<'PY'
import sys
librosa, one, allc, cores = map(float, sys.argv[1:])
print(f"librosa (1 core)        {librosa:8.0f} files/s")
print(f"crylab  (1 thread)      {one:8.0f} files/s  {one / librosa:5.1f}x librosa")
print(f"crylab  ({int(cores)} threads)      {allc:8.0f} files/s  {allc / librosa:5.1f}x librosa")
PY
