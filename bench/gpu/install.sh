#!/usr/bin/env bash
# Installs staged parts (bench/gpu/stage.py) into TARGET, offline, beside the running
# Python's own packages (never over them: TARGET goes first on PYTHONPATH only for what the
# machine lacks, and no torch or numpy is staged):
#   PY=python3 bench/gpu/install.sh TARGET PART...
# Each part may come in its own call: TARGET (ignored by git) stays while the machine is warm.
# Triton's python stubs ignore PYTHONPATH and read that Python's site-packages, so a .pth
# file there names TARGET and the repository's code; it comes after the machine's own
# packages, so the stubs load the machine's torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
target=$(realpath -m "$1")
shift
mkdir -p "$target"
site=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
printf '%s\n' "$target" "$PWD" "$PWD/models" > "$site/genmedia-gpu-run.pth"
for part in "$@"; do
  shopt -s nullglob
  wheels=("$part"/*.whl)
  shopt -u nullglob
  if [ ${#wheels[@]} -gt 0 ]; then
    "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
      --target "$target" "${wheels[@]}"
  fi
  if [ -e "$part/triton.tar.xz" ]; then
    tar -xJf "$part/triton.tar.xz" -C "$target"
  fi
  echo "installed $part into $target (${#wheels[@]} wheels)"
done
