#!/usr/bin/env bash
# Build the project's image with buildah (no Docker daemon needed), as CI does:
#   bash .ci/image.sh [TAG]        # default localhost/dynsweep:ci
#   DEBIAN_SUITE=trixie …          # the base's Debian release (bookworm: Python 3.11, trixie: 3.13)
#   EXTRAS=…                       # the project's extras (default: the Dockerfile's, plus test)
# The base is Debian bookworm's own root filesystem (mmdebstrap), imported once and kept
# (localhost/dynsweep-base:bookworm); pip's cache is a build cache kept between builds. The
# host's pip settings (its index, find-links, CA bundle) are bind-mounted into the build, so pip
# inside reaches the same package index as the host.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/dynsweep:ci}
base=localhost/dynsweep-base:${DEBIAN_SUITE:-bookworm}
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    "${DEBIAN_SUITE:-bookworm}" "$tmp/root.tar"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$tmp/root.tar" /
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -rf "$tmp"
fi
mounts=()
for p in /etc/pip.conf /etc/xdg/pip /root/.config/pip /opt/wheels /opt/pypi /opt/pypi-more \
  /etc/ssl/certs; do
  [ -e "$p" ] && mounts+=(--volume "$p:$p:ro")
done
buildah bud --quiet --isolation chroot --network host --layers \
  --build-arg BASE="$base" --build-arg EXTRAS="${EXTRAS:-postgres,s3,gcs,deepspeed,mpi,test}" \
  "${mounts[@]}" -t "$tag" .
# The image this build replaced, if any: its layers are no longer needed.
buildah rmi --prune >/dev/null 2>&1 || true
