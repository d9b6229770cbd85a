# shellcheck shell=bash
# The one list of Debian packages CAP4's scripts need, by purpose, and the one
# way they are installed. Sourced by scripts/demo, scripts/test,
# scripts/ship-check, scripts/check-fresh and scripts/build-image:
#
#   . scripts/lib/deps.sh
#   cap4_need build call guest      # installs what is missing of those groups
#
# Promises: asks dpkg first and installs only what is missing (so a machine
# that has everything is left alone and needs no network); runs `apt-get
# update` at most once per process, and only when something is missing;
# installs without recommends; works as root or through sudo. A machine whose
# qemu-utils came from a newer release than its QEMU system emulators gets the
# matching qemu-utils (the two Break each other across releases).
#
# The arm64 cross toolchain is not here: scripts/build-aarch64 pins the arm64
# standard library to the installed rustc-web's exact version, which a plain
# list cannot say.

# build: a C compiler and linker (cargo links with `cc`; ring builds C), and
#        the ALSA headers the alsa crate finds through pkg-config.
# call:  the real SIP parts: Baresip (the box's), SIPp (the remote phone).
# guest: the test-bench guest (scripts/vm): QEMU, busybox, kmod, cpio, xz; the
#        guest runs this machine's root, so what runs inside it is here too:
#        alsa-utils, gpiod (gpio-sim), systemd (PID 1 for unit tests), iproute2
#        (tc netem), e2fsprogs (the power-cut test's ext4 disk). The guest
#        kernel and headers are resolved by scripts/vm.
# deb:   dpkg-dev (dpkg-shlibdeps for the package's Depends).
# image: the SD-card image (scripts/build-image, scripts/check-image):
#        mmdebstrap with qemu-user-static (arm64 maintainer scripts through
#        binfmt_misc), the partition and filesystem tools (no loop mounts),
#        qemu-system-arm for the aarch64 boot check, ssh into the booted image.
# fresh: mmdebstrap for the fresh-machine check (scripts/check-fresh).
# lint:  shellcheck (.ci/run).
cap4_group_packages() {
    case $1 in
        build) echo build-essential pkg-config libasound2-dev ;;
        call)  echo baresip-core sip-tester ;;
        guest) echo qemu-system-x86 busybox-static kmod cpio xz-utils alsa-utils gpiod systemd iproute2 e2fsprogs ;;
        deb)   echo dpkg-dev ;;
        image) echo mmdebstrap qemu-user-static binfmt-support arch-test qemu-system-arm fdisk dosfstools mtools \
                    e2fsprogs xz-utils bmap-tools openssh-client ;;
        fresh) echo mmdebstrap ;;
        lint)  echo shellcheck ;;
        *) echo "scripts/lib/deps.sh: unknown group $1" >&2; return 2 ;;
    esac
}

cap4_sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

cap4_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

cap4_apt_updated=${cap4_apt_updated:-}
cap4_apt_update() {
    [ -n "$cap4_apt_updated" ] && return 0
    cap4_sudo apt-get update -qq
    cap4_apt_updated=1
}

# cap4_need GROUP ...: installs the missing packages of these groups.
cap4_need() {
    local group p missing=() extra=()
    for group in "$@"; do
        for p in $(cap4_group_packages "$group"); do
            cap4_installed "$p" || missing+=("$p")
        done
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "${0##*/}: installing ${missing[*]}" >&2
    cap4_apt_update
    # QEMU's system emulators Break a qemu-utils of another release (a machine
    # may come with a backported one): take the qemu-utils of the emulators'
    # own release along.
    if printf '%s\n' "${missing[@]}" | grep -q '^qemu-system-' && cap4_installed qemu-utils; then
        local want have
        want=$(apt-cache policy qemu-system-common | awk '/Candidate:/{print $2}')
        have=$(dpkg-query -W -f='${Version}' qemu-utils)
        if [ -n "$want" ] && [ "$want" != "(none)" ] && [ "$have" != "$want" ]; then
            echo "${0##*/}: qemu-utils $have -> $want (the emulators' release)" >&2
            extra+=("qemu-utils=$want" --allow-downgrades)
        fi
    fi
    DEBIAN_FRONTEND=noninteractive cap4_sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${missing[@]}" "${extra[@]}" >/dev/null
}

# cap4_debian_mirror [SUITE]: the Debian archive this machine's apt uses for
# SUITE (default bookworm), e.g. for mmdebstrap's own source lines. Read from
# apt's configuration, so nothing names a mirror.
cap4_debian_mirror() {
    local suite=${1:-bookworm} uri
    # shellcheck disable=SC2016 # apt's own $(FIELD) syntax, not the shell's
    uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
        | awk -v s="$suite" '$2 == s {print $1; exit}')
    [ -n "$uri" ] || { echo "scripts/lib/deps.sh: apt has no source for $suite" >&2; return 1; }
    echo "${uri%/}"
}
