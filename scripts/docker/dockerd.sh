#!/usr/bin/env bash
# A private Docker engine (Debian's docker.io) for corekube's tests and demo, independent of any system
# dockerd: its own socket, exec root, pidfile, log and config under a state dir; no iptables, no ip_forward,
# no default bridge (--bridge=none: containers use --network host or none, so it adds no interface and no
# address to this machine); containers in their own cgroup parent so a stop can find every one of them.
#
#   scripts/docker/dockerd.sh start STATE_DIR   -> prints DOCKER_HOST=unix://STATE_DIR/docker.sock (and the
#                                                  storage driver / data root in use) once the engine answers
#   scripts/docker/dockerd.sh stop STATE_DIR    -> stops exactly that engine, its containerd and its shims
#                                                  (and their containers); idempotent; removes STATE_DIR
#
# Images live in a data root kept between runs (default $COREKUBE_CACHE/docker, COREKUBE_CACHE defaulting to
# /var/cache/corekube) so the base image and the build cache survive; one engine owns it at a time. While
# another live engine owns it, this one gets a private data root inside STATE_DIR (removed at stop).
# Storage driver: overlay2, or vfs when overlay2 cannot run here (slower, larger; said on stderr).
# Environment: COREKUBE_DOCKER_DATA_ROOT (the shared data root), DOCKERD / DOCKER (the daemon and client binaries).
set -euo pipefail

die() { echo "dockerd.sh: $*" >&2; exit 1; }

cmd=${1:-}; state=${2:-}
[[ $cmd == start || $cmd == stop ]] && [[ -n $state ]] || die "usage: $0 start|stop STATE_DIR"
state=$(realpath -m "$state")
exec_root=$state/exec
sock=$state/docker.sock
# the cgroup parent names this engine's containers (cgroupfs driver: /sys/fs/cgroup/<controller>/<parent>/<id>)
cgroup_parent=corekube-docker-$(printf '%s' "$state" | sha256sum | cut -c1-12)
shared_root=${COREKUBE_DOCKER_DATA_ROOT:-${COREKUBE_CACHE:-/var/cache/corekube}/docker}

# true when the NUL-separated command line on stdin has the exec root, or a path under it, as an argument
names_exec_root() {
  tr '\0' '\n' 2>/dev/null | awk -v root="$exec_root" '$0 == root || index($0, root "/") == 1 { found = 1 } END { exit !found }'
}

# pids of this engine's processes: dockerd, the containerd it manages and the shims, all of which name the
# exec root on their command line (containerd's config, the shims' -address …/containerd/containerd.sock)
engine_pids() {
  local p comm
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case $comm in dockerd|containerd|containerd-shim*|docker-proxy) ;; *) continue ;; esac
    if names_exec_root <"$p/cmdline"; then echo "${p#/proc/}"; fi
  done
}

# processes inside this engine's containers (every controller hierarchy that has the cgroup parent)
container_pids() {
  local d
  for d in /sys/fs/cgroup/*/"$cgroup_parent"; do
    if [[ -d $d ]]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -u
}

alive() { kill -0 "$1" 2>/dev/null; }

wait_gone() {  # wait_gone SECONDS PID...
  local deadline=$((SECONDS + $1)) p left; shift
  while ((SECONDS < deadline)); do
    left=0
    for p in "$@"; do alive "$p" && left=1; done
    ((left)) || return 0
    sleep 0.1
  done
  return 1
}

stop_engine() {
  local pid=""
  [[ -f $state/dockerd.pid ]] && pid=$(cat "$state/dockerd.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && alive "$pid" && [[ $(cat /proc/$pid/comm 2>/dev/null) == dockerd ]] &&
     names_exec_root <"/proc/$pid/cmdline"; then
    # dockerd stops its containers (SIGTERM, then SIGKILL after --shutdown-timeout) and its containerd
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone 25 "$pid" || echo "dockerd.sh: dockerd $pid did not stop within 25 s: killing it" >&2
  fi
  # whatever is left (a killed or hung engine): containers first, then shims, containerd, dockerd
  local pids
  pids=$(container_pids); [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
  pids=$(engine_pids); [[ -n $pids ]] && { kill -KILL $pids 2>/dev/null || true; wait_gone 10 $pids || true; }
  # mounts the engine left: container rootfs overlays, shm, network namespaces, the data root's own private
  # bind mount (deepest first)
  local data_root; data_root=$(cat "$state/data-root" 2>/dev/null || true)
  awk '{print $5}' /proc/self/mountinfo | while read -r m; do
    m=$(printf '%b' "$m")  # mountinfo escapes spaces as \040
    if [[ $m == "$state" || $m == "$state"/* || ( -n $data_root && ( $m == "$data_root" || $m == "$data_root"/* ) ) ]]; then echo "$m"; fi
  done | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # the (now empty) container cgroups, depth first
  local d
  for d in /sys/fs/cgroup/*/"$cgroup_parent"; do
    if [[ -d $d ]]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  # give the shared data root back
  if [[ -n $data_root && -f $data_root.owner && $(cat "$data_root.owner" 2>/dev/null) == "$state" ]]; then rm -f "$data_root.owner"; fi
  rm -rf --one-file-system "$state"
}

if [[ $cmd == stop ]]; then
  stop_engine
  exit 0
fi

# ---- start
command -v "${DOCKERD:-dockerd}" >/dev/null || die "dockerd is not installed (Debian package docker.io)"
[[ $(id -u) == 0 ]] || die "the engine needs root"
((${#sock} < 100)) || die "state dir path too long for a unix socket: $state"
[[ -e $sock ]] && die "$state already holds an engine (stop it first)"
mkdir -p "$state" "$exec_root"
chmod 0711 "$state"

# the shared data root, unless another live engine owns it
data_root=$state/data
mkdir -p "$(dirname "$shared_root")"
exec 9>"$shared_root.lock"
flock -w 90 9 || die "could not lock $shared_root.lock"
owner=$(cat "$shared_root.owner" 2>/dev/null || true)
owner_pid=$([[ -n $owner ]] && cat "$owner/launcher.pid" 2>/dev/null || true)
if [[ -n $owner && $owner != "$state" && -n $owner_pid ]] && alive "$owner_pid" && [[ $(cat /proc/$owner_pid/comm 2>/dev/null) == dockerd ]]; then
  echo "dockerd.sh: $shared_root is in use by the engine of $owner: using a private data root (images are made anew)" >&2
else
  data_root=$shared_root
  echo "$state" >"$shared_root.owner"
fi
# the lock (fd 9) is held until this engine answers, so two starts never both take the shared data root
mkdir -p "$data_root"
echo "$data_root" >"$state/data-root"
echo '{}' >"$state/daemon.json"   # never the host's /etc/docker/daemon.json

launch() {  # launch DRIVER: starts dockerd in its own session; 0 once it answers, 1 if it exited
  local driver=$1 pid i
  setsid "${DOCKERD:-dockerd}" \
    --config-file "$state/daemon.json" \
    --data-root "$data_root" --exec-root "$exec_root" --pidfile "$state/dockerd.pid" \
    -H "unix://$sock" \
    --storage-driver "$driver" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --userland-proxy=false --bridge=none \
    --cgroup-parent "/$cgroup_parent" --shutdown-timeout 10 \
    >>"$state/dockerd.log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$state/launcher.pid"
  for ((i = 0; i < 600; i++)); do
    if DOCKER_HOST=unix://$sock "${DOCKER:-docker}" version --format '{{.Server.Version}}' >/dev/null 2>&1; then return 0; fi
    alive "$pid" || return 1
    sleep 0.05
  done
  tail -n 20 "$state/dockerd.log" >&2 || true
  stop_engine
  die "dockerd did not answer within 30 s"
}

driver=overlay2
if ! launch overlay2; then
  echo "dockerd.sh: dockerd did not start with overlay2 (last lines of its log below): falling back to vfs, which copies every layer (slower, larger)" >&2
  tail -n 5 "$state/dockerd.log" >&2 || true
  driver=vfs
  launch vfs || { tail -n 20 "$state/dockerd.log" >&2; stop_engine; die "dockerd did not start with vfs either"; }
fi
exec 9>&-
echo "DOCKER_HOST=unix://$sock"
echo "COREKUBE_DOCKER_STORAGE_DRIVER=$driver"
echo "COREKUBE_DOCKER_DATA_ROOT=$data_root"
