SUMMARY = "libre: generic library for real-time communications (SIP, SDP, RTP)"
DESCRIPTION = "The protocol library Baresip is built on. Its version must \
               match Baresip's."
HOMEPAGE = "https://github.com/baresip/re"
SECTION = "libs"
LICENSE = "BSD-3-Clause"
LIC_FILES_CHKSUM = "file://LICENSE;md5=ce568ef8f1bc48148cf076b3dcea4b29"

DEPENDS = "openssl zlib"

SRC_URI = "git://github.com/baresip/re.git;protocol=https;branch=main"
# v3.24.0
SRCREV = "16bb5c7662029def4b62b4ba686fd5d0c029086c"

S = "${WORKDIR}/git"

inherit cmake pkgconfig

EXTRA_OECMAKE = "-DCMAKE_BUILD_TYPE=Release -DLIBRE_BUILD_STATIC=OFF"

