/* SPDX-License-Identifier: MIT */
/*
 * region_test.c - regions: the shm, file, memfd and fd backends; create,
 * attach, detach, destroy; the directory; participant slots; and every
 * attach error, produced by corrupting a real region and attaching to it
 * (file backend), then validating a malloc'd copy of the same bytes
 * (portal_region_validate, portal_region_attach_mem).
 *
 * Files live under a mkdtemp directory and shm names carry the pid, so
 * concurrent runs do not collide; everything is removed at the end.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <zlib.h>

#include "tests/test_util.h"

#include "portal/region.h"

static char tmpdir[256];

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
/* ------------------------------------------------------------------ */

static uint32_t crc(const void *p, size_t n)
{
	return (uint32_t)crc32(0L, p, (uInt)n);
}

static struct portal_region_hdr *hdr(void *base)
{
	return base;
}

static struct portal_dir_entry *entry(void *base, uint32_t i)
{
	return (struct portal_dir_entry *)((uint8_t *)base + hdr(base)->dir_offset) + i;
}

static void fix_hdr_crc(void *base)
{
	hdr(base)->hdr_checksum = crc(base, offsetof(struct portal_region_hdr, hdr_checksum));
}

static void fix_entry_crc(void *base, uint32_t i)
{
	struct portal_dir_entry *e = entry(base, i);

	e->checksum = crc(e, offsetof(struct portal_dir_entry, checksum));
}

static const char *file_uri(char *buf, size_t cap, const char *tag)
{
	char name[96];

	snprintf(buf, cap, "file:%s/%s", tmpdir, tu_unique_name(name, sizeof(name), tag));
	return buf;
}

/* Every shm name handed out, so the group teardown can remove what a
 * failed test left behind. */
static char *shm_names[256];
static size_t shm_count;

static const char *shm_uri(char *buf, size_t cap, const char *tag)
{
	char name[96];

	snprintf(buf, cap, "shm:%s", tu_unique_name(name, sizeof(name), tag));
	if (shm_count < TU_ARRAY_SIZE(shm_names))
		shm_names[shm_count++] = strdup(buf);
	return buf;
}

static int setup_group(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/portal-region-test-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_group(void **state)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char path[512];

	(void)state;
	for (size_t i = 0; i < shm_count; i++) {
		portal_region_destroy(shm_names[i]); /* -ENOENT when the test cleaned up */
		free(shm_names[i]);
	}
	shm_count = 0;
	if (d) {
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				snprintf(path, sizeof(path), "%s/%s", tmpdir, de->d_name);
				unlink(path);
			}
		closedir(d);
	}
	return rmdir(tmpdir);
}

static bool shm_exists(const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	return stat(path, &st) == 0;
}

/* ------------------------------------------------------------------ */
/* Backends and life cycle                                              */
/* ------------------------------------------------------------------ */

enum backend { B_SHM, B_DEFAULT, B_FILE, B_MEMFD };

static void lifecycle(enum backend b)
{
	struct portal_region_opts co = { .size = 200000, .dir_capacity = 16, .part_count = 4,
					 .region_id = 0x1234, .ident = "creator" };
	struct portal_region_opts ao = { .side = 2, .ident = "peer" };
	char uri[512], auri[512], name[96];
	struct portal_object_info ci, ai;
	struct portal_participant_info pi;
	portal_region_t *c, *a;
	struct portal_region_hdr *h;

	switch (b) {
	case B_SHM:
		shm_uri(uri, sizeof(uri), "life");
		snprintf(auri, sizeof(auri), "%s", uri);
		break;
	case B_DEFAULT: /* no scheme: shm */
		tu_unique_name(name, sizeof(name), "dflt");
		if (shm_count < TU_ARRAY_SIZE(shm_names))
			shm_names[shm_count++] = strdup(name);
		snprintf(uri, sizeof(uri), "%s", name);
		snprintf(auri, sizeof(auri), "shm:%s", name);
		break;
	case B_FILE:
		file_uri(uri, sizeof(uri), "life");
		snprintf(auri, sizeof(auri), "%s", uri);
		break;
	case B_MEMFD:
		snprintf(uri, sizeof(uri), "memfd:%s", tu_unique_name(name, sizeof(name), "life"));
		break;
	}
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	if (b == B_MEMFD)
		snprintf(auri, sizeof(auri), "fd:%d", portal_region_fd(c));
	if (b == B_DEFAULT)
		assert_true(shm_exists(name));

	/* The creator's view: side 0, size rounded up to a page. */
	assert_int_equal(portal_region_size(c), 200704);
	assert_int_equal(portal_region_side(c), 0);
	assert_int_equal(portal_region_id(c), 0x1234);
	assert_true(portal_region_fd(c) >= 0);
	h = portal_region_base(c);
	assert_int_equal(h->magic, PORTAL_REGION_MAGIC);
	assert_int_equal(h->version_major, PORTAL_REGION_VERSION_MAJOR);
	assert_int_equal(h->region_size, 200704);
	assert_int_equal(h->epoch, portal_region_epoch(c));
	assert_int_equal(h->dir_capacity, 16);
	assert_int_equal(h->part_count, 4);
	assert_int_equal(h->data_offset % 4096, 0);
	assert_int_equal(h->hdr_checksum, crc(h, 60));
	assert_int_equal(portal_region_validate(h, portal_region_size(c)), 0);
	assert_int_equal(portal_region_alloc(c, "obj", PORTAL_OBJ_USER, 1000, 0, 0, NULL, &ci), 0);
	memset(ci.addr, 0x5A, 1000);

	/* The attacher's view of the same memory, through its own mapping. */
	assert_int_equal(portal_region_attach(auri, &ao, &a), 0);
	assert_int_equal(portal_region_side(a), 2);
	assert_int_equal(portal_region_epoch(a), portal_region_epoch(c));
	assert_int_equal(portal_region_id(a), 0x1234);
	assert_int_equal(portal_region_size(a), 200704);
	assert_int_equal(portal_region_lookup(a, "obj", 0, &ai), 0);
	assert_ptr_equal(ai.addr, (uint8_t *)portal_region_base(a) + ci.offset);
	assert_ptr_not_equal(portal_region_base(a), portal_region_base(c));
	assert_int_equal(((uint8_t *)ai.addr)[999], 0x5A);
	((uint8_t *)ai.addr)[0] = 0xC3;
	assert_int_equal(((uint8_t *)ci.addr)[0], 0xC3);
	assert_int_equal(portal_region_participant(c, 2, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	assert_string_equal(pi.ident, "peer");
	assert_int_equal(portal_region_detach(a), 0);
	assert_int_equal(portal_region_participant(c, 2, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_GONE);
	assert_int_equal(portal_region_detach(c), 0);
	assert_int_equal(portal_region_detach(NULL), 0);

	if (b == B_MEMFD) {
		assert_int_equal(portal_region_destroy(uri), -EOPNOTSUPP);
		return; /* the memfd went away with its last fd */
	}
	/* The backing outlives the handles. */
	assert_int_equal(portal_region_attach(auri, NULL, &a), 0);
	assert_int_equal(portal_region_lookup(a, "obj", PORTAL_OBJ_USER, &ai), 0);
	assert_int_equal(((uint8_t *)ai.addr)[0], 0xC3);
	portal_region_detach(a);
	assert_int_equal(portal_region_destroy(uri), 0);
	if (b == B_DEFAULT)
		assert_false(shm_exists(name));
	assert_int_equal(portal_region_attach(auri, NULL, &a), -ENOENT);
	assert_int_equal(portal_region_destroy(uri), -ENOENT);
}

static void t_lifecycle_shm(void **state) { (void)state; lifecycle(B_SHM); }
static void t_lifecycle_default(void **state) { (void)state; lifecycle(B_DEFAULT); }
static void t_lifecycle_file(void **state) { (void)state; lifecycle(B_FILE); }
static void t_lifecycle_memfd(void **state) { (void)state; lifecycle(B_MEMFD); }

/* Default options: 1 MiB, 64 directory entries, 2 participants, side 1. */
static void t_defaults(void **state)
{
	char uri[256];
	portal_region_t *c, *a;
	struct portal_region_hdr *h;

	(void)state;
	shm_uri(uri, sizeof(uri), "dflt");
	assert_int_equal(portal_region_create(uri, NULL, &c), 0);
	h = portal_region_base(c);
	assert_int_equal(portal_region_size(c), 1 << 20);
	assert_int_equal(h->dir_capacity, 64);
	assert_int_equal(h->part_count, 2);
	assert_int_not_equal(h->region_id, 0);
	assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
	assert_int_equal(portal_region_side(a), 1);
	portal_region_detach(a);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* F_EXCL refuses an existing region; without it, create starts afresh
 * (new epoch, empty directory). A file can be re-laid with size 0. */
static void t_excl_recreate(void **state)
{
	struct portal_region_opts o = { .size = 65536 };
	struct portal_region_opts x = { .size = 65536, .flags = PORTAL_REGION_F_EXCL };
	struct portal_region_opts keep = { .size = 0 };
	struct portal_object_info info;
	portal_region_t *r, *r2;
	char suri[256], furi[512];
	uint64_t epoch;

	(void)state;
	shm_uri(suri, sizeof(suri), "excl");
	file_uri(furi, sizeof(furi), "excl");
	/* A new file with size 0: nothing to keep. */
	assert_int_equal(portal_region_create(furi, &keep, &r), -EINVAL);
	unlink(furi + 5);
	for (int i = 0; i < 2; i++) {
		const char *uri = i ? furi : suri;

		assert_int_equal(portal_region_create(uri, &x, &r), 0);
		epoch = portal_region_epoch(r);
		assert_int_equal(portal_region_alloc(r, "a", PORTAL_OBJ_USER, 64, 0, 0, NULL, &info), 0);
		assert_int_equal(portal_region_create(uri, &x, &r2), -EEXIST);
		portal_region_detach(r);
		assert_int_equal(portal_region_create(uri, &o, &r), 0);
		assert_int_not_equal(portal_region_epoch(r), epoch);
		assert_int_equal(portal_region_lookup(r, "a", 0, &info), -ENOENT);
		portal_region_detach(r);
	}
	/* file: with size 0 over an existing file keeps its size. */
	assert_int_equal(portal_region_create(furi, &keep, &r), 0);
	assert_int_equal(portal_region_size(r), 65536);
	portal_region_detach(r);
	assert_int_equal(portal_region_destroy(suri), 0);
	assert_int_equal(portal_region_destroy(furi), 0);
}

/* ------------------------------------------------------------------ */
/* Participant slots and liveness                                       */
/* ------------------------------------------------------------------ */

struct holder {
	char uri[256];
	uint32_t side;
	int up[2];   /* child -> parent: attached (1 byte: 0 ok) */
	int down[2]; /* parent -> child: detach now (or EOF) */
	bool clean;  /* detach before exiting */
};

static int holder_fn(void *arg)
{
	struct holder *h = arg;
	struct portal_region_opts o = { .side = h->side, .ident = "child" };
	portal_region_t *r;
	char ok, go;
	int rc = portal_region_attach(h->uri, &o, &r);

	ok = rc == 0 ? 0 : 1;
	if (write(h->up[1], &ok, 1) != 1 || rc)
		return 1;
	if (read(h->down[0], &go, 1) < 0)
		return 2;
	if (h->clean)
		portal_region_detach(r);
	return 0; /* _exit: an unclean exit leaves the slot ACTIVE */
}

static pid_t start_holder(struct holder *h)
{
	char ok = 9;
	pid_t pid;

	assert_int_equal(pipe(h->up), 0);
	assert_int_equal(pipe(h->down), 0);
	pid = tu_spawn_bounded(holder_fn, h, 20);
	assert_true(pid > 0);
	close(h->up[1]);
	close(h->down[0]);
	assert_int_equal(read(h->up[0], &ok, 1), 1);
	assert_int_equal(ok, 0);
	return pid;
}

static void stop_holder(struct holder *h, pid_t pid)
{
	assert_int_equal(write(h->down[1], "x", 1), 1);
	assert_int_equal(tu_wait_bounded(pid), 0);
	close(h->up[0]);
	close(h->down[1]);
}

/* -EBUSY while a live process holds the slot; free again after it
 * detaches; and a slot left ACTIVE by a dead process is taken over. */
static void t_busy(void **state)
{
	struct portal_region_opts co = { .size = 65536, .part_count = 3 };
	struct portal_region_opts s1 = { .side = 1, .ident = "me" };
	struct portal_region_opts s2 = { .side = 2 };
	struct portal_participant_info pi;
	struct holder h = { .side = 1, .clean = true };
	portal_region_t *c, *r, *r2;
	pid_t pid;

	(void)state;
	shm_uri(h.uri, sizeof(h.uri), "busy");
	assert_int_equal(portal_region_create(h.uri, &co, &c), 0);

	pid = start_holder(&h);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	assert_int_equal(pi.pid, (uint64_t)pid);
	assert_string_equal(pi.ident, "child");
	assert_int_equal(portal_region_attach(h.uri, &s1, &r), -EBUSY);
	assert_int_equal(portal_region_attach(h.uri, &s2, &r2), 0); /* another slot is free */
	stop_holder(&h, pid);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_GONE);
	assert_int_equal(portal_region_attach(h.uri, &s1, &r), 0);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.pid, (uint64_t)getpid());
	assert_string_equal(pi.ident, "me");
	portal_region_detach(r);

	/* The holder dies without detaching: its slot stays ACTIVE, with a
	 * pid that no longer runs, and is taken over. */
	h.clean = false;
	pid = start_holder(&h);
	stop_holder(&h, pid);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	assert_int_equal(pi.pid, (uint64_t)pid);
	assert_int_equal(portal_region_attach(h.uri, &s1, &r), 0);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.pid, (uint64_t)getpid());
	portal_region_detach(r);
	portal_region_detach(r2);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(h.uri), 0);
}

/* ---- liveness ---- */

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint32_t peer_state(portal_peer_watch_t *w, uint32_t *method)
{
	struct portal_peer_status st;

	assert_int_equal(portal_region_watch_status(w, &st), 0);
	if (method)
		*method = st.method;
	return st.state;
}

/* Same kernel: the OS lock says alive while the holder runs, dead the
 * moment it exits without detaching, gone when it detaches; the dead slot
 * is taken over with a new epoch (RESTARTED), even when a live process now
 * has the old pid; a live holder cannot be displaced. */
static void t_liveness_lock(void **state)
{
	struct portal_region_opts co = { .size = 65536, .part_count = 3 };
	struct portal_region_opts s1 = { .side = 1 };
	struct portal_participant_info pi;
	struct portal_peer_status st;
	struct holder h = { .side = 1, .clean = false };
	struct portal_participant *slot;
	portal_peer_watch_t *w;
	portal_region_t *c, *r;
	struct pollfd pf;
	uint32_t m;
	pid_t pid;

	(void)state;
	shm_uri(h.uri, sizeof(h.uri), "lock");
	assert_int_equal(portal_region_create(h.uri, &co, &c), 0);
	assert_int_equal(portal_region_participant(c, 0, &pi), 0);
	assert_true(pi.flags & PORTAL_PART_F_OSLOCK);
	assert_true(pi.lock_key != 0);

	pid = start_holder(&h);
	assert_int_equal(portal_region_watch_open(c, 1, NULL, &w), 0);
	assert_int_equal(peer_state(w, &m), PORTAL_PEER_ALIVE);
	assert_int_equal(m, PORTAL_LIVENESS_BY_LOCK);
	assert_int_equal(portal_region_attach(h.uri, &s1, &r), -EBUSY);
	/* A read-only observer tests the lock too. */
	{
		struct portal_region_opts ro = { .flags = PORTAL_REGION_F_READONLY };
		portal_peer_watch_t *ow;
		portal_region_t *obs;

		assert_int_equal(portal_region_attach(h.uri, &ro, &obs), 0);
		assert_int_equal(portal_region_watch_open(obs, 1, NULL, &ow), 0);
		assert_int_equal(peer_state(ow, &m), PORTAL_PEER_ALIVE);
		assert_int_equal(m, PORTAL_LIVENESS_BY_LOCK);
		portal_region_watch_close(ow);
		portal_region_detach(obs);
	}
	/* Re-creating under a live creator (its side-0 lock) is refused
	 * before anything is written. */
	{
		uint64_t epoch = portal_region_epoch(c);

		assert_int_equal(portal_region_create(h.uri, &co, &r), -EBUSY);
		assert_int_equal(portal_region_validate(portal_region_base(c), 65536), 0);
		assert_int_equal(((struct portal_region_hdr *)portal_region_base(c))->epoch, epoch);
		assert_int_equal(portal_region_participant(c, 1, &pi), 0);
		assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	}
	stop_holder(&h, pid); /* exits without detaching */
	assert_int_equal(peer_state(w, &m), PORTAL_PEER_DEAD);
	assert_int_equal(m, PORTAL_LIVENESS_BY_LOCK);
	if (portal_region_watch_fd(w) >= 0) { /* the pidfd fired with the exit */
		pf.fd = portal_region_watch_fd(w);
		pf.events = POLLIN;
		assert_int_equal(poll(&pf, 1, 0), 1);
	} else {
		print_message("note: no pidfd here (kernel < 5.3 or another pid namespace)\n");
	}

	/* The dead owner's pid now names a live process (init): the lock,
	 * not the pid, decides. */
	slot = (struct portal_participant *)((uint8_t *)portal_region_base(c) +
					     PORTAL_REGION_PART_OFFSET) + 1;
	slot->pid = 1;
	assert_int_equal(portal_region_attach(h.uri, &s1, &r), 0);
	assert_int_equal(portal_region_watch_status(w, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_RESTARTED);
	assert_int_not_equal(st.epoch, st.watched_epoch);
	assert_int_equal(portal_region_watch_rearm(w), 0);
	assert_int_equal(peer_state(w, &m), PORTAL_PEER_ALIVE); /* our own handle holds it */
	assert_int_equal(portal_region_check_self(r), 0);
	portal_region_detach(r);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_GONE);

	/* A clean detach of another process is GONE, never DEAD. */
	h.clean = true;
	pid = start_holder(&h);
	assert_int_equal(portal_region_watch_rearm(w), 0);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_ALIVE);
	stop_holder(&h, pid);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_GONE);

	/* Methods the caller forbids are not used: no lock, no heartbeat. */
	portal_region_watch_close(w);
	{
		struct portal_liveness_opts lo = { .methods = PORTAL_LIVENESS_HEARTBEAT };

		assert_int_equal(portal_region_watch_open(c, 0, &lo, &w), 0);
		assert_int_equal(peer_state(w, &m), PORTAL_PEER_ALIVE);
		assert_int_equal(m, PORTAL_LIVENESS_NONE);
		assert_int_equal(portal_region_watch_fd(w), -1);
		portal_region_watch_close(w);
	}
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(h.uri), 0);
}

/* Across a VM boundary (F_VM: kind VM, pid 0, no lock): the heartbeat
 * decides, on the watcher's clock; a restart is seen by its epoch, and
 * the old incarnation is fenced. */
static void t_liveness_heartbeat(void **state)
{
	struct portal_region_opts co = { .size = 65536 };
	struct portal_region_opts vo = { .side = 1, .flags = PORTAL_REGION_F_VM, .ident = "guest" };
	struct portal_liveness_opts lo = { .stall_ns = 150 * 1000000 }; /* >> scheduling gaps */
	struct portal_participant_info pi;
	struct portal_peer_status st;
	portal_peer_watch_t *w;
	portal_region_t *c, *a, *b;
	uint64_t hb, old_epoch;
	uint32_t m;
	char uri[256];
	int64_t t0;

	(void)state;
	shm_uri(uri, sizeof(uri), "beat");
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_attach(uri, &vo, &a), 0);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.kind, PORTAL_PART_VM);
	assert_int_equal(pi.pid, 0);
	assert_int_equal(pi.flags, 0);
	assert_int_equal(pi.lock_key, 0);

	assert_int_equal(portal_region_watch_open(c, 1, &lo, &w), 0);
	assert_int_equal(portal_region_watch_fd(w), -1);
	/* Not heartbeating yet: nothing to judge by. */
	assert_int_equal(peer_state(w, &m), PORTAL_PEER_ALIVE);
	assert_int_equal(m, PORTAL_LIVENESS_NONE);
	assert_int_equal(portal_region_heartbeat(a), 0);
	assert_int_equal(peer_state(w, &m), PORTAL_PEER_ALIVE);
	assert_int_equal(m, PORTAL_LIVENESS_BY_HEARTBEAT);
	t0 = mono_ns();
	while (peer_state(w, NULL) == PORTAL_PEER_ALIVE)
		sleep_ms(2);
	assert_true(mono_ns() - t0 >= lo.stall_ns);
	assert_int_equal(portal_region_watch_status(w, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_DEAD);
	assert_true(st.stalled_ns >= lo.stall_ns);
	assert_int_equal(portal_region_heartbeat(a), 0); /* it moves again */
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_ALIVE);

	/* The helper thread keeps it alive well past the stall. */
	assert_int_equal(portal_region_heartbeat_start(a, 2 * 1000000), 0);
	assert_int_equal(portal_region_heartbeat_start(a, 0), -EALREADY);
	for (int i = 0; i < 20; i++) {
		sleep_ms(15);
		assert_int_equal(peer_state(w, NULL), PORTAL_PEER_ALIVE);
	}

	/* The guest is paused (simulated: its thread keeps running, but a
	 * new incarnation takes the side over once the old one is judged
	 * dead). The VM slot (pid 0) is taken over with a new epoch. */
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	old_epoch = pi.epoch;
	assert_int_equal(portal_region_attach(uri, &vo, &b), 0);
	assert_int_equal(portal_region_watch_status(w, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_RESTARTED);
	assert_int_equal(st.watched_epoch, old_epoch);
	assert_int_not_equal(st.epoch, old_epoch);
	/* The old incarnation is fenced: its calls fail and write nothing;
	 * its heartbeat thread stops by itself. */
	assert_int_equal(portal_region_heartbeat(a), PORTAL_ESTALE);
	assert_int_equal(portal_region_check_self(a), PORTAL_ESTALE);
	sleep_ms(10);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	hb = pi.heartbeat;
	sleep_ms(20);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.heartbeat, hb); /* nobody beats for b */
	portal_region_detach(a); /* leaves the new owner's slot alone */
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	assert_int_not_equal(pi.epoch, old_epoch);
	assert_int_equal(portal_region_check_self(b), 0);
	assert_int_equal(portal_region_watch_rearm(w), 0);
	assert_int_equal(portal_region_heartbeat(b), 0);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_ALIVE);
	portal_region_detach(b);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_GONE);
	portal_region_watch_close(w);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

struct racer {
	char uri[256];
	int up, down, down_w;
};

static int racer_fn(void *arg)
{
	struct racer *x = arg;
	struct portal_region_opts o = { .side = 1 };
	portal_region_t *r;
	char won, go;

	close(x->down_w); /* so the parent's close reaches us as EOF */
	won = portal_region_attach(x->uri, &o, &r) == 0;
	if (write(x->up, &won, 1) != 1)
		return 1;
	if (read(x->down, &go, 1) < 0)
		return 2;
	return 0;
}

/* Attachers racing for one slot (and for a dead owner's slot): exactly
 * one wins each round. */
static void t_liveness_race(void **state)
{
	struct portal_region_opts co = { .size = 65536 };
	struct racer x;
	portal_region_t *c;
	pid_t pids[6];
	int up[2], down[2], wins;

	(void)state;
	shm_uri(x.uri, sizeof(x.uri), "race");
	assert_int_equal(portal_region_create(x.uri, &co, &c), 0);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(pipe(up), 0);
		assert_int_equal(pipe(down), 0);
		x.up = up[1];
		x.down = down[0];
		x.down_w = down[1];
		for (int i = 0; i < 6; i++)
			assert_true((pids[i] = tu_spawn_bounded(racer_fn, &x, 20)) > 0);
		close(up[1]);
		close(down[0]);
		wins = 0;
		for (int i = 0; i < 6; i++) {
			char won = 0;

			assert_int_equal(read(up[0], &won, 1), 1);
			wins += won;
		}
		assert_int_equal(wins, 1);
		close(down[1]); /* all exit; the winner without detaching */
		for (int i = 0; i < 6; i++)
			assert_int_equal(tu_wait_bounded(pids[i]), 0);
		close(up[0]);
	}
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(x.uri), 0);
}

/* Regions attached from memory have no fd, so no lock: the heartbeat is
 * their only method. And the argument checks. */
static void t_liveness_args(void **state)
{
	struct portal_region_opts co = { .size = 65536 };
	struct portal_region_opts ao = { .side = 1 };
	struct portal_region_opts ro = { .flags = PORTAL_REGION_F_READONLY };
	struct portal_liveness_opts bad = { 0 };
	struct portal_participant_info pi;
	struct portal_peer_status st;
	portal_peer_watch_t *w = NULL;
	portal_region_t *c, *m, *obs;
	char uri[256];
	uint32_t meth;

	(void)state;
	shm_uri(uri, sizeof(uri), "largs");
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_attach_mem(portal_region_base(c), portal_region_size(c), &ao,
						  &m), 0);
	assert_int_equal(portal_region_participant(c, 1, &pi), 0);
	assert_int_equal(pi.flags, 0);
	assert_int_equal(pi.kind, PORTAL_PART_PROCESS);
	/* A memory watcher cannot test the creator's lock. */
	assert_int_equal(portal_region_watch_open(m, 0, NULL, &w), 0);
	assert_int_equal(peer_state(w, &meth), PORTAL_PEER_ALIVE);
	assert_int_equal(meth, PORTAL_LIVENESS_NONE);
	portal_region_watch_close(w);

	assert_int_equal(portal_region_watch_open(c, 2, NULL, &w), -EINVAL);
	assert_int_equal(portal_region_watch_open(NULL, 0, NULL, &w), -EINVAL);
	assert_int_equal(portal_region_watch_open(c, 0, NULL, NULL), -EINVAL);
	bad.flags = 1;
	assert_int_equal(portal_region_watch_open(c, 0, &bad, &w), -EINVAL);
	bad.flags = 0, bad.methods = 0x80;
	assert_int_equal(portal_region_watch_open(c, 0, &bad, &w), -EINVAL);
	bad.methods = 0, bad.stall_ns = -1;
	assert_int_equal(portal_region_watch_open(c, 0, &bad, &w), -EINVAL);
	assert_int_equal(portal_region_watch_status(NULL, &st), -EINVAL);
	assert_int_equal(portal_region_watch_rearm(NULL), -EINVAL);
	assert_int_equal(portal_region_watch_fd(NULL), -1);
	portal_region_watch_close(NULL);

	/* An observer watches but has no slot to beat or check. */
	assert_int_equal(portal_region_attach(uri, &ro, &obs), 0);
	assert_int_equal(portal_region_heartbeat(obs), -EINVAL);
	assert_int_equal(portal_region_check_self(obs), -EINVAL);
	assert_int_equal(portal_region_heartbeat_start(obs, 0), -EINVAL);
	assert_int_equal(portal_region_heartbeat_start(c, 999), -EINVAL);
	assert_int_equal(portal_region_heartbeat_start(c, -1), -EINVAL);
	portal_region_heartbeat_stop(c); /* none running: a no-op */
	portal_region_heartbeat_stop(NULL);
	assert_int_equal(portal_region_heartbeat(NULL), -EINVAL);
	assert_int_equal(portal_region_watch_open(obs, 1, NULL, &w), 0);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_ALIVE);
	portal_region_watch_close(w);
	portal_region_detach(obs);

	/* A slot never used, and one nobody is in yet. */
	portal_region_detach(m);
	assert_int_equal(portal_region_watch_open(c, 1, NULL, &w), 0);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_GONE);
	portal_region_watch_close(w);
	portal_region_detach(c);
	co.part_count = 3;
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_watch_open(c, 2, NULL, &w), 0);
	assert_int_equal(peer_state(w, NULL), PORTAL_PEER_ABSENT);
	ao.side = 2;
	assert_int_equal(portal_region_attach(uri, &ao, &m), 0);
	assert_int_equal(portal_region_watch_status(w, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_ALIVE); /* first sighting, not a restart */
	assert_int_equal(st.epoch, st.watched_epoch);
	portal_region_watch_close(w);
	portal_region_detach(m);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

static void t_participants(void **state)
{
	struct portal_region_opts co = { .size = 65536, .part_count = 4, .ident = "creator" };
	struct portal_region_opts ao = {
		.side = 3, .ident = "a-very-long-identity-string-that-does-not-fit"
	};
	struct portal_region_opts ro = { .flags = PORTAL_REGION_F_READONLY };
	struct portal_participant_info pi, before[4];
	portal_region_t *c, *a, *obs;
	char uri[256];
	uint64_t epoch;

	(void)state;
	shm_uri(uri, sizeof(uri), "part");
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_participant(c, 0, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	assert_int_equal(pi.kind, PORTAL_PART_PROCESS);
	assert_int_equal(pi.pid, (uint64_t)getpid());
	assert_int_equal(pi.heartbeat, 0);
	assert_string_equal(pi.ident, "creator");
	for (uint32_t s = 1; s < 4; s++) {
		assert_int_equal(portal_region_participant(c, s, &pi), 0);
		assert_int_equal(pi.state, PORTAL_PART_FREE);
	}
	assert_int_equal(portal_region_participant(c, 4, &pi), -EINVAL);
	assert_int_equal(portal_region_participant(c, UINT32_MAX, &pi), -EINVAL);
	assert_int_equal(portal_region_participant(NULL, 0, &pi), -EINVAL);
	assert_int_equal(portal_region_participant(c, 0, NULL), -EINVAL);

	for (int i = 0; i < 3; i++)
		portal_region_heartbeat(c);
	portal_region_heartbeat(NULL);
	assert_int_equal(portal_region_attach(uri, &ao, &a), 0);
	assert_int_equal(portal_region_participant(a, 0, &pi), 0);
	assert_int_equal(pi.heartbeat, 3);
	portal_region_heartbeat(a);
	assert_int_equal(portal_region_participant(c, 3, &pi), 0);
	assert_int_equal(pi.heartbeat, 1);
	assert_int_equal(strlen(pi.ident), 23); /* truncated, NUL terminated */
	assert_memory_equal(pi.ident, ao.ident, 23);
	epoch = pi.epoch;

	/* A read-only observer takes no slot and changes nothing. */
	for (uint32_t s = 0; s < 4; s++)
		assert_int_equal(portal_region_participant(c, s, &before[s]), 0);
	assert_int_equal(portal_region_attach(uri, &ro, &obs), 0);
	assert_int_equal(portal_region_side(obs), UINT32_MAX);
	portal_region_heartbeat(obs);
	assert_int_equal(portal_region_participant(obs, 3, &pi), 0);
	assert_int_equal(pi.heartbeat, 1);
	portal_region_detach(obs);
	for (uint32_t s = 0; s < 4; s++) {
		assert_int_equal(portal_region_participant(c, s, &pi), 0);
		assert_memory_equal(&pi, &before[s], sizeof(pi));
	}

	/* Re-attaching the same side: a new epoch, the heartbeat restarts. */
	portal_region_detach(a);
	assert_int_equal(portal_region_participant(c, 3, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_GONE);
	ao.ident = NULL;
	assert_int_equal(portal_region_attach(uri, &ao, &a), 0);
	assert_int_equal(portal_region_participant(c, 3, &pi), 0);
	assert_int_equal(pi.state, PORTAL_PART_ACTIVE);
	assert_int_not_equal(pi.epoch, epoch);
	assert_int_equal(pi.heartbeat, 0);
	assert_string_equal(pi.ident, "");
	portal_region_detach(a);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* ------------------------------------------------------------------ */
/* Directory                                                            */
/* ------------------------------------------------------------------ */

static void t_directory(void **state)
{
	struct portal_region_opts co = { .size = 65536, .dir_capacity = 6, .part_count = 3 };
	const uint64_t param[6] = { 1, 2, 3, 4, 5, UINT64_MAX };
	struct portal_object_info info, i2, got;
	char uri[256], fduri[32], name48[49], name47[48];
	portal_region_t *c, *a;
	struct portal_region_hdr *h;
	uint8_t *base;
	uint64_t left;

	(void)state;
	shm_uri(uri, sizeof(uri), "dir");
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	base = portal_region_base(c);
	h = (struct portal_region_hdr *)base;
	snprintf(fduri, sizeof(fduri), "fd:%d", portal_region_fd(c));
	assert_int_equal(portal_region_attach(fduri, NULL, &a), 0);
	memset(name48, 'n', 48);
	name48[48] = '\0';
	memset(name47, 'n', 47);
	name47[47] = '\0';

	/* Argument errors. */
	assert_int_equal(portal_region_alloc(NULL, "x", PORTAL_OBJ_USER, 64, 0, 0, NULL, &info),
			 -EINVAL);
	assert_int_equal(portal_region_alloc(c, NULL, PORTAL_OBJ_USER, 64, 0, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "", PORTAL_OBJ_USER, 64, 0, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, name48, PORTAL_OBJ_USER, 64, 0, 0, NULL, &info),
			 -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", 0, 64, 0, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_KIND_MAX + 1, 64, 0, 0, NULL, &info),
			 -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_USER, 0, 0, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_USER, 64, 3, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_USER, 64, 32, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_USER, 64, 96, 0, NULL, &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_USER, 64, UINT64_C(1) << 31, 0, NULL,
					     &info), -EINVAL);
	assert_int_equal(portal_region_alloc(c, "x", PORTAL_OBJ_USER, 64, 0, 3, NULL, &info), -EINVAL);
	/* Only the creator adds entries. */
	assert_int_equal(portal_region_alloc(a, "x", PORTAL_OBJ_USER, 64, 0, 0, NULL, &info), -EPERM);
	assert_int_equal(atomic_load(&h->dir_count), 0);

	/* Placement: aligned, zeroed, recorded, visible to the peer. */
	memset(base + h->data_offset, 0xEE, 16384); /* stale bytes under the next objects */
	assert_int_equal(portal_region_alloc(c, name47, PORTAL_OBJ_RING, 1000, 0, 2, param, &info), 0);
	assert_int_equal(info.offset, h->data_offset);
	assert_int_equal(info.offset % 128, 0);
	assert_ptr_equal(info.addr, base + info.offset);
	assert_int_equal(info.size, 1000);
	assert_int_equal(info.owner_side, 2);
	assert_memory_equal(info.param, param, sizeof(param));
	for (size_t i = 0; i < 1000; i++)
		if (((uint8_t *)info.addr)[i])
			fail_msg("byte %zu of a new object is %#x, not 0", i, ((uint8_t *)info.addr)[i]);
	assert_int_equal(portal_region_alloc(c, "page", PORTAL_OBJ_ARENA, 100, 4096, 0, NULL, &i2), 0);
	assert_int_equal(i2.offset % 4096, 0);
	assert_true(i2.offset >= info.offset + info.size);
	assert_int_equal(((uint8_t *)i2.addr)[99], 0);
	assert_int_equal(portal_region_alloc(c, "line", PORTAL_OBJ_DOORBELL, 64, 64, 1, NULL, NULL), 0);
	assert_int_equal(atomic_load(&h->dir_count), 3);
	assert_int_equal(atomic_load(&h->data_used), i2.offset + 100 + 28 + 64 - h->data_offset);

	/* Lookup, from the peer: kind filter, -ENOENT. */
	assert_int_equal(portal_region_lookup(a, name47, 0, &got), 0);
	assert_int_equal(got.kind, PORTAL_OBJ_RING);
	assert_int_equal(got.offset, info.offset);
	assert_memory_equal(got.param, param, sizeof(param));
	assert_ptr_equal(got.addr, (uint8_t *)portal_region_base(a) + info.offset);
	assert_int_equal(portal_region_lookup(a, name47, PORTAL_OBJ_RING, &got), 0);
	assert_int_equal(portal_region_lookup(a, name47, PORTAL_OBJ_MSGRING, &got), -ENOENT);
	assert_int_equal(portal_region_lookup(a, "page", PORTAL_OBJ_ARENA, &got), 0);
	assert_int_equal(got.size, 100);
	assert_int_equal(portal_region_lookup(a, "line", 0, &got), 0);
	assert_int_equal(got.owner_side, 1);
	assert_int_equal(portal_region_lookup(a, "nope", 0, &got), -ENOENT);
	assert_int_equal(portal_region_lookup(a, "lin", 0, &got), -ENOENT);
	assert_int_equal(portal_region_lookup(a, NULL, 0, &got), -EINVAL);
	assert_int_equal(portal_region_lookup(a, "line", 0, NULL), -EINVAL);
	assert_int_equal(portal_region_lookup(NULL, "line", 0, &got), -EINVAL);

	/* -EEXIST: the name is taken, whatever the kind. */
	assert_int_equal(portal_region_alloc(c, "page", PORTAL_OBJ_ARENA, 100, 0, 0, NULL, &info),
			 -EEXIST);
	assert_int_equal(portal_region_alloc(c, "page", PORTAL_OBJ_USER, 8, 0, 0, NULL, &info), -EEXIST);

	/* -ENOSPC: the region is full (and exactly full is fine). */
	assert_int_equal(portal_region_alloc(c, "huge", PORTAL_OBJ_USER, 65536, 0, 0, NULL, &info),
			 -ENOSPC);
	assert_int_equal(portal_region_alloc(c, "huge", PORTAL_OBJ_USER, UINT64_MAX, 0, 0, NULL, &info),
			 -ENOSPC);
	left = 65536 - (i2.offset + 100 + 28 + 64);
	assert_int_equal(portal_region_alloc(c, "huge", PORTAL_OBJ_USER, left + 1, 64, 0, NULL,
					     &info), -ENOSPC);
	assert_int_equal(portal_region_alloc(c, "rest", PORTAL_OBJ_USER, left, 64, 0, NULL, &info), 0);
	assert_int_equal(info.offset + info.size, 65536);
	assert_int_equal(portal_region_alloc(c, "more", PORTAL_OBJ_USER, 64, 64, 0, NULL, &info),
			 -ENOSPC);
	portal_region_detach(a);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);

	/* A directory that fills before the region does. */
	co.dir_capacity = 2;
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_alloc(c, "a", PORTAL_OBJ_USER, 64, 0, 0, NULL, NULL), 0);
	assert_int_equal(portal_region_alloc(c, "b", PORTAL_OBJ_USER, 64, 0, 0, NULL, NULL), 0);
	assert_int_equal(portal_region_alloc(c, "c", PORTAL_OBJ_USER, 64, 0, 0, NULL, NULL), -ENOSPC);
	assert_int_equal(portal_region_lookup(c, "b", 0, &got), 0);
	assert_int_equal(portal_region_lookup(c, "c", 0, &got), -ENOENT);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* alloc_init: INIT builds the object in zeroed memory before the entry is
 * published; a failing INIT publishes nothing and its space is not reused. */
struct init_probe {
	portal_region_t *peer;
	const char *name;
	void *mem;
	size_t len;
	uint64_t off;
	bool zeroed, visible;
	int ret;
};

static int probe_init(void *mem, size_t len, uint64_t offset, void *arg)
{
	struct init_probe *p = arg;
	struct portal_object_info info;

	p->off = offset;
	p->mem = mem;
	p->len = len;
	p->zeroed = true;
	for (size_t i = 0; i < len; i++)
		if (((uint8_t *)mem)[i])
			p->zeroed = false;
	p->visible = portal_region_lookup(p->peer, p->name, 0, &info) != -ENOENT;
	memset(mem, 0x77, len);
	return p->ret;
}

static void t_alloc_init(void **state)
{
	struct portal_region_opts co = { .size = 65536, .dir_capacity = 4 };
	struct portal_object_info info, got;
	struct init_probe p = { 0 };
	portal_region_t *c, *a;
	char uri[256];
	uint8_t *base;
	uint64_t failed_off;

	(void)state;
	shm_uri(uri, sizeof(uri), "init");
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
	base = portal_region_base(c);
	memset(base + hdr(base)->data_offset, 0xEE, 8192); /* stale bytes */

	p.peer = a;
	p.name = "built";
	assert_int_equal(portal_region_alloc_init(c, "built", PORTAL_OBJ_USER, 300, 0, 0, NULL,
						  probe_init, &p, &info), 0);
	assert_ptr_equal(p.mem, info.addr);
	assert_int_equal(p.off, info.offset);
	assert_int_equal(p.len, 300);
	assert_true(p.zeroed);
	assert_false(p.visible); /* not published while INIT ran */
	assert_int_equal(portal_region_lookup(a, "built", 0, &got), 0);
	assert_int_equal(((uint8_t *)got.addr)[299], 0x77);

	/* INIT fails: its error comes back, nothing is published. */
	p.name = "broken";
	p.ret = -EIO;
	assert_int_equal(portal_region_alloc_init(c, "broken", PORTAL_OBJ_USER, 500, 0, 0, NULL,
						  probe_init, &p, &info), -EIO);
	failed_off = (uint64_t)((uint8_t *)p.mem - base);
	assert_int_equal(portal_region_lookup(a, "broken", 0, &got), -ENOENT);
	assert_int_equal(atomic_load(&hdr(base)->dir_count), 1);
	/* The name is free again; the failed object's space is not reused. */
	p.ret = 0;
	assert_int_equal(portal_region_alloc_init(c, "broken", PORTAL_OBJ_USER, 500, 0, 0, NULL,
						  probe_init, &p, &info), 0);
	assert_true(info.offset >= failed_off + 500);
	/* INIT may be NULL: the same as portal_region_alloc. */
	assert_int_equal(portal_region_alloc_init(c, "plain", PORTAL_OBJ_USER, 64, 0, 0, NULL, NULL,
						  NULL, &info), 0);
	assert_int_equal(((uint8_t *)info.addr)[0], 0);
	assert_int_equal(portal_region_alloc_init(a, "x", PORTAL_OBJ_USER, 64, 0, 0, NULL, NULL,
						  NULL, &info), -EPERM);
	assert_int_equal(atomic_load(&hdr(base)->dir_count), 3);
	portal_region_detach(a);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* lookup re-validates the entries every time: a peer that rewrites the
 * directory after attach is caught. */
static void t_lookup_revalidates(void **state)
{
	struct portal_region_opts co = { .size = 65536, .dir_capacity = 4 };
	struct portal_object_info info;
	portal_region_t *c, *a;
	char uri[256];
	uint8_t *base;
	struct portal_dir_entry saved;

	(void)state;
	shm_uri(uri, sizeof(uri), "reval");
	assert_int_equal(portal_region_create(uri, &co, &c), 0);
	assert_int_equal(portal_region_alloc(c, "a", PORTAL_OBJ_USER, 256, 0, 0, NULL, NULL), 0);
	assert_int_equal(portal_region_alloc(c, "b", PORTAL_OBJ_RING, 256, 0, 0, NULL, NULL), 0);
	assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
	base = portal_region_base(a);
	saved = *entry(base, 1);

	entry(base, 1)->param[0] ^= 1; /* payload changed, crc not */
	assert_int_equal(portal_region_lookup(a, "a", 0, &info), PORTAL_ECHECKSUM);
	*entry(base, 1) = saved;
	entry(base, 1)->size = 65536; /* runs past the end, crc fixed */
	fix_entry_crc(base, 1);
	assert_int_equal(portal_region_lookup(a, "b", 0, &info), PORTAL_EDIR);
	*entry(base, 1) = saved;
	atomic_store(&hdr(base)->dir_count, 5); /* beyond capacity */
	assert_int_equal(portal_region_lookup(a, "a", 0, &info), PORTAL_EDIR);
	atomic_store(&hdr(base)->dir_count, 2);
	assert_int_equal(portal_region_lookup(a, "b", 0, &info), 0);
	assert_int_equal(info.size, 256);
	portal_region_detach(a);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* ------------------------------------------------------------------ */
/* Argument errors                                                      */
/* ------------------------------------------------------------------ */

static void t_arg_errors(void **state)
{
	struct portal_region_opts o = { .size = 65536 };
	struct portal_region_opts bad;
	portal_region_t *r = NULL;
	char uri[256], buf[300];

	(void)state;
	shm_uri(uri, sizeof(uri), "args");
	assert_int_equal(portal_region_create(NULL, &o, &r), -EINVAL);
	assert_int_equal(portal_region_create(uri, &o, NULL), -EINVAL);
	assert_int_equal(portal_region_create("bogus:x", &o, &r), -EINVAL);
	assert_int_equal(portal_region_create("fd:3", &o, &r), -EINVAL);
	assert_int_equal(portal_region_create("shm:", &o, &r), -EINVAL);
	assert_int_equal(portal_region_create("shm:a/b", &o, &r), -EINVAL);
	assert_int_equal(portal_region_create("file:", &o, &r), -EINVAL);
	snprintf(buf, sizeof(buf), "shm:%0260d", 7);
	assert_int_equal(portal_region_create(buf, &o, &r), -EINVAL);
	bad = o, bad.flags = PORTAL_REGION_F_READONLY;
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	bad = o, bad.flags = PORTAL_REGION_F_MASK + 1;
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	bad = o, bad.part_count = 1;
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	bad = o, bad.part_count = PORTAL_REGION_MAX_PARTS + 1;
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	bad = o, bad.dir_capacity = (1u << 16) + 1;
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	bad = o, bad.size = 4096 + 64 * 128; /* no room past the directory */
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	bad = o, bad.size = (UINT64_C(1) << 40) + 1;
	assert_int_equal(portal_region_create(uri, &bad, &r), -EINVAL);
	assert_null(r);
	assert_false(shm_exists(uri + 4));

	/* Attach. */
	assert_int_equal(portal_region_attach(uri, NULL, &r), -ENOENT);
	snprintf(buf, sizeof(buf), "file:%s/none", tmpdir);
	assert_int_equal(portal_region_attach(buf, NULL, &r), -ENOENT);
	assert_int_equal(portal_region_attach("memfd:x", NULL, &r), -EINVAL);
	assert_int_equal(portal_region_attach("fd:abc", NULL, &r), -EINVAL);
	assert_int_equal(portal_region_attach("fd:-1", NULL, &r), -EINVAL);
	assert_int_equal(portal_region_attach("fd:", NULL, &r), -EINVAL);
	assert_int_equal(portal_region_attach("fd:12x", NULL, &r), -EINVAL);
	assert_int_equal(portal_region_attach("fd:999999", NULL, &r), -EBADF);
	assert_int_equal(portal_region_attach(NULL, NULL, &r), -EINVAL);
	assert_int_equal(portal_region_attach("nope:x", NULL, &r), -EINVAL);
	assert_int_equal(portal_region_destroy("nope:x"), -EINVAL);
	assert_int_equal(portal_region_destroy(NULL), -EINVAL);
	assert_int_equal(portal_region_create(uri, &o, &r), 0);
	{
		portal_region_t *a = NULL;

		bad = (struct portal_region_opts){ .side = 2 }; /* part_count 2 */
		assert_int_equal(portal_region_attach(uri, &bad, &a), -EINVAL);
		bad = (struct portal_region_opts){ .flags = 0x10 };
		assert_int_equal(portal_region_attach(uri, &bad, &a), -EINVAL);
		assert_int_equal(portal_region_attach(uri, NULL, NULL), -EINVAL);
		assert_int_equal(portal_region_attach_mem(NULL, 65536, NULL, &a), -EINVAL);
		assert_int_equal(portal_region_attach_mem(portal_region_base(r), 65536, NULL, NULL),
				 -EINVAL);
		assert_int_equal(portal_region_validate(NULL, 65536), -EINVAL);
		assert_null(a);
	}
	portal_region_detach(r);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* ------------------------------------------------------------------ */
/* Every attach error, from a corrupted real region                     */
/* ------------------------------------------------------------------ */

#define CR_SIZE   65536u
#define CR_GROW   8192u

/* A mutation gets the region's bytes (room for CR_GROW more) and may
 * change the length. */
typedef void (*mutate_fn)(uint8_t *b, size_t *len);

static void m_none(uint8_t *b, size_t *len) { (void)b, (void)len; }
static void m_magic_bit(uint8_t *b, size_t *len) { (void)len; b[3] ^= 0x10; }
static void m_magic_zero(uint8_t *b, size_t *len) { (void)len; memset(b, 0, 8); }
static void m_all_zero(uint8_t *b, size_t *len) { memset(b, 0, *len); }
static void m_major2(uint8_t *b, size_t *len) { (void)len; hdr(b)->version_major = 2; }
static void m_major0_fixed(uint8_t *b, size_t *len)
{
	(void)len;
	hdr(b)->version_major = 0;
	fix_hdr_crc(b);
}
static void m_minor7_fixed(uint8_t *b, size_t *len)
{
	(void)len;
	hdr(b)->version_minor = 7;
	fix_hdr_crc(b);
}
static void m_truncate_page(uint8_t *b, size_t *len) { (void)b; *len -= 4096; }
static void m_truncate_tiny(uint8_t *b, size_t *len) { (void)b; *len = 100; }
static void m_truncate_header(uint8_t *b, size_t *len) { (void)b; *len = 4095; }
static void m_grow(uint8_t *b, size_t *len) { memset(b + *len, 0, 4096); *len += 4096; }
static void m_size_field(uint8_t *b, size_t *len) { (void)len; hdr(b)->region_size += 4096; }
static void m_size_field_fixed(uint8_t *b, size_t *len)
{
	(void)len;
	hdr(b)->region_size -= 4096;
	fix_hdr_crc(b);
}
static void m_header_size(uint8_t *b, size_t *len)
{
	(void)len;
	hdr(b)->header_size = 8192;
	fix_hdr_crc(b);
}
static void m_epoch_byte(uint8_t *b, size_t *len) { (void)len; b[offsetof(struct portal_region_hdr, epoch) + 5] ^= 1; }
static void m_region_id(uint8_t *b, size_t *len) { (void)len; hdr(b)->region_id ^= 0x100; }
static void m_dir_offset(uint8_t *b, size_t *len) { (void)len; hdr(b)->dir_offset += 64; }
static void m_checksum_field(uint8_t *b, size_t *len) { (void)len; hdr(b)->hdr_checksum ^= 1; }
static void m_entry_param(uint8_t *b, size_t *len) { (void)len; entry(b, 1)->param[3] ^= 0x80; }
static void m_entry_name(uint8_t *b, size_t *len) { (void)len; entry(b, 2)->name[0] = 'X'; }
static void m_entry_crc(uint8_t *b, size_t *len) { (void)len; entry(b, 0)->checksum ^= 0x8000; }
static void m_count_unwritten(uint8_t *b, size_t *len)
{
	(void)len;
	atomic_store(&hdr(b)->dir_count, 4); /* entry 3 was never written */
}

/* Geometry wrong, checksums right. */
#define ENTRY_MUT(fname, i, stmt)                                                  \
	static void fname(uint8_t *b, size_t *len)                                 \
	{                                                                           \
		struct portal_dir_entry *e = entry(b, i);                           \
		(void)len;                                                          \
		stmt;                                                               \
		fix_entry_crc(b, i);                                                \
	}
ENTRY_MUT(m_e_offset_past_end, 1, e->offset = CR_SIZE + 64)
ENTRY_MUT(m_e_size_past_end, 2, e->size = CR_SIZE - e->offset + 1)
ENTRY_MUT(m_e_size_huge, 2, e->size = UINT64_MAX)
ENTRY_MUT(m_e_offset_huge, 0, e->offset = UINT64_MAX - 63)
ENTRY_MUT(m_e_overlap, 1, e->offset = entry(b, 0)->offset + 64)
ENTRY_MUT(m_e_same_offset, 2, e->offset = entry(b, 1)->offset)
ENTRY_MUT(m_e_size_zero, 1, e->size = 0)
/* Empty, at the start of another entry: refused whatever the sort order. */
ENTRY_MUT(m_e_empty_at_start, 2, (e->offset = entry(b, 1)->offset, e->size = 0))
ENTRY_MUT(m_e_kind_unknown, 1, e->kind = PORTAL_OBJ_KIND_MAX + 1)
ENTRY_MUT(m_e_kind_zero, 0, e->kind = 0)
ENTRY_MUT(m_e_kind_huge, 2, e->kind = UINT32_MAX)
ENTRY_MUT(m_e_before_data, 0, e->offset = hdr(b)->dir_offset + 64)
ENTRY_MUT(m_e_in_header, 0, e->offset = 0)
ENTRY_MUT(m_e_unaligned, 2, e->offset += 8)
ENTRY_MUT(m_e_name_unterminated, 1, memset(e->name, 'A', sizeof(e->name)))
ENTRY_MUT(m_e_name_empty, 1, e->name[0] = '\0')

#define HDR_MUT(fname, stmt)                                                       \
	static void fname(uint8_t *b, size_t *len)                                 \
	{                                                                           \
		struct portal_region_hdr *h = hdr(b);                               \
		(void)len;                                                          \
		stmt;                                                               \
		fix_hdr_crc(b);                                                     \
	}
HDR_MUT(m_h_part_count_1, h->part_count = 1)
HDR_MUT(m_h_part_count_49, h->part_count = PORTAL_REGION_MAX_PARTS + 1)
HDR_MUT(m_h_part_offset, h->part_offset = 0)
HDR_MUT(m_h_dir_in_header, h->dir_offset = 2048)
HDR_MUT(m_h_dir_unaligned, h->dir_offset = 4096 + 8)
HDR_MUT(m_h_dir_past_data, h->dir_capacity = 1000)
HDR_MUT(m_h_data_past_end, h->data_offset = CR_SIZE + 4096)
HDR_MUT(m_h_region_id_zero, h->region_id = 0)

static void m_count_over_capacity(uint8_t *b, size_t *len)
{
	(void)len;
	atomic_store(&hdr(b)->dir_count, hdr(b)->dir_capacity + 1); /* not checksummed */
}

static void m_count_huge(uint8_t *b, size_t *len)
{
	(void)len;
	atomic_store(&hdr(b)->dir_count, UINT32_MAX);
}

static const struct corrupt_case {
	const char *what;
	mutate_fn fn;
	int want;
} corrupt_cases[] = {
	{ "untouched",                          m_none, 0 },
	{ "minor version 7 (checksum fixed)",   m_minor7_fixed, 0 },
	{ "magic bit flipped",                  m_magic_bit, PORTAL_EMAGIC },
	{ "magic zeroed",                       m_magic_zero, PORTAL_EMAGIC },
	{ "whole region zeroed",                m_all_zero, PORTAL_EMAGIC },
	{ "major version 2 (checksum stale)",   m_major2, PORTAL_EVERSION },
	{ "major version 0 (checksum fixed)",   m_major0_fixed, PORTAL_EVERSION },
	{ "file truncated by a page",           m_truncate_page, PORTAL_ESIZE },
	{ "file truncated to 100 bytes",        m_truncate_tiny, PORTAL_ESIZE },
	{ "file one byte short of a header",    m_truncate_header, PORTAL_ESIZE },
	{ "file grown by a page",               m_grow, PORTAL_ESIZE },
	/* region_size is checksummed, but the size check runs first. */
	{ "region_size + 4096 (checksum stale)", m_size_field, PORTAL_ESIZE },
	{ "region_size - 4096 (checksum fixed)", m_size_field_fixed, PORTAL_ESIZE },
	{ "header_size 8192 (checksum fixed)",  m_header_size, PORTAL_ESIZE },
	{ "epoch byte flipped",                 m_epoch_byte, PORTAL_ECHECKSUM },
	{ "region_id changed",                  m_region_id, PORTAL_ECHECKSUM },
	{ "dir_offset changed",                 m_dir_offset, PORTAL_ECHECKSUM },
	{ "hdr_checksum flipped",               m_checksum_field, PORTAL_ECHECKSUM },
	{ "entry param changed",                m_entry_param, PORTAL_ECHECKSUM },
	{ "entry name changed",                 m_entry_name, PORTAL_ECHECKSUM },
	{ "entry checksum flipped",             m_entry_crc, PORTAL_ECHECKSUM },
	{ "dir_count covers an unwritten entry", m_count_unwritten, PORTAL_ECHECKSUM },
	{ "entry offset past the end",          m_e_offset_past_end, PORTAL_EDIR },
	{ "entry runs past the end",            m_e_size_past_end, PORTAL_EDIR },
	{ "entry size UINT64_MAX",              m_e_size_huge, PORTAL_EDIR },
	{ "entry offset near 2^64",             m_e_offset_huge, PORTAL_EDIR },
	{ "entries overlap",                    m_e_overlap, PORTAL_EDIR },
	{ "entries at the same offset",         m_e_same_offset, PORTAL_EDIR },
	{ "entry size 0",                       m_e_size_zero, PORTAL_EDIR },
	{ "empty entry at another's start",     m_e_empty_at_start, PORTAL_EDIR },
	{ "entry kind unknown",                 m_e_kind_unknown, PORTAL_EDIR },
	{ "entry kind 0",                       m_e_kind_zero, PORTAL_EDIR },
	{ "entry kind UINT32_MAX",              m_e_kind_huge, PORTAL_EDIR },
	{ "entry before data_offset",           m_e_before_data, PORTAL_EDIR },
	{ "entry at offset 0 (the header)",     m_e_in_header, PORTAL_EDIR },
	{ "entry offset not cache-line aligned", m_e_unaligned, PORTAL_EDIR },
	{ "entry name not terminated",          m_e_name_unterminated, PORTAL_EDIR },
	{ "entry name empty",                   m_e_name_empty, PORTAL_EDIR },
	{ "dir_count > dir_capacity",           m_count_over_capacity, PORTAL_EDIR },
	{ "dir_count UINT32_MAX",               m_count_huge, PORTAL_EDIR },
	{ "part_count 1",                       m_h_part_count_1, PORTAL_EDIR },
	{ "part_count 49",                      m_h_part_count_49, PORTAL_EDIR },
	{ "part_offset 0",                      m_h_part_offset, PORTAL_EDIR },
	{ "directory inside the header",        m_h_dir_in_header, PORTAL_EDIR },
	{ "directory not aligned",              m_h_dir_unaligned, PORTAL_EDIR },
	{ "directory runs into the data",       m_h_dir_past_data, PORTAL_EDIR },
	{ "data_offset past the end",           m_h_data_past_end, PORTAL_EDIR },
	{ "region_id 0",                        m_h_region_id_zero, PORTAL_EDIR },
};

/* Make a region file with three objects, detach, and read it back. */
static uint8_t *make_region_file(const char *uri, size_t *len)
{
	struct portal_region_opts o = { .size = CR_SIZE, .dir_capacity = 8 };
	portal_region_t *r;
	uint8_t *b;
	int fd;

	assert_int_equal(portal_region_create(uri, &o, &r), 0);
	assert_int_equal(portal_region_alloc(r, "ring0", PORTAL_OBJ_RING, 1000, 0, 1, NULL, NULL), 0);
	assert_int_equal(portal_region_alloc(r, "user1", PORTAL_OBJ_USER, 3000, 0, 0, NULL, NULL), 0);
	assert_int_equal(portal_region_alloc(r, "arena2", PORTAL_OBJ_ARENA, 5000, 4096, 0, NULL,
					     NULL), 0);
	portal_region_detach(r);
	b = calloc(1, CR_SIZE + CR_GROW);
	assert_non_null(b);
	fd = open(uri + 5, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, CR_SIZE, 0), CR_SIZE);
	close(fd);
	*len = CR_SIZE;
	return b;
}

static void write_region_file(const char *uri, const uint8_t *b, size_t len)
{
	int fd = open(uri + 5, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	assert_int_equal(pwrite(fd, b, len, 0), (ssize_t)len);
	close(fd);
}

static void t_attach_errors(void **state)
{
	char uri[512];

	(void)state;
	for (size_t i = 0; i < TU_ARRAY_SIZE(corrupt_cases); i++) {
		const struct corrupt_case *cc = &corrupt_cases[i];
		struct portal_object_info info;
		portal_region_t *r = NULL;
		size_t len;
		uint8_t *b, *copy;
		int rc;

		file_uri(uri, sizeof(uri), "corrupt");
		b = make_region_file(uri, &len);
		cc->fn(b, &len);
		write_region_file(uri, b, len);

		/* A real attach through the file backend. */
		rc = portal_region_attach(uri, NULL, &r);
		if (rc != cc->want)
			fail_msg("%s: attach got %d (%s), want %d (%s)", cc->what, rc,
				 portal_strerror(rc), cc->want, portal_strerror(cc->want));
		if (rc == 0) {
			assert_int_equal(portal_region_lookup(r, "arena2", PORTAL_OBJ_ARENA, &info), 0);
			assert_int_equal(info.size, 5000);
			portal_region_detach(r);
		} else {
			assert_null(r);
		}

		/* The same bytes in private memory: validate and attach_mem. */
		copy = tu_mem_alloc(len);
		assert_non_null(copy);
		memcpy(copy, b, len);
		rc = portal_region_validate(copy, len);
		if (rc != cc->want)
			fail_msg("%s: validate got %d, want %d", cc->what, rc, cc->want);
		rc = portal_region_attach_mem(copy, len, NULL, &r);
		if (rc != cc->want)
			fail_msg("%s: attach_mem got %d, want %d", cc->what, rc, cc->want);
		if (rc == 0) {
			assert_int_equal(portal_region_fd(r), -1);
			assert_ptr_equal(portal_region_base(r), copy);
			assert_int_equal(portal_region_side(r), 1);
			assert_int_equal(portal_region_lookup(r, "user1", 0, &info), 0);
			assert_true((uint8_t *)info.addr > copy &&
				    (uint8_t *)info.addr + info.size <= copy + len);
			portal_region_detach(r); /* leaves the caller's memory alone */
			/* The slot was claimed in the copy. */
			assert_int_equal(((struct portal_participant *)(copy + 1024) + 1)->state,
					 PORTAL_PART_GONE);
		}
		tu_mem_free_checked(copy, len);
		free(b);
		assert_int_equal(portal_region_destroy(uri), 0);
	}
}

/* The shm backend refuses a corrupted region the same way. */
static void t_attach_errors_shm(void **state)
{
	static const struct corrupt_case cases[] = {
		{ "magic", m_magic_bit, PORTAL_EMAGIC },
		{ "major", m_major2, PORTAL_EVERSION },
		{ "size field", m_size_field, PORTAL_ESIZE },
		{ "epoch", m_epoch_byte, PORTAL_ECHECKSUM },
		{ "entry geometry", m_e_overlap, PORTAL_EDIR },
	};
	char uri[256];

	(void)state;
	for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
		struct portal_region_opts o = { .size = CR_SIZE, .dir_capacity = 8 };
		portal_region_t *c, *r = NULL;
		size_t len = CR_SIZE;
		uint8_t *base;
		int rc;

		shm_uri(uri, sizeof(uri), "corrupt");
		assert_int_equal(portal_region_create(uri, &o, &c), 0);
		assert_int_equal(portal_region_alloc(c, "ring0", PORTAL_OBJ_RING, 1000, 0, 1, NULL,
						     NULL), 0);
		assert_int_equal(portal_region_alloc(c, "user1", PORTAL_OBJ_USER, 3000, 0, 0, NULL,
						     NULL), 0);
		base = portal_region_base(c);
		cases[i].fn(base, &len);
		rc = portal_region_attach(uri, NULL, &r);
		if (rc != cases[i].want)
			fail_msg("shm %s: attach got %d, want %d", cases[i].what, rc, cases[i].want);
		assert_null(r);
		portal_region_detach(c);
		assert_int_equal(portal_region_destroy(uri), 0);
	}
}

/* attach_mem on a mapping of the wrong length, and on short memory. */
static void t_attach_mem_lengths(void **state)
{
	char uri[512];
	portal_region_t *r = NULL;
	size_t len;
	uint8_t *b, *copy;

	(void)state;
	file_uri(uri, sizeof(uri), "len");
	b = make_region_file(uri, &len);
	copy = tu_mem_alloc(len);
	memcpy(copy, b, len);
	assert_int_equal(portal_region_validate(copy, len), 0);
	assert_int_equal(portal_region_validate(copy, len - 4096), PORTAL_ESIZE);
	assert_int_equal(portal_region_validate(copy, 4095), PORTAL_ESIZE);
	assert_int_equal(portal_region_validate(copy, 0), PORTAL_ESIZE);
	assert_int_equal(portal_region_attach_mem(copy, len - 1, NULL, &r), PORTAL_ESIZE);
	assert_int_equal(portal_region_attach_mem(copy, 100, NULL, &r), PORTAL_ESIZE);
	assert_null(r);
	{
		struct portal_region_opts s = { .side = 2 }; /* part_count 2 */

		assert_int_equal(portal_region_attach_mem(copy, len, &s, &r), -EINVAL);
	}
	tu_mem_free_checked(copy, len);
	free(b);
	assert_int_equal(portal_region_destroy(uri), 0);
}

/* ------------------------------------------------------------------ */
/* Error strings                                                        */
/* ------------------------------------------------------------------ */

static void t_strerror(void **state)
{
	static const int codes[] = {
		PORTAL_EMAGIC, PORTAL_EVERSION, PORTAL_ESIZE, PORTAL_ECHECKSUM, PORTAL_EDIR,
		PORTAL_ERANGE, PORTAL_EXDEV, PORTAL_EFORGED, PORTAL_ESTALE, PORTAL_EPROTO,
		PORTAL_EPEERDEAD, -EAGAIN, -ETIMEDOUT, -EINVAL, -ENOSPC, -ENOENT, -EEXIST, -EBUSY,
	};
	const char *s[TU_ARRAY_SIZE(codes)];

	(void)state;
	for (size_t i = 0; i < TU_ARRAY_SIZE(codes); i++) {
		s[i] = portal_strerror(codes[i]);
		assert_non_null(s[i]);
		assert_true(strlen(s[i]) > 5);
		if (!strcmp(s[i], strerror(-codes[i])) || !strcmp(s[i], "not an error code"))
			fail_msg("portal_strerror(%d) is generic: \"%s\"", codes[i], s[i]);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(s[i], s[j]))
				fail_msg("codes %d and %d share \"%s\"", codes[i], codes[j], s[i]);
	}
	/* The attach codes are distinct errno values. */
	for (size_t i = 0; i < 5; i++)
		for (size_t j = 0; j < i; j++)
			assert_int_not_equal(codes[i], codes[j]);
	assert_string_equal(portal_strerror(0), "success");
	assert_string_equal(portal_strerror(5), "not an error code");
	assert_string_equal(portal_strerror(-ENOTDIR), strerror(ENOTDIR));
}

static int strerror_int_min_fn(void *arg)
{
	(void)arg;
	return portal_strerror(INT32_MIN) != NULL ? 0 : 1;
}

/* Any int is a valid argument, INT_MIN too ("never aborts on bad input").
 * Run in a child: with UBSan, undefined behaviour aborts the process. */
static void t_strerror_int_min(void **state)
{
	int rc;

	(void)state;
	rc = tu_run_bounded(strerror_int_min_fn, NULL, 5);
	if (rc != 0)
		fail_msg("portal_strerror(INT_MIN) %s (child status %d)",
			 rc >= 200 ? "crashed" : "did not return normally (UBSan: -INT_MIN in common.c)", rc);
}

/* ------------------------------------------------------------------ */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_lifecycle_shm),
		cmocka_unit_test(t_lifecycle_default),
		cmocka_unit_test(t_lifecycle_file),
		cmocka_unit_test(t_lifecycle_memfd),
		cmocka_unit_test(t_defaults),
		cmocka_unit_test(t_excl_recreate),
		cmocka_unit_test(t_busy),
		cmocka_unit_test(t_participants),
		cmocka_unit_test(t_liveness_lock),
		cmocka_unit_test(t_liveness_heartbeat),
		cmocka_unit_test(t_liveness_race),
		cmocka_unit_test(t_liveness_args),
		cmocka_unit_test(t_directory),
		cmocka_unit_test(t_alloc_init),
		cmocka_unit_test(t_lookup_revalidates),
		cmocka_unit_test(t_arg_errors),
		cmocka_unit_test(t_attach_errors),
		cmocka_unit_test(t_attach_errors_shm),
		cmocka_unit_test(t_attach_mem_lengths),
		cmocka_unit_test(t_strerror),
		cmocka_unit_test(t_strerror_int_min),
	};

	return cmocka_run_group_tests_name("portal.region", tests, setup_group, teardown_group);
}
