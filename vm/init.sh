#!/bin/busybox sh
# /init of the Portal VM test initramfs (vm/run-vm-test.sh builds it).
#
# Reads the kernel command line:
#   portal.scenario=NAME   probe | pmem-setup | local | any other: run one peer
#   portal.role=ROLE       portal_vmpeer's role (a, b, hostile)
#   portal.modules=1       insmod the modules listed in /lib/modules/order
#   portal.vfio=1          bind the ivshmem device (1af4:1110) to vfio-pci
#                          (the ivshmem doorbell's interrupts; needs the vfio
#                          modules and an IOMMU: intel_iommu=on on q35)
#   portal.KEY=VALUE       passed on as --KEY VALUE
# prints PORTAL-VM-* lines on the serial console, and powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /dev/shm
mount -t tmpfs tmpfs /dev/shm

echo "PORTAL-VM-BOOT: init started at $(cut -d' ' -f1 /proc/uptime) s guest uptime"

scenario=
role=
modules=0
vfio=0
args=
# shellcheck disable=SC2013 # the command line is one line of words
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	portal.scenario=*) scenario=${kv#portal.scenario=} ;;
	portal.role=*) role=${kv#portal.role=} ;;
	portal.modules=*) modules=${kv#portal.modules=} ;;
	portal.vfio=*) vfio=${kv#portal.vfio=} ;;
	portal.*=*)
		k=${kv%%=*}
		args="$args --${k#portal.} ${kv#*=}"
		;;
	esac
done

# Every guest attaches as a VM (kind VM, pid 0, a heartbeat thread), but
# the local scenario's two processes: they share this kernel, and judge
# each other by the OS lock as processes do.
[ "$scenario" = local ] || args="$args --kind vm"

off() {
	echo "PORTAL-VM-DONE: $1"
	sync
	poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 5
}

# Modules in dependency order (the harness read each one's depends=).
if [ "$modules" = 1 ]; then
	while read -r m; do
		insmod "/lib/modules/$m.ko" || echo "PORTAL-VM: insmod $m failed"
	done </lib/modules/order
fi

# Wait up to $2 seconds for path $1.
wait_for() {
	i=0
	while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e "$1" ]
}

# Give the ivshmem device to vfio-pci: new_id makes the driver take every
# device with that vendor and device id. Then the device's IOMMU group has
# a /dev/vfio/N node, which portal_ivshmem_guest_open uses. A failure is
# reported here and, with its reason, again by the program.
vfio_bind() {
	echo "1af4 1110" >/sys/bus/pci/drivers/vfio-pci/new_id ||
		echo "PORTAL-VM: vfio-pci new_id failed (module vfio-pci loaded?)"
	for d in /sys/bus/pci/devices/*; do
		if [ "$(cat "$d/vendor")" != 0x1af4 ] || [ "$(cat "$d/device")" != 0x1110 ]; then
			continue
		fi
		wait_for "$d/driver" 5
		drv=$(readlink "$d/driver")
		grp=$(readlink "$d/iommu_group")
		drv=${drv##*/}
		grp=${grp##*/}
		if [ "$drv" = vfio-pci ] && [ -n "$grp" ] && wait_for "/dev/vfio/$grp" 5; then
			echo "PORTAL-VM: ${d##*/} bound to vfio-pci, IOMMU group $grp (/dev/vfio/$grp)"
			return 0
		fi
		echo "PORTAL-VM: ${d##*/}: driver '${drv:-none}', IOMMU group '${grp:-none}'" \
			"(no IOMMU? q35 + intel-iommu and intel_iommu=on are needed)"
		return 1
	done
	echo "PORTAL-VM: no ivshmem device (1af4:1110)"
	return 1
}

[ "$vfio" = 1 ] && vfio_bind

nd=/sys/bus/nd/devices

# The hand form of `ndctl create-namespace -f -e namespace0.0 -m devdax
# --align 2M`: give namespace0.0 to a device-dax instance. The info block
# this writes at byte 4096 of the namespace persists in the host's file.
devdax_setup() {
	wait_for $nd/namespace0.0 10 || { echo "PORTAL-VM: no namespace0.0"; return 1; }
	if [ -e /dev/dax0.0 ]; then
		echo "PORTAL-VM: /dev/dax0.0 already configured"
		return 0
	fi
	[ -e /sys/bus/nd/drivers/nd_pmem/namespace0.0 ] &&
		echo namespace0.0 >/sys/bus/nd/drivers/nd_pmem/unbind
	dax=$(cat $nd/region0/dax_seed)
	cat /proc/sys/kernel/random/uuid >"$nd/$dax/uuid" &&
		echo 2097152 >"$nd/$dax/align" &&
		echo ram >"$nd/$dax/mode" &&
		echo namespace0.0 >"$nd/$dax/namespace" &&
		echo "$dax" >/sys/bus/nd/drivers/dax_pmem/bind || return 1
	wait_for /dev/dax0.0 10
}

show_dax() {
	d=/sys/bus/dax/devices/dax0.0
	echo "PORTAL-VM: /dev/dax0.0 size $(cat $d/size) align $(cat $d/align 2>/dev/null || echo ?)"
}

run() { # tag role args...
	tag=$1
	shift
	/bin/portal_vmpeer "$@" --tag "$tag"
	echo "PORTAL-VM-EXIT[$tag]: $?"
}

case "$scenario" in
probe)
	echo "PORTAL-VM-PROBE: ok"
	;;
pmem-setup)
	if devdax_setup; then
		show_dax
		echo "PORTAL-VM-SETUP: ok"
	else
		echo "PORTAL-VM-SETUP: failed"
		find $nd/ 2>&1 | head -50
	fi
	;;
pmem)
	if wait_for /dev/dax0.0 10; then
		show_dax
		# shellcheck disable=SC2086 # word splitting of args is intended
		run guest "$role" $args
	else
		echo "PORTAL-VM: /dev/dax0.0 did not appear"
	fi
	;;
local)
	# Two processes of the same program inside this guest, over shm:.
	# shellcheck disable=SC2086
	run guest-a a --create $args &
	# shellcheck disable=SC2086
	run guest-b b $args
	wait
	;;
*)
	# shellcheck disable=SC2086
	run guest "$role" $args
	;;
esac
off "$scenario"
