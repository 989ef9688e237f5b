#!/usr/bin/env bash
# Installs every Debian package CryLab needs. Safe to run any number of times: it installs only
# what is missing, and does nothing (quickly) when everything is present.
set -euo pipefail

packages=(
  pkg-config
  libopenblas-dev   # GEMM for dense layers and the reference convolution path
  libdnnl-dev       # oneDNN convolutions
  libfftw3-dev      # single-precision FFT for the STFT
  libhdf5-dev       # feature stores and checkpoints
  libsndfile1-dev   # WAV, FLAC, OGG, AIFF decoding
  libsoxr-dev       # resampling (soxr_hq, as librosa)
  libopenmpi-dev    # MPI: folds of `crylab finetune` on several processes or hosts
  openmpi-bin       # mpirun, to launch them (and the tests that run it)
  ffmpeg            # phone formats: 3GP/AMR, CAF/MP4 with IMA4, mp3, m4a
  chromium          # headless rendering check of the HTML reports (Scripts/report/check_report.py)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} Debian packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "setup: need root to install: ${missing[*]} (run as root or install sudo)" >&2
    exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
echo "setup: done"
