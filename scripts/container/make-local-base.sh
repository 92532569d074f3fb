#!/usr/bin/env bash
# Make localhost/node-base:local, a stand-in for node:20-bookworm-slim when no
# registry is reachable: Debian bookworm (debootstrap minbase) plus this
# machine's node and npm. Used by CI as the Dockerfile's BASE_IMAGE.
#
# It also trusts what this machine trusts: the CI network intercepts TLS to
# the npm registry, so the host's CA bundle (which holds that CA) replaces
# the base's, and NODE_EXTRA_CA_CERTS points node and npm at it, as on the
# host. The shipped default base is untouched by this.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/podman-env.sh"
tag=${1:-localhost/node-base:local}
if podman image exists "$tag"; then echo "$tag exists"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
node=$(command -v node)
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
