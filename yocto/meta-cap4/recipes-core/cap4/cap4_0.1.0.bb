SUMMARY = "CAP4 phone-to-AI appliance"
DESCRIPTION = "Places phone calls through a co-located Baresip, classifies the \
               answer and hands live people to an AI agent. Holds the cap4 \
               daemon and CLI, the cap4 and baresip systemd units, the default \
               configuration in /etc/cap4 and the first-boot provisioning from \
               the boot partition."
SECTION = "comm"
LICENSE = "MIT | Apache-2.0"
# The source tree has no licence file of its own (Cargo.toml names the licences).
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302 \
                    file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# alsa-sys links libasound (found through pkg-config); ring builds its C and
# assembly with the target compiler the cargo class sets up.
DEPENDS = "alsa-lib"

PV = "0.1.0+git"

# The source is the CAP4 checkout this layer lives in (yocto/meta-cap4), at the
# head of CAP4_BRANCH. A release build pins SRCREV to its tag's commit (in
# local.conf or the kas file: SRCREV:pn-cap4 = "<commit>").
CAP4_BRANCH ??= "main"
SRC_URI = "git://${THISDIR}/../../../..;protocol=file;branch=${CAP4_BRANCH}"
# nooelint: oelint.vars.autorev
SRCREV ??= "${AUTOREV}"

S = "${WORKDIR}/git"

# Every crate of Cargo.lock (scripts/yocto-crates; CI checks it is in sync).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# The Raspberry Pi GPIO backend (rppal): PACKAGECONFIG:pn-cap4 = "rpi" (the kas
# files set it). Without it, the GPIO character device backend (any board).
PACKAGECONFIG ??= ""
PACKAGECONFIG[rpi] = "--features rpi"

# Both services run as DynamicUser=yes: no static user. cap4 joins `gpio` for
# /dev/gpiochip* (udev rule below) and both join `audio`.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio"

SYSTEMD_PACKAGES = "${PN}"
SYSTEMD_SERVICE:${PN} = "cap4.service baresip.service cap4-provision.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}/cap4.service.d
    install -m 0644 ${S}/systemd/cap4.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/baresip.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/packaging/files/cap4-gpio.conf ${D}${systemd_system_unitdir}/cap4.service.d/
    install -m 0644 ${S}/packaging/files/cap4-provision.service ${D}${systemd_system_unitdir}/
    install -d ${D}${libexecdir}/cap4
    install -m 0755 ${S}/packaging/files/cap4-provision ${D}${libexecdir}/cap4/
    sed -i -e 's,@LIBEXECDIR@,${libexecdir},' ${D}${systemd_system_unitdir}/cap4-provision.service

    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${S}/packaging/files/60-cap4-gpio.rules ${D}${nonarch_base_libdir}/udev/rules.d/

    install -d ${D}${sysconfdir}/cap4/baresip
    install -m 0644 ${S}/config/cap4.toml ${D}${sysconfdir}/cap4/
    install -m 0644 ${S}/config/baresip/config ${D}${sysconfdir}/cap4/baresip/
    install -m 0644 ${S}/config/baresip/accounts ${D}${sysconfdir}/cap4/baresip/
    # Secrets (systemd credentials cap4-api-token, elevenlabs-api-key): root only.
    install -d -m 0700 ${D}${sysconfdir}/credstore
}

FILES:${PN} += "${systemd_system_unitdir} ${nonarch_base_libdir}/udev/rules.d ${sysconfdir}/credstore"
CONFFILES:${PN} = "${sysconfdir}/cap4/cap4.toml ${sysconfdir}/cap4/baresip/config ${sysconfdir}/cap4/baresip/accounts"

RDEPENDS:${PN} = "baresip"
RRECOMMENDS:${PN} = "kernel-module-snd-aloop"
