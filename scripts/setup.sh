#!/usr/bin/env bash
# Create the virtual environment and install PLADA with everything its demo and tests need.
set -euo pipefail
venv="${1:-.venv}"
python3 -m venv "$venv"
# torch/torchvision first and pinned: the 2.14.1 pair installs offline on our machines; an unpinned
# dependency would otherwise pull a newer CUDA build or fail against the machine's cap.
"$venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1
"$venv/bin/pip" install --quiet -e '.[dev]'
# animal-mnist declares tensorflow for optional helpers we do not use: install without dependencies.
"$venv/bin/pip" install --quiet --no-deps animal-mnist==0.4
# Fashion-MNIST ships as a Debian package; optional (the demo and tests work without it, and say so).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
    || echo "note: could not install dataset-fashion-mnist; continuing without Fashion-MNIST"
fi
echo "PLADA is installed in $venv: $venv/bin/plada --help"
