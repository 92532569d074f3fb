#!/usr/bin/env bash
# Make localhost/node-base:local, a stand-in for a Node.js base image when no
# registry is reachable: Debian bookworm (debootstrap minbase) plus the Node
# that ships (the LTS pinned in scripts/shipped-node.json, as in the default
# UBI base) and this machine's npm. Used by CI as the Dockerfile's BASE_IMAGE.
#
# It also trusts what this machine trusts: the CI network intercepts TLS to
# the npm registry, so the host's CA bundle (which holds that CA) replaces
# the base's, and NODE_EXTRA_CA_CERTS points node and npm at it, as on the
# host. The shipped default base is untouched by this.
#
# With NONROOT_TAG it also derives, from TAG, a base whose default user is
# not root, as UBI's Node images are: user 1001 in group 0, with HOME
# /opt/app-root/src owned by it. The Dockerfile must build on it too.
# Usage: scripts/container/make-local-base.sh [TAG] [NONROOT_TAG]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/podman-env.sh"
tag=${1:-localhost/node-base:local}
nonroot_tag=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if podman image exists "$tag"; then
  echo "$tag exists"
else
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  node=$(node "$here/../shipped-node.mjs")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  install -m 0755 "$node" "$work/rootfs/usr/local/bin/node"
  mkdir -p "$work/rootfs/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$work/rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
  host_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
  [ -r "$host_bundle" ] && install -m 0644 "$host_bundle" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' - "$tag" >/dev/null
  echo "made $tag ($("$node" --version))"
fi

[ -n "$nonroot_tag" ] || exit 0
if podman image exists "$nonroot_tag"; then echo "$nonroot_tag exists"; exit 0; fi
mkdir -p "$work/nonroot"
cat > "$work/nonroot/Containerfile" <<'CONTAINERFILE'
ARG BASE
FROM ${BASE}
RUN echo 'default:x:1001:0:Default Application User:/opt/app-root/src:/sbin/nologin' >> /etc/passwd && \
    mkdir -p /opt/app-root/src && chown -R 1001:0 /opt/app-root && chmod -R ug+rwx /opt/app-root
ENV HOME=/opt/app-root/src
WORKDIR /opt/app-root/src
USER 1001
CONTAINERFILE
podman build --format docker --network host --runtime runc --pull=never --quiet \
  --build-arg BASE="$tag" -t "$nonroot_tag" "$work/nonroot" >/dev/null
echo "made $nonroot_tag (default user $(podman image inspect --format '{{.Config.User}}' "$nonroot_tag"))"
