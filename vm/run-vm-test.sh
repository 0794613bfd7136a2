#!/usr/bin/env bash
# run-vm-test.sh - one Portal VM test with real QEMU guests (docs/vm.md).
#
#   run-vm-test.sh --bin DIR --cache DIR --work DIR SCENARIO
#
# SCENARIO:
#   ivshmem      host <-> guest over ivshmem-plain, polling
#   pmem         host <-> guest over virtio-pmem, devdax, polling
#   guest2guest  two guests on one ivshmem-plain region
#   hostile      a guest scribbles on the fields it owns; the host (under ASan)
#                must report PORTAL_EPROTO and quarantine, never crash or hang
#   local        the same exchange between two processes inside one guest
#   ivshmem-doorbell
#                host <-> guest over ivshmem-doorbell served by
#                portal-ivshmem-server, both sides asleep on ivshmem
#                doorbells: the host on its server eventfd, the guest on an
#                MSI-X eventfd through VFIO (q35 + intel-iommu); = ivshmem
#                with PORTAL_VM_WAKE=ivshmem
#   pmem-stream  host <-> guest over virtio-pmem devdax, both sides asleep on
#                stream doorbells over a virtio-serial port; = pmem with
#                PORTAL_VM_WAKE=stream
#   guest-death  liveness across the VM boundary: the guest produces over
#                ivshmem-doorbell, the host consumes asleep in a watched
#                doorbell wait with no timeout; QEMU is killed (SIGKILL) at a
#                random moment (the wait must end with PORTAL_EPEERDEAD,
#                everything published drained), booted again (RESTARTED,
#                new epoch, the sequence goes on), then paused with the
#                monitor's stop (DEAD), taken over and resumed with cont
#                (the guest must find itself fenced). See vm/vmlive.c
#
# Every guest but the local scenario's attaches as a VM (PORTAL_REGION_F_VM:
# kind VM, pid 0, no OS lock) and heartbeats; the host side checks the
# guest's participant slot says so (--peer-kind vm).
#
# --bin holds portal_vmpeer, portal_vmpeer_asan, portal_vmpeer_guest and
# portal-ivshmem-server;
# --cache keeps the kernel package, its unpacked tree, the accelerator probe
# and the pmem image between runs; --work is this scenario's scratch space.
#
# What it does: finds the kernel package that Debian's linux-image-amd64
# depends on, fetches it with apt-get download and unpacks it with dpkg -x
# (once, cached); builds an initramfs from busybox-static, the statically
# linked guest program, vm/init.sh and, for pmem, the .ko modules it needs in
# the order their depends= strings give; boots qemu-system-x86_64 under
# timeout with the scenario on the kernel command line, with the host side
# running next to it; reads the guest's verdict from the serial console.
#
# Environment:
#   PORTAL_VM_ACCEL     kvm or tcg: skip the probe (default: KVM if a probe
#                       boot works, else TCG; the result is cached)
#   PORTAL_VM_MESSAGES  messages each way (default per scenario)
#   PORTAL_VM_RTT       round trips to time (default 2000; 0: none)
#   PORTAL_VM_TIMEOUT   seconds one QEMU run may take (default 180)
#   PORTAL_VM_WAKE      how the peers wait for each other: poll (default),
#                       or a doorbell both sides sleep on: ivshmem (scenario
#                       ivshmem: becomes ivshmem-doorbell), stream (ivshmem,
#                       pmem: adds a virtio-serial port), futex (local).
#                       ivshmem-doorbell and pmem-stream fix their own kind.
#   PORTAL_VM_KEEP      1: keep the scratch files and logs
#   PORTAL_VM_SEED      guest-death: the seed of the random kill and pause
#                       moments (default: random, printed)
#   PORTAL_VM_STALL_MS  guest-death: heartbeat stall that means dead (1000)
#
# Exit: 0 passed, 1 failed, 77 cannot run here (the reason is printed).
set -euo pipefail

say() { echo "vm: $*"; }
skip() {
	echo "skipped: $*"
	exit 77
}
die() {
	echo "FAIL: $*"
	exit 1
}

bin='' cache='' work='' scenario=''
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) bin=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--work) work=$2; shift 2 ;;
	-*) die "unknown option $1" ;;
	*) scenario=$1; shift ;;
	esac
done
if [ -z "$bin" ] || [ -z "$cache" ] || [ -z "$work" ] || [ -z "$scenario" ]; then
	die "usage: $0 --bin DIR --cache DIR --work DIR SCENARIO"
fi
case "$scenario" in
ivshmem | pmem | guest2guest | hostile | local) ;;
ivshmem-doorbell | pmem-stream | guest-death) ;;
*) die "unknown scenario $scenario" ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
qemu_timeout=${PORTAL_VM_TIMEOUT:-180}
rtt=${PORTAL_VM_RTT:-2000}
wake=${PORTAL_VM_WAKE:-poll}
# The doorbell scenarios are the polling ones with a fixed wake kind.
base=$scenario
case "$scenario" in
ivshmem-doorbell) base=ivshmem forced=ivshmem ;;
pmem-stream) base=pmem forced=stream ;;
guest-death) forced=ivshmem ;;
*) forced= ;;
esac
if [ -n "$forced" ]; then
	[ "$wake" = poll ] || [ "$wake" = "$forced" ] ||
		echo "vm: PORTAL_VM_WAKE=$wake ignored: $scenario is about the $forced doorbell"
	wake=$forced
fi
case "$base:$wake" in
*:poll | ivshmem:ivshmem | ivshmem:stream | pmem:stream | local:futex | guest-death:ivshmem) ;;
*) die "PORTAL_VM_WAKE=$wake does not apply to scenario $base (see the top of $0)" ;;
esac
t_start=$(date +%s.%N)

elapsed() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- what this machine has ----------------------------------------------

command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 not found (Debian package qemu-system-x86)"
for tool in cpio timeout flock dpkg apt-get apt-cache awk; do
	command -v $tool >/dev/null || skip "$tool not found"
done
busybox=
for b in /bin/busybox /usr/bin/busybox; do
	[ -x "$b" ] || continue
	case "$(LC_ALL=C ldd "$b" 2>&1 || true)" in
	*"not a dynamic"*)
		busybox=$b
		break
		;;
	esac
done
[ -n "$busybox" ] || skip "no statically linked busybox (Debian package busybox-static)"
for p in portal_vmpeer portal_vmpeer_guest; do
	[ -x "$bin/$p" ] || die "$bin/$p not built"
done
if [ "$wake" = ivshmem ]; then
	[ -x "$bin/portal-ivshmem-server" ] || die "$bin/portal-ivshmem-server not built"
fi

mkdir -p "$cache" "$work"
work=$(cd "$work" && pwd)
cache=$(cd "$cache" && pwd)
rm -f "$work"/*.log "$work"/ready

# Every background process we start, killed (by pid) on the way out.
pids=()
shm_files=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${shm_files[@]}"; do
		rm -f "$p"
	done
	[ "${PORTAL_VM_KEEP:-0}" = 1 ] || rm -rf "$work/initramfs"
}
trap cleanup EXIT

# ---- the guest kernel: Debian's package, fetched once ------------------------

kdir=$cache/kernel
exec 9>"$cache/lock"
flock 9
if [ ! -f "$kdir/ready" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !n++ { print $2 }')
	[ -n "$pkg" ] || skip "apt-cache cannot resolve linux-image-amd64 (run apt-get update)"
	say "fetching $pkg (the kernel linux-image-amd64 depends on)"
	rm -rf "$kdir"
	mkdir -p "$kdir/deb"
	(cd "$kdir/deb" && apt-get download -q "$pkg" >/dev/null 2>"$kdir/download.err") ||
		skip "kernel package $pkg not reachable: $(tail -1 "$kdir/download.err")"
	dpkg -x "$kdir"/deb/*.deb "$kdir/root" || die "dpkg -x failed"
	rm -f "$kdir"/deb/*.deb
	echo "$pkg" >"$kdir/package"
	touch "$kdir/ready"
fi
found=("$kdir"/root/boot/vmlinuz-*)
vmlinuz=${found[0]}
[ -f "$vmlinuz" ] || die "no vmlinuz in $kdir/root/boot"
found=("$kdir"/root/lib/modules/*/kernel)
kmods=${found[0]}

# Under TCG the bzImage's own xz decompression takes seconds of every boot.
# The kernel is built with CONFIG_PVH, so QEMU can start the uncompressed
# ELF directly: unpack it once (xz stream inside the bzImage) if the tools
# are here, and use it when it carries the PVH entry note (type 0x12).
if [ ! -f "$kdir/vmlinux.tried" ]; then
	touch "$kdir/vmlinux.tried"
	set +o pipefail # xz stops reading at the end of its stream, grep -q at a match
	if command -v xz >/dev/null && command -v readelf >/dev/null &&
		grep -q '^CONFIG_PVH=y' "$kdir"/root/boot/config-* 2>/dev/null; then
		for off in $(LC_ALL=C grep -obUa $'\xfd7zXZ' "$vmlinuz" 2>/dev/null | cut -d: -f1 || true); do
			if tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream >"$kdir/vmlinux.tmp" 2>/dev/null &&
				readelf -n "$kdir/vmlinux.tmp" 2>/dev/null | grep -q 'type: (0x00000012)'; then
				mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
				break
			fi
		done
		rm -f "$kdir/vmlinux.tmp"
	fi
	set -o pipefail
fi
flock -u 9
boot_kernel=$vmlinuz
boot_how="bzImage"
if [ -f "$kdir/vmlinux" ]; then
	boot_kernel=$kdir/vmlinux
	boot_how="uncompressed ELF, PVH entry"
fi
say "kernel: $(cat "$kdir/package") ($(basename "$vmlinuz"), booted as $boot_how)"

# ---- modules: dependency order from each .ko's depends= ----------------------

declare -A ko_path=()
declare -A ko_done=()
ko_order=()

ko_index() {
	local f n
	while IFS= read -r f; do
		n=${f##*/}
		n=${n%.ko}
		ko_path[${n//-/_}]=$f
	done < <(find "$kmods" -name '*.ko')
}

ko_visit() {
	local m=${1//-/_} f deps d
	[ -n "${ko_done[$m]:-}" ] && return 0
	ko_done[$m]=1
	f=${ko_path[$m]:-}
	[ -n "$f" ] || return 0 # built into the kernel
	deps=$(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p')
	for d in ${deps//,/ }; do
		ko_visit "$d"
	done
	ko_order+=("$m")
}

# ---- initramfs -------------------------------------------------------------

# build_initramfs OUT [module...]
build_initramfs() {
	local out=$1 root=$work/initramfs m
	shift
	rm -rf "$root"
	mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
	cp "$busybox" "$root/bin/busybox"
	cp "$bin/portal_vmpeer_guest" "$root/bin/portal_vmpeer"
	cp "$here/init.sh" "$root/init"
	chmod 755 "$root/init"
	: >"$root/lib/modules/order"
	if [ $# -gt 0 ]; then
		ko_index
		for m in "$@"; do
			ko_visit "$m"
		done
		for m in "${ko_order[@]}"; do
			cp "${ko_path[$m]}" "$root/lib/modules/$m.ko"
			echo "$m" >>"$root/lib/modules/order"
		done
		say "modules: ${ko_order[*]}"
	fi
	(cd "$root" && find . | cpio -o -H newc --quiet) >"$out"
}

# Guest modules: virtio-pmem and devdax; virtio_console for a virtio-serial
# port; VFIO (vfio_iommu_type1 is loaded on demand in a full system, so it
# is named) for the ivshmem doorbell's interrupts.
initrd=$work/initramfs.cpio
mods=()
[ "$base" = pmem ] && mods+=(virtio_pci virtio_pmem nd_pmem dax_pmem device_dax)
[ "$wake" = stream ] && mods+=(virtio_pci virtio_console)
[ "$wake" = ivshmem ] && mods+=(vfio vfio_iommu_type1 vfio_virqfd irqbypass vfio_pci_core vfio_pci)
build_initramfs "$initrd" ${mods[@]+"${mods[@]}"}

# ---- accelerator: KVM if a guest really boots with it, else TCG ---------------

# qemu_run LOG APPEND [qemu args...]: one guest in the background; its pid
# in $qemu_pid. -smp 1,maxcpus=2 makes TCG multi-threaded, which is what
# gives real host atomics to the guest's lock-prefixed instructions.
# no_timer_check: the kernel's check that the IO-APIC timer ticks can miss
# the ticks of a TCG guest on a loaded host, and then panics ("timer
# doesn't work through Interrupt-remapped IO-APIC", seen on q35 with
# intel-iommu); the timer works, the check is what fails.
qemu_run() {
	local log=$1 append=$2 smp=${smp:-1,maxcpus=2}
	shift 2
	# $qemu_pid is timeout's: killing it (SIGTERM) ends QEMU too.
	timeout -k 5 "$qemu_timeout" qemu-system-x86_64 "${accel_args[@]}" \
		-machine "${machine:-pc}" -m "${mem:-256}" -smp "$smp" \
		-nographic -no-reboot -nic none \
		-kernel "$boot_kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check $append" "$@" \
		</dev/null >"$log" 2>&1 &
	qemu_pid=$!
	pids+=("$qemu_pid")
}

accel=${PORTAL_VM_ACCEL:-}
exec 9>"$cache/lock"
flock 9
if [ -z "$accel" ] && [ -f "$cache/accel" ]; then
	accel=$(cat "$cache/accel")
	accel_why="probed earlier, cached in $cache/accel"
elif [ -z "$accel" ]; then
	accel=tcg
	accel_why="/dev/kvm not usable"
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
		accel_args=(-enable-kvm -cpu host)
		# In a subshell whose stderr is dropped: a QEMU that aborts (as
		# it does where nested KVM fails) would otherwise be reported
		# by the shell. Its own messages are in probe.log.
		(
			qemu_timeout=30 qemu_run "$work/probe.log" "portal.scenario=probe"
			wait "$qemu_pid"
		) 2>/dev/null || true
		if grep -q 'PORTAL-VM-PROBE: ok' "$work/probe.log"; then
			accel=kvm
			accel_why="a probe guest booted with KVM"
		else
			accel_why="/dev/kvm exists but a probe guest did not boot with KVM: $(
				grep -m1 -iE 'error|fail' "$work/probe.log" || echo "no answer in 30 s")"
		fi
	fi
	echo "$accel" >"$cache/accel"
else
	accel_why="PORTAL_VM_ACCEL"
fi
flock -u 9
case "$accel" in
kvm) accel_args=(-enable-kvm -cpu host) ;;
tcg) accel_args=(-accel "tcg,thread=multi") ;;
*) die "PORTAL_VM_ACCEL must be kvm or tcg" ;;
esac
say "accelerator: $accel ($accel_why)"

# ---- running and judging ---------------------------------------------------------

host_pid=
# host_start LOG ARGS...: the host side, bounded like the guest.
host_start() {
	local log=$1
	shift
	timeout -k 5 "$qemu_timeout" "$@" >"$log" 2>&1 &
	host_pid=$!
	pids+=("$host_pid")
}

wait_ready() {
	local _
	for _ in $(seq 100); do
		[ -e "$work/ready" ] && return 0
		kill -0 "$host_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$1"
	die "the host side did not lay out the region"
}

# The lines that matter from a serial log (CRs removed).
show() {
	tr -d '\r' <"$1" | grep -oE 'PORTAL-VM.*' | sed "s/^/  [$2] /" || true
}

# judge LOG TAG: did the guest program with TAG pass?
guest_passed() {
	grep -q "^PORTAL-VM-RESULT\[$2\]: PASS" "$1"
}

verdict=0
fail_with_log() { # LOG WHAT
	echo "---- $2: last lines of $1"
	tr -d '\r' <"$1" | tail -40
	verdict=1
}

msgs=${PORTAL_VM_MESSAGES:-}
shm=/dev/shm/portal-vm-$scenario-$$
ivshmem_size=4M

# The doorbell's transport, added to QEMU's devices ($dev), the host's
# arguments ($host_args) and the guest's command line ($guest_args).
wake_setup() {
	case "$wake" in
	ivshmem)
		# Interrupts to the guest need VFIO, so an IOMMU: q35 with
		# intel-iommu (before the ivshmem device), intel_iommu=on.
		# The memory is the server's: the host's region file.
		ivs_sock=$work/ivs.sock
		machine=q35
		[ "$accel" = kvm ] && machine=q35,kernel-irqchip=split
		dev=(-device intel-iommu -chardev "socket,path=$ivs_sock,id=ivs"
			-device "ivshmem-doorbell,chardev=ivs,vectors=1")
		host_args+=(--wake "ivshmem:$ivs_sock")
		guest_args+=" portal.wake=ivshmem portal.modules=1 portal.vfio=1 intel_iommu=on"
		;;
	stream)
		# QEMU listens on the chardev socket; the host side connects
		# (retrying while QEMU starts), the guest finds the port by name.
		serial_sock=$work/serial.sock
		rm -f "$serial_sock"
		dev+=(-device virtio-serial-pci
			-chardev "socket,path=$serial_sock,server=on,wait=off,id=c0"
			-device "virtserialport,chardev=c0,name=portal.0")
		host_args+=(--wake "stream:$serial_sock")
		guest_args+=" portal.wake=stream:portal.0 portal.modules=1"
		;;
	esac
}

# The ivshmem server, on the region file the host side has laid out.
start_server() {
	[ "$wake" = ivshmem ] || return 0
	rm -f "$ivs_sock" "$work/ivs.pid"
	timeout -k 5 "$qemu_timeout" "$bin/portal-ivshmem-server" -F -S "$ivs_sock" -m "$shm" \
		-l "${ivshmem_size,,}" -n 1 -p "$work/ivs.pid" 2>"$work/ivs.log" &
	pids+=("$!")
	local _
	for _ in $(seq 100); do
		[ -s "$work/ivs.pid" ] && return 0
		sleep 0.1
	done
	cat "$work/ivs.log"
	die "portal-ivshmem-server did not start"
}

# Both sides must have slept on their doorbell and rung the other's (each
# side's program fails itself otherwise; this also catches a side that
# never got as far as using one).
check_wake() { # LOG WHAT
	[ "$wake" = poll ] && return 0
	grep -q "doorbell kind=$wake " "$1" ||
		fail_with_log "$1" "$2: no doorbell report (kind $wake)"
}

case "$base" in
ivshmem | hostile)
	shm_files+=("$shm")
	dev=(-object "memory-backend-file,id=hm,share=on,mem-path=$shm,size=$ivshmem_size"
		-device "ivshmem-plain,memdev=hm")
	if [ "$base" = ivshmem ]; then
		n=${msgs:-20000}
		hostprog=$bin/portal_vmpeer
		host_args=(a --rtt "$rtt" --peer-kind vm)
		guest_args="portal.role=b portal.rtt=$rtt"
		wake_setup
	else
		n=${msgs:-5000}
		hostprog=$bin/portal_vmpeer_asan
		[ -x "$hostprog" ] || hostprog=$bin/portal_vmpeer
		host_args=(honest --random 3)
		guest_args="portal.role=hostile portal.random=3"
	fi
	say "host side: $(basename "$hostprog"), $n messages each way, waking by $wake"
	host_start "$work/host.log" "$hostprog" "${host_args[@]}" --create --uri "file:$shm" \
		--size "$ivshmem_size" --count "$n" --ready-file "$work/ready" \
		--wait "$qemu_timeout" --tag host
	wait_ready "$work/host.log"
	start_server
	t_boot=$(elapsed)
	qemu_run "$work/guest.log" \
		"portal.scenario=$scenario $guest_args portal.uri=ivshmem: portal.count=$n portal.wait=$qemu_timeout" \
		"${dev[@]}"
	wait "$qemu_pid" || true
	host_rc=0
	wait "$host_pid" || host_rc=$?
	show "$work/host.log" host
	show "$work/guest.log" guest
	[ "$host_rc" = 0 ] || fail_with_log "$work/host.log" "host side exited $host_rc$(
		[ "$host_rc" = 124 ] && echo " (killed by timeout after $qemu_timeout s)")"
	guest_passed "$work/guest.log" guest || fail_with_log "$work/guest.log" "guest"
	check_wake "$work/host.log" "host"
	check_wake "$work/guest.log" "guest"
	[ "$verdict" = 0 ] || [ ! -s "$work/ivs.log" ] || {
		echo "---- portal-ivshmem-server log"
		cat "$work/ivs.log"
	}
	;;

pmem)
	# The image QEMU maps; the namespace in it is made devdax once, by a
	# set-up boot, and stays so (the info block is in the image).
	img=$cache/pmem.img
	img_size=64M
	n=${msgs:-20000}
	dev=(-object "memory-backend-file,id=pm,share=on,mem-path=$img,size=$img_size"
		-device "virtio-pmem-pci,memdev=pm")
	host_args=(--peer-kind vm)
	guest_args=
	wake_setup
	exec 9>"$cache/lock"
	flock 9
	has_info() { [ "$(dd if="$img" bs=1 skip=4096 count=15 2>/dev/null || true)" = NVDIMM_DAX_INFO ]; }
	if [ ! -f "$img" ] || ! has_info; then
		say "set-up boot: making the virtio-pmem namespace devdax"
		rm -f "$img"
		truncate -s "$img_size" "$img"
		mem=512,maxmem=2G,slots=2 qemu_run "$work/setup.log" \
			"portal.scenario=pmem-setup portal.modules=1" \
			-object "memory-backend-file,id=pm,share=on,mem-path=$img,size=$img_size" \
			-device virtio-pmem-pci,memdev=pm
		wait "$qemu_pid" || true
		show "$work/setup.log" setup
		has_info || {
			rm -f "$img"
			fail_with_log "$work/setup.log" "devdax set-up"
			die "the guest did not configure devdax"
		}
	fi
	say "host side: portal_vmpeer on file:$img?devdax, $n messages each way, waking by $wake"
	host_start "$work/host.log" "$bin/portal_vmpeer" a --rtt "$rtt" --create \
		--uri "file:$img?devdax" --count "$n" --ready-file "$work/ready" \
		--wait "$qemu_timeout" --tag host ${host_args[@]+"${host_args[@]}"}
	wait_ready "$work/host.log"
	t_boot=$(elapsed)
	mem=512,maxmem=2G,slots=2 qemu_run "$work/guest.log" \
		"portal.scenario=pmem portal.modules=1 portal.role=b portal.uri=pmem:/dev/dax0.0 portal.count=$n portal.rtt=$rtt portal.wait=$qemu_timeout$guest_args" \
		"${dev[@]}"
	wait "$qemu_pid" || true
	host_rc=0
	wait "$host_pid" || host_rc=$?
	flock -u 9
	show "$work/host.log" host
	show "$work/guest.log" guest
	[ "$host_rc" = 0 ] || fail_with_log "$work/host.log" "host side exited $host_rc$(
		[ "$host_rc" = 124 ] && echo " (killed by timeout after $qemu_timeout s)")"
	guest_passed "$work/guest.log" guest || fail_with_log "$work/guest.log" "guest"
	check_wake "$work/host.log" "host"
	check_wake "$work/guest.log" "guest"
	;;

guest2guest)
	# The host lays the region out (side 0) and leaves; guest A takes side
	# 1, guest B side 2. Two TCG guests share the two cores: modest counts.
	shm_files+=("$shm")
	n=${msgs:-5000}
	r=$((rtt < 500 ? rtt : 500))
	"$bin/portal_vmpeer" create --uri "file:$shm" --size "$ivshmem_size" --parts 3 \
		--side-a 1 --side-b 2 --tag host >"$work/host.log" 2>&1 ||
		{ cat "$work/host.log"; die "host could not lay out the region"; }
	t_boot=$(elapsed)
	common="portal.scenario=guest2guest portal.uri=ivshmem: portal.count=$n portal.rtt=$r portal.wait=$qemu_timeout portal.peer-kind=vm"
	backend=(-object "memory-backend-file,id=hm,share=on,mem-path=$shm,size=$ivshmem_size"
		-device "ivshmem-plain,memdev=hm")
	qemu_run "$work/guest-a.log" "$common portal.role=a portal.side=1" "${backend[@]}"
	pid_a=$qemu_pid
	qemu_run "$work/guest-b.log" "$common portal.role=b portal.side=2" "${backend[@]}"
	wait "$pid_a" || true
	wait "$qemu_pid" || true
	show "$work/guest-a.log" guest-a
	show "$work/guest-b.log" guest-b
	guest_passed "$work/guest-a.log" guest || fail_with_log "$work/guest-a.log" "guest A"
	guest_passed "$work/guest-b.log" guest || fail_with_log "$work/guest-b.log" "guest B"
	;;

guest-death)
	# One host process drives it (vm/vmlive.c): it kills the first QEMU
	# itself (pid from -pidfile) at a random moment, asks for the second
	# boot with $work/restart, pauses and resumes the second through the
	# HMP monitor socket; we tell it with $work/guest-done that the
	# second QEMU has powered off.
	shm_files+=("$shm")
	seed=${PORTAL_VM_SEED:-$(((RANDOM << 15) | RANDOM))}
	stall_ms=${PORTAL_VM_STALL_MS:-1000}
	check_ms=50
	beat_ms=50
	dev=()
	host_args=(--peer-kind vm --stall-ms "$stall_ms" --check-ms "$check_ms" --seed "$seed"
		--qemu-pidfile "$work/qemu.pid" --monitor "$work/mon.sock" --signal-dir "$work")
	guest_args="portal.role=death-guest portal.beat-ms=$beat_ms portal.seed=$seed"
	wake_setup
	rm -f "$work/restart" "$work/guest-done" "$work/qemu.pid" "$work/mon.sock"
	say "host side: portal_vmpeer death-host, seed $seed, stall $stall_ms ms, check $check_ms ms, guest heartbeat every $beat_ms ms, waking by $wake"
	host_start "$work/host.log" "$bin/portal_vmpeer" death-host --create --uri "file:$shm" \
		--size "$ivshmem_size" --ready-file "$work/ready" --wait "$qemu_timeout" --tag host \
		"${host_args[@]}"
	wait_ready "$work/host.log"
	start_server
	t_boot=$(elapsed)
	ctl=(-pidfile "$work/qemu.pid" -monitor "unix:$work/mon.sock,server=on,wait=off")
	append="portal.scenario=$scenario $guest_args portal.uri=ivshmem: portal.wait=$qemu_timeout portal.timeout=$qemu_timeout"
	qemu_run "$work/guest-1.log" "$append" "${dev[@]}" "${ctl[@]}"
	pid1=$qemu_pid
	# The host kills it and asks for the next boot (within its detection
	# bound of a few seconds after the kill). A guest that ends by itself
	# (a panic) ends the wait too.
	gone=0
	while [ ! -e "$work/restart" ] && kill -0 "$host_pid" 2>/dev/null && [ "$gone" -lt 100 ]; do
		kill -0 "$pid1" 2>/dev/null || gone=$((gone + 1))
		sleep 0.1
	done
	wait "$pid1" || true
	t_restart=$(elapsed)
	[ -e "$work/restart" ] || kill "$host_pid" 2>/dev/null || true
	if [ -e "$work/restart" ]; then
		say "first guest killed; booting the second at ${t_restart}s"
		rm -f "$work/qemu.pid" "$work/mon.sock"
		qemu_run "$work/guest-2.log" "$append" "${dev[@]}" "${ctl[@]}"
		# A host that gave up leaves the guest paused: do not wait
		# for QEMU's own timeout then.
		while kill -0 "$qemu_pid" 2>/dev/null && kill -0 "$host_pid" 2>/dev/null; do
			sleep 0.1
		done
		kill -0 "$host_pid" 2>/dev/null || kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" || true
		touch "$work/guest-done"
	fi
	host_rc=0
	wait "$host_pid" || host_rc=$?
	show "$work/host.log" host
	show "$work/guest-1.log" guest-1
	[ -e "$work/guest-2.log" ] && show "$work/guest-2.log" guest-2
	[ "$host_rc" = 0 ] || fail_with_log "$work/host.log" "host side exited $host_rc$(
		[ "$host_rc" = 124 ] && echo " (killed by timeout after $qemu_timeout s)")"
	# The first guest produced and was killed: no verdict of its own.
	grep -q 'producing from #0 ' "$work/guest-1.log" ||
		fail_with_log "$work/guest-1.log" "first guest (never produced)"
	if grep -q 'PORTAL-VM-RESULT' "$work/guest-1.log"; then
		fail_with_log "$work/guest-1.log" "first guest (ended by itself, not killed)"
	fi
	if [ -e "$work/guest-2.log" ]; then
		if ! guest_passed "$work/guest-2.log" guest ||
			! grep -q 'PORTAL-VM\[guest\]: fenced:' "$work/guest-2.log"; then
			fail_with_log "$work/guest-2.log" "second guest (not fenced)"
		fi
	else
		verdict=1
	fi
	grep -h 'liveness: event=' "$work/host.log" | sed 's/^.*liveness:/vm: liveness:/' || true
	[ "$verdict" = 0 ] || [ ! -s "$work/ivs.log" ] || {
		echo "---- portal-ivshmem-server log"
		cat "$work/ivs.log"
	}
	;;

local)
	# Both processes inside one guest with two vCPUs, over shm: there.
	n=${msgs:-20000}
	t_boot=$(elapsed)
	smp=2 qemu_run "$work/guest.log" \
		"portal.scenario=local portal.uri=shm:portal-local portal.count=$n portal.rtt=$rtt portal.wake=$wake portal.peer-kind=process"
	wait "$qemu_pid" || true
	show "$work/guest.log" guest
	guest_passed "$work/guest.log" guest-a || fail_with_log "$work/guest.log" "guest A"
	guest_passed "$work/guest.log" guest-b || fail_with_log "$work/guest.log" "guest B"
	[ "$wake" = poll ] || [ "$(grep -c "doorbell kind=$wake " "$work/guest.log")" = 2 ] ||
		fail_with_log "$work/guest.log" "doorbell reports (kind $wake)"
	;;
esac

total=$(elapsed)
if [ "$verdict" = 0 ]; then
	say "$scenario: PASS (accelerator $accel, waking by $wake; $total s wall, ${t_boot}s of it before QEMU started)"
	exit 0
fi
say "$scenario: FAIL (accelerator $accel; $total s wall)"
exit 1
