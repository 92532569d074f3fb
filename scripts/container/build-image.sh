#!/usr/bin/env bash
# Build the image with podman. BASE_IMAGE defaults to the Dockerfile's own
# (the real registry image); CI passes the locally made base.
# Usage: scripts/container/build-image.sh [TAG] [BASE_IMAGE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/podman-env.sh"
tag=${1:-localhost/apicast-sidecar-proxy:dev}
base=${2:-}
cd "$here/../.."
version=$(node -p "require('./package.json').version")
# docker format: the OCI format drops HEALTHCHECK.
podman build --format docker --network host --runtime runc --pull=never \
  ${base:+--build-arg BASE_IMAGE="$base"} --build-arg VERSION="$version" \
  -t "$tag" -f Dockerfile . >&2
echo "$tag"
