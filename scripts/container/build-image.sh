#!/usr/bin/env bash
# Build the image with podman. BASE_IMAGE defaults to the Dockerfile's own
# (the real registry image); CI passes the locally made base.
# Labels from the environment, when set: SOURCE_URL (where you host this
# repository), VENDOR and MAINTAINER (whoever publishes the image), RELEASE.
# Usage: [SOURCE_URL=...] scripts/container/build-image.sh [TAG] [BASE_IMAGE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/podman-env.sh"
tag=${1:-localhost/apicast-sidecar-proxy:dev}
base=${2:-}
cd "$here/../.."
version=$(node -p "require('./package.json').version")
labels=()
for name in SOURCE_URL VENDOR MAINTAINER RELEASE; do
  if [ -n "${!name:-}" ]; then labels+=(--build-arg "$name=${!name}"); fi
done
# --format docker: podman's default, the OCI image format, has no field for
# HEALTHCHECK, so the image would lose it (podman warns and drops it).
podman build --format docker --network host --runtime runc --pull=never \
  ${base:+--build-arg BASE_IMAGE="$base"} --build-arg VERSION="$version" "${labels[@]}" \
  -t "$tag" -f Dockerfile . >&2
echo "$tag"
