#!/usr/bin/env bash
# A Debian base image for docker/Dockerfile on a machine that reaches Debian's package mirror but
# no container registry (no docker.io, so no python:3.11-slim-bookworm): debootstrap a minimal
# bookworm with Python 3.11, venv and pip, then `podman import` (or `docker import`) it.
#   sudo ./scripts/container-base.sh                      # -> localhost/tunesmith-base:bookworm
#   sudo ./scripts/container-base.sh my/base:tag          # another image name
#   podman build -f docker/Dockerfile --build-arg BASE_IMAGE=localhost/tunesmith-base:bookworm .
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), ENGINE (podman, else docker),
# ROOTFS (a scratch folder; default: a new temporary one, removed afterwards).
# Needs root (debootstrap chroots) and the debootstrap package (apt-get install -y debootstrap).
set -euo pipefail
image=${1:-localhost/tunesmith-base:bookworm}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
engine=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
if [ "$(id -u)" != 0 ]; then
  echo "container-base.sh: run it as root (debootstrap needs to chroot)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "container-base.sh: apt-get install -y debootstrap" >&2; exit 1; }
rootfs=${ROOTFS:-}
if [ -z "$rootfs" ]; then
  rootfs=$(mktemp -d /var/tmp/tunesmith-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
fi
start=$(date +%s)
# minbase: essential packages and apt only. python3 (3.11 on bookworm, the Python constraints.txt
# was locked for), venv and pip for scripts/setup-env.sh; ca-certificates for pip's HTTPS.
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$suite" "$rootfs" "$mirror"
# The image's own apt sources (the same mirror, plus security updates), and no caches in the image.
cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/* "$rootfs"/var/log/*.log
# `import` makes a one-layer image of the tree; LANG and a shell, as the python image has them.
tar --numeric-owner -C "$rootfs" -c . | "$engine" import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$image"
echo "container-base.sh: $image in $(( $(date +%s) - start )) s"
