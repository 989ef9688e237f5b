"""The reference pipeline `crylab features --preset seed` is measured against.

For every file: librosa.load(sr=16000, duration=5.0) and librosa.feature.melspectrogram(n_mels=128)
(n_fft 2048, hop 512, power 2), one process, one core. Prints files per second, best of --rounds.
"""
import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import librosa  # noqa: E402
import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(str(p) for p in pathlib.Path(args.folder).rglob("*.wav"))
    if not files:
        sys.exit(f"no .wav files under {args.folder}")
    # Warm-up: imports, numba compilation and the resampler's first call are not counted.
    y, sr = librosa.load(files[0], sr=16000, duration=5.0)
    librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128)
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for path in files:
            y, sr = librosa.load(path, sr=16000, duration=5.0)
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128)
            assert np.isfinite(mel).all()
        rates.append(len(files) / (time.perf_counter() - start))
    print(f"librosa {librosa.__version__}: {len(files)} files, files/s per round: "
          + ", ".join(f"{r:.0f}" for r in rates))
    print(f"librosa_files_per_second={max(rates):.1f}")


if __name__ == "__main__":
    main()
