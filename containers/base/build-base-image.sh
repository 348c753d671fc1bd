#!/usr/bin/env bash
# Build a minimal Debian base image without a registry: debootstrap into a scratch folder,
# then `docker import` it. CI and offline machines build the CPU trainer image from it.
#
#   containers/base/build-base-image.sh [TAG]      (default dpo-base:bookworm)
#
# Does nothing when TAG already exists (delete it with `docker rmi` to rebuild). Needs root,
# debootstrap and a running Docker daemon. DEBIAN_MIRROR overrides the mirror (default: the
# one this machine's apt uses, else deb.debian.org). The scratch folder lives outside the
# repository, so it is never in git or in a build context, and is removed afterwards.
set -euo pipefail

TAG="${1:-dpo-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists: reusing it"
    exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | head -n1 | awk '{print $2}')" || true
fi
mirror="${mirror:-http://deb.debian.org/debian}"

command -v debootstrap >/dev/null || {
    echo "debootstrap is missing: apt-get install -y debootstrap" >&2
    exit 1
}
scratch="$(mktemp -d "${TMPDIR:-/tmp}/dpo-base-rootfs.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "debootstrap --variant=minbase $SUITE from $mirror ..."
debootstrap --variant=minbase "$SUITE" "$scratch/rootfs" "$mirror" >"$scratch/debootstrap.log" 2>&1 || {
    tail -n 30 "$scratch/debootstrap.log" >&2
    exit 1
}
rm -rf "$scratch"/rootfs/var/cache/apt/archives/*.deb "$scratch"/rootfs/var/lib/apt/lists/*
tar -C "$scratch/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE $mirror" - "$TAG"
echo "built base image $TAG"
