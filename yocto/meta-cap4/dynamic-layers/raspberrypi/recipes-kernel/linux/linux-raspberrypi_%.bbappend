# The ALSA loopback card CAP4 and Baresip talk through: loaded at every boot
# (/etc/modules-load.d) with the options of config/modprobe.d/cap4-snd-aloop.conf
# (scripts/lint-yocto checks that the two agree).
KERNEL_MODULE_AUTOLOAD:append:rpi = " snd-aloop"
KERNEL_MODULE_PROBECONF:append:rpi = " snd-aloop"
# module_conf_<module> is the kernel-module-split class's own name pattern.
# nooelint: oelint.vars.mispell.unknown
module_conf_snd-aloop:rpi = "options snd-aloop enable=1 id=Loopback pcm_substreams=4"
