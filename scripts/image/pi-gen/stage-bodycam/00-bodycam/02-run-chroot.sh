#!/bin/bash -e
# pi-gen, inside the image (chroot, aarch64 under qemu on an x86 host): install bodycam.
# The venv sees the system's picamera2 and libcamera (apt only); numpy stays 1.x because the
# system's python3-picamera2 and python3-simplejpeg are built against it.
make -C /tmp/bodycam-src install PREFIX=/opt/bodycam INSTALL_PYTHON=/usr/bin/python3 \
	VENV_ARGS=--system-site-packages \
	PIP_ARGS="-c /tmp/bodycam-src/scripts/image/pi-gen/constraints.txt" \
	PIP_EXTRA="gpiod spidev smbus2 sounddevice"
systemd-sysusers /usr/lib/sysusers.d/bodycam.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/bodycam.conf
systemctl enable bodycam-agent.service
# Plaintext frames must never reach the SD card: no swap file (zram swap, if any, is RAM).
if dpkg -s dphys-swapfile >/dev/null 2>&1; then
	apt-get purge -y dphys-swapfile
fi
rm -rf /tmp/bodycam-src
