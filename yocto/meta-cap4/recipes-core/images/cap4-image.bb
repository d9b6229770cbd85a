SUMMARY = "CAP4 appliance image for Raspberry Pi 4/5 (raspberrypi4-64, raspberrypi5)"
DESCRIPTION = "A minimal systemd image with cap4, Baresip, the ALSA loopback \
               card loaded at boot and SSH (keys only). Configuration, secrets \
               and SSH keys are provisioned on first boot from the boot \
               partition (BOOT/cap4/, see docs/shipping.md)."
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

# SSH: root logs in with a key from /root/.ssh/authorized_keys (put there by
# cap4-provision from BOOT/cap4/authorized_keys), never with a password.
# Scarthgap's dropbear ships /etc/default/dropbear with DROPBEAR_EXTRA_ARGS="-w"
# (no root logins at all), which its dropbear@.service passes to dropbear; the
# allow-root-login image feature would only delete the -w. Here the file says
# -s instead: no password logins for anyone, root allowed (with a key). Root's
# password stays locked as well (no empty-root-password feature).
ROOTFS_POSTPROCESS_COMMAND += "cap4_ssh_keys_only"

cap4_ssh_keys_only () {
    if [ -e ${IMAGE_ROOTFS}${sbindir}/dropbear ]; then
        install -d ${IMAGE_ROOTFS}${sysconfdir}/default
        printf '%s\n' '# CAP4: root may log in, with an SSH key only (-s: no password logins).' \
            'DROPBEAR_EXTRA_ARGS="-s"' > ${IMAGE_ROOTFS}${sysconfdir}/default/dropbear
    fi
}
