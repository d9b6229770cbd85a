SUMMARY = "CAP4 phone-to-AI appliance"
DESCRIPTION = "Places phone calls through a co-located Baresip, classifies the \
               answer and hands live people to an AI agent. Holds the cap4 \
               daemon and CLI, the cap4 and cap4-baresip systemd units, the default \
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
# commit that checkout has checked out: the layer and the cap4 it builds always
# come from the same commit, so cap4-crates.inc (CI checks it against that
# commit's Cargo.lock) and the files installed below are those of the source.
# No AUTOREV: nothing follows a branch head. Uncommitted changes are not built
# (a warning says so). An integrator who uses the layer outside its checkout,
# or builds another commit, sets CAP4_CHECKOUT or SRCREV:pn-cap4 = "<commit>"
# (`scripts/yocto-crates --check <commit>` tells whether the crates list fits).
CAP4_CHECKOUT ??= "${@os.path.abspath(os.path.join(d.getVar('THISDIR'), '../../../..'))}"
SRC_URI = "git://${CAP4_CHECKOUT};protocol=file;nobranch=1"
SRCREV ?= "${@cap4_checkout_commit(d)}"
# The commit comes from git, not from the recipe's files: parse again every time
# (bitbake's own switch, as externalsrc.bbclass sets it).
# nooelint: oelint.vars.mispell.unknown
BB_DONT_CACHE = "1"

# The commit checked out in CAP4_CHECKOUT, or INVALID (bitbake's "no SRCREV")
# if that is not the top of a git checkout (say, the layer copied elsewhere).
def cap4_checkout_commit(d):
    top = d.getVar('CAP4_CHECKOUT')
    if oe.buildcfg.get_metadata_git_toplevel(top) != os.path.realpath(top):
        return "INVALID"
    rev = oe.buildcfg.get_metadata_git_revision(top)
    return rev if len(rev) == 40 else "INVALID"

# At parse time, because only then can a recipe be skipped with a reason, and the
# warning about uncommitted changes is due on every build, not only on a fetch.
# nooelint: oelint.task.noanonpython
python () {
    if d.getVar('SRCREV') == "INVALID":
        raise bb.parse.SkipRecipe("%s is not the top of a CAP4 git checkout: set CAP4_CHECKOUT (and SRCREV:pn-cap4)" % d.getVar('CAP4_CHECKOUT'))
    if d.getVar('SRCREV') == cap4_checkout_commit(d):
        try:
            changed, _ = bb.process.run('git status --porcelain --untracked-files=no', cwd=d.getVar('CAP4_CHECKOUT'))
        except bb.process.ExecutionError:
            changed = ""
        if changed.strip():
            bb.warn("cap4: %s has uncommitted changes; the image builds commit %s without them" % (d.getVar('CAP4_CHECKOUT'), d.getVar('SRCREV')))
}

S = "${WORKDIR}/git"

# Every crate of Cargo.lock (scripts/yocto-crates; CI checks it is in sync).
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# The Raspberry Pi GPIO backend (rppal): PACKAGECONFIG:pn-cap4 = "rpi" (the kas
# files set it). Without it, the GPIO character device backend (any board).
PACKAGECONFIG ??= ""
PACKAGECONFIG[rpi] = "--features rpi"
# Scarthgap's cargo class never passes PACKAGECONFIG_CONFARGS on (autotools,
# cmake and meson append it to their EXTRA_OE* variables; cargo.bbclass has no
# such line): its oe_cargo_build runs `cargo build ${CARGO_BUILD_FLAGS} "$@"`,
# with CARGO_BUILD_FLAGS set by plain assignment in the class. So the features
# go there, as an :append (applied after the class's assignment).
CARGO_BUILD_FLAGS:append = " ${PACKAGECONFIG_CONFARGS}"

# Cargo.toml's release profile strips the binary (strip = true, for the Debian
# package). Yocto strips it itself and splits the symbols into cap4-dbg; an
# already stripped binary fails QA (already-stripped, in ERROR_QA). So cargo
# does not strip here, and keeps line tables and function names for cap4-dbg
# (the environment overrides the manifest's profile). The package holds a
# stripped binary all the same.
export CARGO_PROFILE_RELEASE_STRIP = "false"
export CARGO_PROFILE_RELEASE_DEBUG = "limited"

# Both services run as DynamicUser=yes: no static user. cap4 joins `gpio` for
# /dev/gpiochip* (udev rule below) and both join `audio`.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio"

SYSTEMD_PACKAGES = "${PN}"
SYSTEMD_SERVICE:${PN} = "cap4.service cap4-baresip.service cap4-provision.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# Units in ${systemd_system_unitdir}, udev rules in ${nonarch_base_libdir}: with
# the usrmerge that scarthgap's systemd distro feature brings, /usr/lib/systemd/system
# and /usr/lib/udev/rules.d.
do_install:append() {
    install -d ${D}${systemd_system_unitdir}/cap4.service.d
    install -m 0644 ${S}/systemd/cap4.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/cap4-baresip.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/packaging/files/cap4-gpio.conf ${D}${systemd_system_unitdir}/cap4.service.d/
    install -m 0644 ${S}/packaging/files/cap4-provision.service ${D}${systemd_system_unitdir}/
    install -d ${D}${libexecdir}/cap4
    install -m 0755 ${S}/packaging/files/cap4-provision ${D}${libexecdir}/cap4/
    sed -i -e 's,@LIBEXECDIR@,${libexecdir},' ${D}${systemd_system_unitdir}/cap4-provision.service

    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${S}/packaging/files/60-cap4-gpio.rules ${D}${nonarch_base_libdir}/udev/rules.d/

    # The repository's configuration, as the Debian package has it. Baresip's
    # (config/baresip/config and accounts) is the starting point only: the SIP
    # provider's settings come from the boot partition (BOOT/cap4/baresip/, see
    # cap4-provision) and replace these files.
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
