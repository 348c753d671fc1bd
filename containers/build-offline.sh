#!/usr/bin/env bash
# Build an image with no registry and no package index at build time: a debootstrapped Debian
# base (containers/base/build-base-image.sh, kept once built), a wheelhouse filled on this
# machine (containers/fill-wheelhouse.sh), and the image's own Dockerfile, unchanged.
#
#   containers/build-offline.sh trainer dpo-trainer:cpu      (torch from the wheelhouse: CPU)
#   containers/build-offline.sh airflow dpo-airflow:offline
#
# `make test` builds both this way. On a CPU-only machine it is also how to try the docker
# runner: DPO_DOCKER_IMAGE=dpo-trainer:cpu DPO_DOCKER_GPUS=none.
set -euo pipefail

image="${1:?usage: $0 trainer|airflow TAG}"
tag="${2:?usage: $0 trainer|airflow TAG}"
base="${DPO_BASE_IMAGE:-dpo-base:bookworm}"
cd "$(dirname "$0")/.."
[[ -f "containers/$image/Dockerfile" ]] || { echo "no containers/$image/Dockerfile" >&2; exit 2; }

containers/base/build-base-image.sh "$base"
containers/fill-wheelhouse.sh "containers/$image"
docker build --quiet -f "containers/$image/Dockerfile" \
    --build-arg BASE_IMAGE="$base" \
    --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links /tmp/dpo-build/wheelhouse" \
    -t "$tag" .
echo "built $tag from $base"
