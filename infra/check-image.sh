#!/usr/bin/env bash
# Build infra/Dockerfile and run PLADA inside the image, on a machine without a Docker engine.
#
#   sudo bash infra/check-image.sh cuda     # or: cpu
#
# Uses buildah (rootful, chroot isolation, vfs storage: no daemon, no overlay mounts), installed from Debian if
# missing. The base image is python:3.11-slim pulled from Docker Hub when that works; otherwise a stand-in is made
# with debootstrap: Debian bookworm (the release python:3.11-slim is built on) with its python3.11, venv and pip, and
# `python` on the PATH as in the real image. The stand-in differs in provenance only (Debian's CPython build
# instead of python.org's under /usr/local); every Dockerfile step runs unchanged against it.
#
# pip inside the build sees the host's pip configuration, local wheel folders and CA certificates (mounted
# read-only), so a machine with a local package mirror builds without the public index.
#
# Then, in a container of the image: `plada --help`, the Kubernetes and Dask worker plugins import, and one
# `plada run` end to end on the packaged digits data (temporary Prefect server, shard scoring, students).
set -euo pipefail

target=${1:-cuda}
[[ "$target" == cpu || "$target" == cuda ]] || { echo "usage: $0 cpu|cuda (got '$target')" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: run as root (buildah here is rootful: chroot isolation, vfs storage)" >&2; exit 2; }
cd "$(dirname "$0")/.."
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
base=docker.io/library/python:3.11-slim
work=${PLADA_IMAGE_WORK:-/tmp/plada-image}

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap >/dev/null
fi

if ! buildah images --format '{{.Name}}:{{.Tag}}' | grep -qx "$base"; then
  if buildah pull -q "$base" >/dev/null 2>&1; then
    echo "base: $base from Docker Hub"
  else
    echo "base: Docker Hub unreachable; building a Debian bookworm stand-in for $base"
    rm -rf "$work/rootfs" && mkdir -p "$work"
    # debootstrap does not resolve --include's dependencies fully: python3-pip brings what venv needs (distutils)
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-pip,ca-certificates \
      bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
      || { echo "debootstrap failed: see $work/debootstrap.log and $work/rootfs/debootstrap/debootstrap.log" >&2; exit 1; }
    ln -sf /usr/bin/python3.11 "$work/rootfs/usr/local/bin/python"
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb
    container=$(buildah from scratch)
    cp -a "$work/rootfs/." "$(buildah mount "$container")/"
    buildah config --env PATH=/usr/local/bin:/usr/bin:/bin --cmd python "$container"
    buildah commit -q --rm "$container" "$base" >/dev/null
  fi
fi

mounts=()
for path in /etc/pip.conf /etc/xdg/pip /opt/wheels /opt/pypi /opt/pypi-more /etc/ssl/certs; do
  [[ -e "$path" ]] && mounts+=(-v "$path:$path:ro")
done
start=$(date +%s)
buildah bud --isolation chroot --network host --pull=never --layers=false "${mounts[@]}" \
  -f infra/Dockerfile --build-arg TARGET="$target" -t "plada-worker:$target" .
echo "built plada-worker:$target in $(( $(date +%s) - start )) s"

container=$(buildah from -q --pull=never "plada-worker:$target")
trap 'buildah rm "$container" >/dev/null' EXIT
buildah run --isolation chroot --network host "$container" -- sh -euc '
  cd /tmp
  plada --help >/dev/null && echo "plada --help: ok"
  python -c "import torch, prefect_kubernetes, prefect_dask; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda)"
  plada run --reference mnist5k --reference animal-mnist --target-train sklearn-digits:train \
    --target-test sklearn-digits:test --keep 0.1 --image-size 8 --crop content --out /tmp/digits 2>/dev/null \
    | python -c "import json, sys; m = json.load(sys.stdin); print({k: m[k] for k in (\"teacher_acc\", \"student_acc\", \"random_acc\", \"payload_bytes\")})"
'
