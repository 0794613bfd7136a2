/* SPDX-License-Identifier: MIT */
/*
 * vmwake.c - how portal_vmpeer waits for its peer (struct vm_wake in
 * vmpeer.h): by polling, or by sleeping on a Portal doorbell that the peer
 * rings, one doorbell per direction.
 *
 *   --wake poll             spin, yield, then sleep in growing steps; no
 *                           doorbell (the default)
 *   --wake futex            futex doorbells: two processes on one kernel
 *                           (the "local" scenario, inside one guest)
 *   --wake ivshmem:SOCK     host: a client of portal-ivshmem-server at SOCK;
 *                           sleeps on its own vector-0 eventfd, rings the
 *                           guest's vector-0 eventfd (QEMU raises MSI-X)
 *   --wake ivshmem[:BDF]    guest: the ivshmem-doorbell device through VFIO
 *                           (bound to vfio-pci behind an IOMMU); sleeps on
 *                           the eventfd of MSI-X vector 0, rings the host
 *                           through the BAR0 Doorbell register. The region
 *                           is BAR2 as VFIO maps it (--uri is then only a
 *                           label). No fallback to polling: without VFIO and
 *                           MSI-X the run fails and says why.
 *   --wake stream:/PATH     a Unix stream socket at PATH (host: QEMU's
 *                           chardev socket of a virtio-serial port, connected
 *                           to with retries while QEMU starts) or a
 *                           character device (guest: /dev/vportNpM)
 *   --wake stream:NAME      guest: the virtio-serial port whose
 *                           /sys/class/virtio-ports/PORT/name is NAME
 *
 * The creator places doorbells "wake_a" (side A sleeps on it, side B rings
 * it) and "wake_b" with the kind's backend. Each side publishes its ivshmem
 * id in its control line (wake_id, id + 1) so the other can ring it. Every
 * waiter sleeps at once (spin_ns < 0): what is measured is the wake-up path,
 * and vm_wake_report() fails a run whose waiter never slept or whose
 * notifier never rang, so a run that quietly fell back to polling fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vm/vmpeer.h"

#define VIRTIO_PORTS "/sys/class/virtio-ports"
/* The ivshmem vector both sides use (QEMU's vectors= and the server's -n
 * may be larger). */
#define WAKE_VECTOR 0
/* Round-trip pacing: how long after the peer armed its doorbell we start. */
#define WAKE_SETTLE_NS 300000

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000 };

	nanosleep(&ts, NULL);
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* Spin a little, then yield, then sleep in growing steps up to 1 ms, so a
 * side that waits for a booting guest (or for a second TCG guest on the
 * same cores) does not take a core from it. */
void vm_poll_idle(struct vm_wake *w)
{
	unsigned n = w->spins++;
	struct timespec ts = { 0, 0 };

	if (w->spin_only || n < 256) {
		cpu_relax();
		return;
	}
	if (n < 512) {
		sched_yield();
		return;
	}
	ts.tv_nsec = n < 1024 ? 20000 : n < 2048 ? 100000 : 1000000;
	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* Parsing                                                             */
/* ------------------------------------------------------------------ */

int vm_wake_parse(struct vm_peer *p)
{
	const char *s = p->o.wake ? p->o.wake : "poll";
	struct vm_wake *w = &p->wake;

	*w = (struct vm_wake){ .name = s, .stream_fd = -1, .arg = "" };
	if (strcmp(s, "poll") == 0) {
		w->kind = VM_WAKE_POLL;
	} else if (strcmp(s, "futex") == 0) {
		w->kind = VM_WAKE_FUTEX;
	} else if (strncmp(s, "ivshmem", 7) == 0 && (s[7] == '\0' || s[7] == ':')) {
		w->kind = VM_WAKE_IVSHMEM;
		w->arg = s[7] ? s + 8 : "";
		/* A path names the server's socket (host); an empty argument or
		 * a PCI address names the device (guest). */
		w->ivs_host = w->arg[0] == '/' || w->arg[0] == '.';
	} else if (strncmp(s, "stream:", 7) == 0 && s[7]) {
		w->kind = VM_WAKE_STREAM;
		w->arg = s + 7;
	} else {
		vm_say(p, "unknown wake kind '%s' (poll, futex, ivshmem[:SOCK|:BDF], "
			  "stream:PATH|NAME)", s);
		return VM_USAGE;
	}
	return VM_PASS;
}

enum portal_doorbell_backend vm_wake_backend(const struct vm_wake *w)
{
	switch (w->kind) {
	case VM_WAKE_FUTEX:   return PORTAL_DOORBELL_FUTEX;
	case VM_WAKE_IVSHMEM: return PORTAL_DOORBELL_IVSHMEM;
	case VM_WAKE_STREAM:  return PORTAL_DOORBELL_STREAM;
	default:              return (enum portal_doorbell_backend)0;
	}
}

/* ------------------------------------------------------------------ */
/* Before the region: the guest's ivshmem device                       */
/* ------------------------------------------------------------------ */

int vm_wake_prepare(struct vm_peer *p)
{
	struct vm_wake *w = &p->wake;
	struct portal_ivshmem_guest_opts go = { .flags = PORTAL_IVSHMEM_GUEST_F_VFIO };
	double deadline = vm_now() + 10;
	int rc;

	if (w->kind != VM_WAKE_IVSHMEM || w->ivs_host)
		return VM_PASS;
	go.bdf = w->arg[0] ? w->arg : NULL;
	/* VFIO only: interrupts or nothing. IVPosition may read -1 for a
	 * moment after reset (-EAGAIN). */
	while ((rc = portal_ivshmem_guest_open(&go, &w->ivg)) == -EAGAIN && vm_now() < deadline)
		sleep_ms(50);
	if (rc) {
		vm_say(p, "ivshmem device through VFIO: %s (%s)", portal_strerror(rc),
		       rc == -ENODEV ? "no IOMMU group, group not viable, or no MSI-X: needs "
				       "q35 + intel-iommu, intel_iommu=on, the device bound to vfio-pci"
		       : rc == -ENOENT ? "no ivshmem device, or /dev/vfio missing"
				       : "see the portal log lines above");
		return VM_SETUP;
	}
	if (portal_ivshmem_guest_vectors(w->ivg) == 0) {
		vm_say(p, "ivshmem device has no MSI-X vector wired: no interrupts");
		return VM_SETUP;
	}
	vm_say(p, "ivshmem device: VFIO, id %u, %u MSI-X vector(s) wired to eventfds",
	       portal_ivshmem_guest_id(w->ivg), portal_ivshmem_guest_vectors(w->ivg));
	return VM_PASS;
}

void *vm_wake_region_mem(const struct vm_peer *p, size_t *len)
{
	if (!p->wake.ivg)
		return NULL;
	return portal_ivshmem_guest_shm(p->wake.ivg, len);
}

/* ------------------------------------------------------------------ */
/* The creator: two doorbells                                          */
/* ------------------------------------------------------------------ */

int vm_wake_create(struct vm_peer *p)
{
	enum portal_doorbell_backend b = vm_wake_backend(&p->wake);
	int rc;

	if (p->wake.kind == VM_WAKE_POLL)
		return 0;
	/* The owner recorded for a doorbell is its notifier side. */
	rc = portal_doorbell_create(p->reg, "wake_a", b, p->o.side_b);
	if (rc == 0)
		rc = portal_doorbell_create(p->reg, "wake_b", b, p->o.side_a);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

/* Connect to the Unix stream socket PATH, retrying while it does not
 * exist or nobody accepts yet (QEMU still starting). */
static int connect_unix(struct vm_peer *p, const char *path, double deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		vm_say(p, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		err = errno;
		close(fd);
		if ((err != ENOENT && err != ECONNREFUSED) || vm_now() > deadline) {
			vm_say(p, "connect %s: %s", path, strerror(err));
			return -err;
		}
		sleep_ms(20);
	}
}

/* The /dev node of the virtio-serial port named NAME, into BUF. */
static int find_port(const char *name, char *buf, size_t len)
{
	char path[PATH_MAX], got[256];
	struct dirent *e;
	DIR *d = opendir(VIRTIO_PORTS);
	int rc = -ENOENT;
	ssize_t n;
	int fd;

	if (!d)
		return -ENOENT;
	while (rc == -ENOENT && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/name", VIRTIO_PORTS, e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, got, sizeof(got) - 1);
		close(fd);
		if (n <= 0)
			continue;
		got[n] = '\0';
		got[strcspn(got, "\n")] = '\0';
		if (strcmp(got, name) == 0 &&
		    snprintf(buf, len, "/dev/%s", e->d_name) < (int)len)
			rc = 0;
	}
	closedir(d);
	return rc;
}

static int open_stream(struct vm_peer *p, double deadline)
{
	const char *arg = p->wake.arg;
	char dev[PATH_MAX];
	struct stat st;
	int fd, rc;

	if (arg[0] != '/') {
		/* A port name: wait for the port (the module is loading, the
		 * node appearing), then open its node. */
		while ((rc = find_port(arg, dev, sizeof(dev))) == -ENOENT || access(dev, F_OK) != 0) {
			if (vm_now() > deadline) {
				vm_say(p, "no virtio-serial port named '%s' under %s (module "
					  "virtio_console loaded? -device virtserialport,name=%s?)",
				       arg, VIRTIO_PORTS, arg);
				return VM_SETUP;
			}
			sleep_ms(50);
		}
		arg = dev;
	}
	/* A socket, or a path outside /dev that does not exist yet: a socket
	 * QEMU has still to create. Anything else: a device to open. */
	if (stat(arg, &st) == 0 ? S_ISSOCK(st.st_mode)
				: errno == ENOENT && strncmp(arg, "/dev/", 5) != 0) {
		fd = connect_unix(p, arg, deadline);
	} else {
		fd = open(arg, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	if (fd < 0) {
		vm_say(p, "stream %s: %s", arg, strerror(-fd));
		return VM_SETUP;
	}
	p->wake.stream_fd = fd;
	/* A virtio-serial port drops what is written before the host side is
	 * there; a socket is connected already. */
	rc = portal_doorbell_stream_wait_connected(fd, (int64_t)((deadline - vm_now()) * 1e9));
	if (rc) {
		vm_say(p, "stream %s: the other end did not connect: %s", arg, portal_strerror(rc));
		return VM_TIMEOUT;
	}
	vm_say(p, "stream doorbell over %s", arg);
	return VM_PASS;
}

/* ------------------------------------------------------------------ */
/* After the region: our waiter, then the peer and our notifier         */
/* ------------------------------------------------------------------ */

static int open_doorbell(struct vm_peer *p, const char *name, enum portal_doorbell_role role,
			 const struct portal_doorbell_opts *o, portal_doorbell_t **out)
{
	double deadline = vm_now() + p->o.wait_s;
	int rc;

	while ((rc = portal_doorbell_open(p->reg, name, role, o, out)) == -ENOENT &&
	       vm_now() < deadline)
		sleep_ms(10);
	if (rc) {
		vm_say(p, "doorbell %s (%s): %s", name,
		       role == PORTAL_DOORBELL_WAITER ? "waiter" : "notifier", portal_strerror(rc));
		return VM_SETUP;
	}
	if (portal_doorbell_get_backend(*out) != vm_wake_backend(&p->wake)) {
		vm_say(p, "doorbell %s has backend %u, --wake %s wants %u", name,
		       (unsigned)portal_doorbell_get_backend(*out), p->wake.name,
		       (unsigned)vm_wake_backend(&p->wake));
		return VM_SETUP;
	}
	return VM_PASS;
}

static struct portal_doorbell_opts base_opts(const struct vm_wake *w)
{
	return (struct portal_doorbell_opts){
		.eventfd = -1,
		.stream_fd = w->stream_fd,
		.spin_ns = -1, /* sleep at once: the wake-up path is the point */
		.ivshmem_guest = w->ivg,
		.ivshmem_vector = WAKE_VECTOR,
	};
}

/* The host's memory must be the server's: the same file. */
static int same_memory(struct vm_peer *p)
{
	struct stat a, b;
	int rfd = portal_region_fd(p->reg);

	if (rfd < 0 || fstat(rfd, &a) != 0 ||
	    fstat(portal_ivshmem_client_shm_fd(p->wake.ivc), &b) != 0 || a.st_dev != b.st_dev ||
	    a.st_ino != b.st_ino) {
		vm_say(p, "the ivshmem server's memory is not the region's file (start the "
			  "server with -m on the region's file)");
		return VM_SETUP;
	}
	return VM_PASS;
}

int vm_wake_attach(struct vm_peer *p, bool is_a)
{
	struct vm_wake *w = &p->wake;
	struct portal_doorbell_opts o;
	double deadline = vm_now() + p->o.wait_s;
	uint32_t id = 0;
	int rc;

	if (w->kind == VM_WAKE_POLL)
		return VM_PASS;
	w->is_a = is_a;
	if (w->kind == VM_WAKE_IVSHMEM && w->ivs_host) {
		rc = portal_ivshmem_client_connect(w->arg, 1, (int64_t)(p->o.wait_s * 1e9), &w->ivc);
		if (rc) {
			vm_say(p, "ivshmem server %s: %s", w->arg, portal_strerror(rc));
			return VM_SETUP;
		}
		rc = same_memory(p);
		if (rc)
			return rc;
		id = portal_ivshmem_client_id(w->ivc);
		vm_say(p, "ivshmem server %s: our id %u", w->arg, id);
	} else if (w->kind == VM_WAKE_IVSHMEM) {
		id = portal_ivshmem_guest_id(w->ivg);
	} else if (w->kind == VM_WAKE_STREAM) {
		rc = open_stream(p, deadline);
		if (rc)
			return rc;
	}
	/* Release: published with vm_set, read by the peer after our phase 1. */
	vm_set(&p->ctl[p->side].wake_id, (uint64_t)id + 1);

	o = base_opts(w);
	if (w->ivc) {
		o.eventfd = portal_ivshmem_client_eventfd(w->ivc, id, WAKE_VECTOR);
		if (o.eventfd < 0) {
			vm_say(p, "ivshmem: no eventfd of our own: %s", portal_strerror(o.eventfd));
			return VM_SETUP;
		}
	}
	return open_doorbell(p, is_a ? "wake_a" : "wake_b", PORTAL_DOORBELL_WAITER, &o,
			     &w->waiter);
}

int vm_wake_peer(struct vm_peer *p, uint32_t peer_side, double deadline)
{
	struct vm_wake *w = &p->wake;
	struct portal_doorbell_opts o;
	uint64_t wid;
	uint32_t peer = 0;
	int rc;

	if (w->kind == VM_WAKE_POLL)
		return VM_PASS;
	o = base_opts(w);
	if (w->kind == VM_WAKE_IVSHMEM) {
		/* The peer wrote its id before its phase 1, which we have seen. */
		wid = vm_peer_field(p, peer_side, offsetof(struct ctl_line, wake_id));
		if (wid == 0 || wid - 1 > PORTAL_IVSHMEM_MAX_PEER_ID) {
			vm_say(p, "peer published no ivshmem id (%llu)", (unsigned long long)wid);
			return VM_SETUP;
		}
		peer = (uint32_t)(wid - 1);
		if (w->ivc) {
			/* Its eventfds came from the server when it joined:
			 * apply the server's messages until we have them. */
			while ((rc = portal_ivshmem_client_eventfd(w->ivc, peer, WAKE_VECTOR)) < 0) {
				if (vm_now() > deadline) {
					vm_say(p, "the ivshmem server never announced peer %u", peer);
					return VM_TIMEOUT;
				}
				rc = portal_ivshmem_client_process(w->ivc, NULL, 100000000);
				if (rc < 0 && rc != PORTAL_EPROTO) {
					vm_say(p, "ivshmem server: %s", portal_strerror(rc));
					return VM_SETUP;
				}
			}
			o.eventfd = rc;
		} else {
			o.ivshmem_peer = peer;
		}
		vm_say(p, "ivshmem: the peer is id %u", peer);
	}
	rc = open_doorbell(p, w->is_a ? "wake_b" : "wake_a", PORTAL_DOORBELL_NOTIFIER, &o,
			   &w->notifier);
	if (rc == VM_PASS) {
		struct portal_object_info info;

		/* For vm_wake_peer_armed(): the peer's `armed` word, read as a
		 * hint only. */
		if (portal_region_lookup(p->reg, w->is_a ? "wake_b" : "wake_a",
					 PORTAL_OBJ_DOORBELL, &info) == 0 &&
		    info.size >= sizeof(struct portal_doorbell_shm))
			w->peer_armed = &((struct portal_doorbell_shm *)info.addr)->armed;
	}
	return rc;
}

bool vm_wake_peer_armed(struct vm_peer *p, double max_s)
{
	const struct timespec settle = { 0, WAKE_SETTLE_NS };
	double end = vm_now() + max_s;
	unsigned n = 0;

	if (!p->wake.peer_armed)
		return false;
	/* Relaxed: a hint that decides when to start the next round trip,
	 * nothing is read because of it. */
	while (atomic_load_explicit(p->wake.peer_armed, memory_order_relaxed) == 0) {
		if ((++n & 63) == 0 && vm_now() > end)
			return false;
		sched_yield();
	}
	/* Armed is "about to sleep": give it the moment it takes to get from
	 * its re-check into the kernel (tens of us under TCG), so that the
	 * round trip finds it really asleep. */
	nanosleep(&settle, NULL);
	return true;
}

/* ------------------------------------------------------------------ */
/* Waiting and ringing                                                  */
/* ------------------------------------------------------------------ */

int vm_wake_wait(struct vm_peer *p, portal_doorbell_ready_fn ready, void *arg, double timeout_s)
{
	int rc = portal_doorbell_wait(p->wake.waiter, ready, arg, (int64_t)(timeout_s * 1e9));

	if (rc == 0)
		return VM_PASS;
	if (rc == -ETIMEDOUT) {
		vm_say(p, "doorbell: no wake-up within %.1f s (a lost wake-up, or the peer stalled)",
		       timeout_s);
		return VM_TIMEOUT;
	}
	vm_say(p, "doorbell wait: %s", portal_strerror(rc));
	return VM_FAIL;
}

int vm_wake_kick(struct vm_peer *p)
{
	int rc;

	if (!p->wake.notifier)
		return VM_PASS;
	rc = portal_doorbell_notify(p->wake.notifier);
	if (rc >= 0)
		return VM_PASS;
	vm_say(p, "doorbell notify: %s", portal_strerror(rc));
	return VM_FAIL;
}

int vm_wake_report(struct vm_peer *p)
{
	struct portal_doorbell_stats ws, ns;

	if (p->wake.kind == VM_WAKE_POLL)
		return VM_PASS;
	if (!p->wake.waiter || !p->wake.notifier)
		return VM_FAIL;
	portal_doorbell_stats(p->wake.waiter, &ws);
	portal_doorbell_stats(p->wake.notifier, &ns);
	vm_say(p, "doorbell kind=%s waits=%llu sleeps=%llu spurious=%llu timeouts=%llu "
		  "notifies=%llu rings=%llu",
	       p->wake.kind == VM_WAKE_FUTEX ? "futex" : p->wake.kind == VM_WAKE_IVSHMEM ? "ivshmem"
											: "stream",
	       (unsigned long long)ws.waits, (unsigned long long)ws.sleeps,
	       (unsigned long long)ws.spurious, (unsigned long long)ws.timeouts,
	       (unsigned long long)ns.notifies, (unsigned long long)ns.rings);
	if (ws.sleeps == 0 || ns.rings == 0) {
		vm_say(p, "doorbell: %s; the wake-up path was not exercised",
		       ws.sleeps == 0 ? "we never slept" : "we never rang the peer");
		return VM_FAIL;
	}
	return VM_PASS;
}

void vm_wake_close(struct vm_peer *p)
{
	struct vm_wake *w = &p->wake;

	portal_doorbell_detach(w->notifier);
	portal_doorbell_detach(w->waiter);
	w->notifier = w->waiter = NULL;
	if (w->stream_fd >= 0)
		close(w->stream_fd);
	w->stream_fd = -1;
	portal_ivshmem_client_close(w->ivc);
	w->ivc = NULL;
}

/* After the region is detached: the device holds the region's memory. */
void vm_wake_close_device(struct vm_peer *p)
{
	portal_ivshmem_guest_close(p->wake.ivg);
	p->wake.ivg = NULL;
}
