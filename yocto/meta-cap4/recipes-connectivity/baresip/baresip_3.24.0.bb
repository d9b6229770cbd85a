SUMMARY = "Baresip: modular SIP user agent, with the modules CAP4 uses"
DESCRIPTION = "Built with the modules /etc/cap4/baresip/config loads \
               (account, alsa, ctrl_tcp, g711, menu) and those a SIP \
               provider's configuration may add (stun, turn, ice for NAT, \
               srtp, dtls_srtp for encrypted media). v3.24.0 is the newest \
               release cap4 is written for; 4.x renamed the UA events and \
               needs checking first."
HOMEPAGE = "https://github.com/baresip/baresip"
SECTION = "comm"
LICENSE = "BSD-3-Clause"
LIC_FILES_CHKSUM = "file://LICENSE;md5=72cf885e402f643d7d81179e27c50108"

DEPENDS = "alsa-lib openssl re zlib"

SRC_URI = "git://github.com/baresip/baresip.git;protocol=https;branch=main"
# v3.24.0
SRCREV = "42286be6b221398c0523165352a37a5b26ed0af0"

S = "${WORKDIR}/git"

inherit cmake pkgconfig

# The configuration (/etc/cap4/baresip, provisionable from the boot partition)
# and the unit (cap4-baresip.service) come with cap4; this recipe installs no
# configuration of its own. Beside the modules the repository's config loads,
# the NAT and media encryption ones a provisioned provider config may load
# (Debian's baresip-core, which the tests use, has them too).
BARESIP_MODULES ?= "account;alsa;ctrl_tcp;g711;menu;stun;turn;ice;srtp;dtls_srtp"
EXTRA_OECMAKE = "-DCMAKE_BUILD_TYPE=Release -DSTATIC=OFF -DMODULES='${BARESIP_MODULES}'"

FILES:${PN} += "${libdir}/baresip/modules/*.so"
