#!/usr/bin/env bash
# Makes, without a registry, a local stand-in for the image overlord/Dockerfile starts FROM
# (node:20-bookworm-slim), so the real Dockerfile builds unchanged on a machine that cannot pull images.
#
#   DOCKER_HOST=unix://… scripts/docker/node-base-image.sh [TAG]      (TAG default node:20-bookworm-slim)
#
# What the stand-in holds, laid out like the official image: a slim Debian bookworm userland (sh, bash,
# coreutils, groupadd/useradd, sed, grep, find, tar and the libraries they link) copied from this machine's
# own installed Debian 12 packages (their files as dpkg lists them, without docs, man pages and locales);
# this machine's node 20 binary at /usr/local/bin/node and its npm under /usr/local/lib/node_modules; the
# user `node` (uid/gid 1000). One addition the official image lacks: this machine's CA bundle, named in npm's
# global config, because its npm registry is reached through a TLS-intercepting egress proxy (a site's own
# base image does the same); a connected machine pulls the official image and never runs this script.
#
# Cached: the image carries the label org.corekube.local-base=<hash of this recipe, node and npm versions>;
# an image with that label is kept, one with another label is replaced, and an image without the label (the
# real one, pulled from a registry) is never touched. Takes ~5 s the first time, ~0.1 s after.
set -euo pipefail

TAG=${1:-node:20-bookworm-slim}
RECIPE=1
DOCKER=${DOCKER:-docker}
# Debian packages whose programs the Dockerfile's RUN steps (and a person's `docker exec … sh`) may use
PACKAGES=(base-files dash bash coreutils passwd login sed grep findutils tar gzip debianutils libc-bin)

die() { echo "node-base-image: $*" >&2; exit 1; }
command -v dpkg-query >/dev/null || die "needs a Debian host (dpkg-query)"
node_bin=$(realpath "$(command -v node)") || die "node is not installed"
npm_dir=$(npm root -g 2>/dev/null)/npm
[[ -f $npm_dir/bin/npm-cli.js ]] || die "npm not found under $npm_dir"
node_version=$("$node_bin" --version)
[[ $node_version == v20.* ]] || die "this machine's node is $node_version; the image needs node 20"
npm_version=$("$node_bin" "$npm_dir/bin/npm-cli.js" --version)

versions=$(dpkg-query -W -f='${Package}=${Version}\n' "${PACKAGES[@]}")
key=$(printf 'recipe=%s\nnode=%s\nnpm=%s\n%s\n' "$RECIPE" "$node_version" "$npm_version" "$versions" | sha256sum | cut -c1-16)

if label=$("$DOCKER" image inspect --format '{{index .Config.Labels "org.corekube.local-base"}}' "$TAG" 2>/dev/null); then
  if [[ -z $label || $label == '<no value>' ]]; then echo "node-base-image: $TAG is a registry image: kept"; exit 0; fi
  if [[ $label == "$key" ]]; then echo "node-base-image: $TAG is up to date (local stand-in $key)"; exit 0; fi
  echo "node-base-image: $TAG was made by another recipe ($label): making it again" >&2
fi

start=$SECONDS
tree=$(mktemp -d /tmp/corekube-node-base.XXXXXX)
trap 'rm -rf --one-file-system "$tree"' EXIT
chmod 0755 "$tree"

# merged /usr, as in Debian 12
mkdir -p "$tree"/usr/{bin,sbin,lib,lib64} "$tree"/usr/lib/x86_64-linux-gnu
ln -s usr/bin "$tree/bin"; ln -s usr/sbin "$tree/sbin"; ln -s usr/lib "$tree/lib"; ln -s usr/lib64 "$tree/lib64"

# the packages' files and symlinks (not their directories: tar makes those, through the /usr symlinks)
list=$tree.files
trap 'rm -rf --one-file-system "$tree" "$list"' EXIT
for p in "${PACKAGES[@]}"; do dpkg-query -L "$p"; done |
  grep -Ev '^/usr/share/(doc|man|info|locale|lintian|bug|doc-base|bash-completion)(/|$)' |
  while read -r f; do if [[ -L $f || -f $f ]]; then echo "${f#/}"; fi; done | sort -u >"$list"
tar -C / -cf - --no-recursion -T "$list" | tar -C "$tree" -xf - --keep-directory-symlink

# node and npm where the official image has them
mkdir -p "$tree/usr/local/bin" "$tree/usr/local/lib/node_modules" "$tree/usr/local/etc"
cp "$node_bin" "$tree/usr/local/bin/node"
cp -a "$npm_dir" "$tree/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$tree/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$tree/usr/local/bin/npx"

# every shared library the programs link (ldd's closure), dereferenced to the soname's path (ldd fails on
# the shell scripts among the programs: that is expected)
find "$tree/usr/bin" "$tree/usr/sbin" "$tree/usr/local/bin/node" -type f -perm -u+x -print0 |
  { xargs -0 ldd 2>/dev/null || true; } | awk '/=>/ && $3 ~ /^\// {print $3} /^[[:space:]]+\/[^ ]+ \(/ {print $1}' | sort -u |
  while read -r lib; do echo "${lib#/}"; done >"$list"
tar -C / -chf - -T "$list" | tar -C "$tree" -xf - --keep-directory-symlink

# accounts: Debian's defaults (base-passwd's masters) plus the official image's `node` user
cp /usr/share/base-passwd/passwd.master "$tree/etc/passwd"
cp /usr/share/base-passwd/group.master "$tree/etc/group"
echo 'node:x:1000:1000::/home/node:/bin/bash' >>"$tree/etc/passwd"
echo 'node:x:1000:' >>"$tree/etc/group"
cut -d: -f1 "$tree/etc/passwd" | sed 's/$/:*:19700:0:99999:7:::/' >"$tree/etc/shadow"
cut -d: -f1 "$tree/etc/group" | sed 's/$/:*::/' >"$tree/etc/gshadow"
chmod 0640 "$tree/etc/shadow" "$tree/etc/gshadow"
chgrp 42 "$tree/etc/shadow" "$tree/etc/gshadow"   # group shadow, as Debian has it
printf 'passwd: files\ngroup: files\nshadow: files\ngshadow: files\nhosts: files dns\n' >"$tree/etc/nsswitch.conf"
mkdir -p "$tree/home/node" "$tree/root" "$tree/tmp" "$tree/var/tmp" "$tree/run" "$tree/proc" "$tree/sys" "$tree/dev"
chown 1000:1000 "$tree/home/node"
chmod 0700 "$tree/root"
chmod 1777 "$tree/tmp" "$tree/var/tmp"

# this machine's trust store, for npm behind the egress proxy (see the header)
mkdir -p "$tree/etc/ssl/certs"
cp -L /etc/ssl/certs/ca-certificates.crt "$tree/etc/ssl/certs/ca-certificates.crt"
echo 'cafile=/etc/ssl/certs/ca-certificates.crt' >"$tree/usr/local/etc/npmrc"

cp -a /etc/ld.so.conf "$tree/etc/" 2>/dev/null || true
cp -a /etc/ld.so.conf.d "$tree/etc/" 2>/dev/null || true
ldconfig -r "$tree"

tar -C "$tree" --numeric-owner -cf - . | "$DOCKER" import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c "ENV NODE_VERSION=${node_version#v}" \
  -c "LABEL org.corekube.local-base=$key" \
  -c 'CMD ["node"]' \
  -m "corekube: local stand-in for $TAG (node $node_version, npm $npm_version, Debian packages of this machine)" \
  - "$TAG" >/dev/null
size=$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")
echo "node-base-image: made $TAG (local stand-in $key, $((size / 1000000)) MB) in $((SECONDS - start)) s"
