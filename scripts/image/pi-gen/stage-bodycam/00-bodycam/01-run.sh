#!/bin/bash -e
# pi-gen, on the build host: copy the bodycam source into the image for the chroot step.
# BODYCAM_SRC: the checkout (default: the repository this stage lives in).
src=${BODYCAM_SRC:-$(realpath ../../../../..)}
[ -f "${src}/pyproject.toml" ] || { echo "BODYCAM_SRC=${src} is not a bodycam checkout" >&2; exit 1; }
rm -rf "${ROOTFS_DIR}/tmp/bodycam-src"
mkdir -p "${ROOTFS_DIR}/tmp/bodycam-src"
tar -C "${src}" -cf - --exclude=__pycache__ --exclude='*.egg-info' \
	Makefile pyproject.toml README.md agent hal hq drivers configs docs scripts systemd |
	tar -C "${ROOTFS_DIR}/tmp/bodycam-src" -xf -
