#!/bin/bash -e
# pi-gen, on the build host: firmware settings for the sensors.
boot=${ROOTFS_DIR}/boot/firmware
[ -d "${boot}" ] || boot=${ROOTFS_DIR}/boot
config=${boot}/config.txt
cmdline=${boot}/cmdline.txt
# SPI0 for the Lepton's VoSPI, I2C1 for its CCI and the fuel gauge.
for line in dtparam=spi=on dtparam=i2c_arm=on; do
	grep -qxF "${line}" "${config}" || echo "${line}" >>"${config}"
done
# The memory cgroup controller, so that MemorySwapMax=0 in bodycam-agent.service takes effect.
grep -q 'cgroup_enable=memory' "${cmdline}" || sed -i '1 s/$/ cgroup_enable=memory/' "${cmdline}"
# The I2C device nodes come from i2c-dev: load it at boot, before the agent's device policy is set.
echo i2c-dev >"${ROOTFS_DIR}/etc/modules-load.d/bodycam.conf"
