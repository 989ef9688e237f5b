#!/usr/bin/env bash
# Prints the path of a Python virtual environment holding the reference frameworks that the
# fixture generators and benchmarks compare CryLab with, creating it on first use.
#   CRYLAB_VENV  where it lives (default: .venv in the repository, ignored by git)
#   usage: PY=$(Scripts/python-env.sh librosa h5py)   # installs what is missing, prints python
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CRYLAB_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
missing=()
for package in "$@"; do
  module="${package%%[=<>]*}"
  case "$module" in
    tensorflow-cpu) module=tensorflow ;;
  esac
  "$venv/bin/python" -c "import ${module//-/_}" 2>/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  "$venv/bin/pip" install -q "${missing[@]}" >&2
fi
echo "$venv/bin/python"
