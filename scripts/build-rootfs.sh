#!/usr/bin/env bash
# Builds (once per machine) the Debian bookworm root filesystem the test machines boot, and prints its path.
#
#   scripts/build-rootfs.sh            -> /var/cache/corekube/rootfs-<hash>   (built if absent)
#   scripts/build-rootfs.sh --print    -> the path only, without building
#
# The cache key is a hash of the suite, the package list and RECIPE (bump RECIPE when the post-processing below
# changes), so a new package list builds a new tree and old trees stay valid for old checkouts. The build goes
# into a temporary directory next to the cache and is renamed into place, so an interrupted build never leaves a
# half tree under the final name; concurrent builders wait on a lock and reuse the winner's tree.
# Environment: COREKUBE_CACHE (default /var/cache/corekube), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

SUITE=bookworm
RECIPE=1
# python3-cffi-backend: cloud-init's python3-cryptography depends on a virtual package debootstrap cannot resolve.
PACKAGES=(systemd systemd-sysv dbus openssh-server curl iproute2 sudo ca-certificates cloud-init python3-cffi-backend iptables kmod)
CACHE=${COREKUBE_CACHE:-/var/cache/corekube}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

joined=$(IFS=,; echo "${PACKAGES[*]}")
hash=$(printf 'suite=%s\npackages=%s\nrecipe=%s\n' "$SUITE" "$joined" "$RECIPE" | sha256sum | cut -c1-12)
final="$CACHE/rootfs-$hash"

if [[ ${1:-} == --print ]]; then echo "$final"; exit 0; fi
if [[ -d $final ]]; then echo "$final"; exit 0; fi

command -v debootstrap >/dev/null || { echo "build-rootfs: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "build-rootfs: must run as root (debootstrap chroots)" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/rootfs-$hash.lock"
flock 9
if [[ -d $final ]]; then echo "$final"; exit 0; fi   # another builder finished while we waited

tmp=$(mktemp -d "$CACHE/.rootfs-$hash.XXXXXX")
chmod 0755 "$tmp"   # mktemp makes it 0700; it becomes the machines' `/`
trap 'rm -rf --one-file-system "$tmp"' EXIT
start=$SECONDS
echo "build-rootfs: debootstrap $SUITE (${joined}) into $tmp" >&2
debootstrap --variant=minbase --include="$joined" "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 || {
  echo "build-rootfs: debootstrap failed; last lines of $tmp.log:" >&2; tail -20 "$tmp.log" >&2; exit 1; }
rm -f "$tmp.log"

# Identity is per machine (the harness writes hostname, machine-id and host keys into each machine's upper layer).
rm -f "$tmp/etc/hostname" "$tmp"/etc/ssh/ssh_host_*
: >"$tmp/etc/machine-id"
# A locale that exists (C.UTF-8 is built in): without it cloud-init's locale module runs update-locale, which
# fails, and the machine ends `degraded`.
echo LANG=C.UTF-8 >"$tmp/etc/default/locale"
# No console login inside a container (nspawn runs with --console=read-only).
ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
rm -f "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/cache/apt/*.bin
rm -rf "$tmp"/var/lib/apt/lists/*

mv -T "$tmp" "$final"
trap - EXIT
echo "build-rootfs: built $final in $((SECONDS - start)) s" >&2
echo "$final"
