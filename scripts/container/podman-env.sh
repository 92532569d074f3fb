# Source this: podman with its storage and config in a folder of its own
# (nothing under /etc is touched), set up for these CI machines:
# - runc, because crun refuses cgroups in hybrid mode here;
# - default ulimits within this machine's hard limits (setrlimit is denied above them).
# Usage: [PODMAN_HOME=DIR] . scripts/container/podman-env.sh
PODMAN_HOME=${PODMAN_HOME:-/tmp/apicast-sidecar-podman}
mkdir -p "$PODMAN_HOME/root" "$PODMAN_HOME/run"
hard_nofile=$(ulimit -Hn)
cat > "$PODMAN_HOME/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$PODMAN_HOME/run"
graphroot = "$PODMAN_HOME/root"
CONF
cat > "$PODMAN_HOME/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${hard_nofile}:${hard_nofile}", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_STORAGE_CONF="$PODMAN_HOME/storage.conf"
export CONTAINERS_CONF="$PODMAN_HOME/containers.conf"
export PODMAN_HOME
