SUMMARY = "CAP4 appliance image for Raspberry Pi 4/5 (raspberrypi4-64, raspberrypi5)"
DESCRIPTION = "A minimal systemd image with cap4, Baresip, the ALSA loopback \
               card loaded at boot and SSH. Configuration and secrets are \
               provisioned on first boot from the boot partition (BOOT/cap4/, \
               see docs/shipping.md)."
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "ssh-server-dropbear"

IMAGE_INSTALL = "packagegroup-core-boot \
                 cap4 \
                 kernel-module-snd-aloop \
                 alsa-utils-aplay \
                 ${CORE_IMAGE_EXTRA_INSTALL}"

# An SD card image and its block map for bmaptool.
IMAGE_FSTYPES = "wic.bz2 wic.bmap"
