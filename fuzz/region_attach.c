/* SPDX-License-Identifier: MIT */
/*
 * region_attach.c - libFuzzer target: attach a region image a peer wrote.
 *
 * The input is a region image (header, participant slots, directory, object
 * bytes; fuzz_format.h has the layout) with flags that can repair the
 * checksums so the fuzzer gets past them. The image is attached with
 * portal_region_attach_mem, or put in a memfd and attached as "fd:N"; every
 * directory entry is looked up by name, the objects found are opened with
 * their kind's attach function and used once, and then the image is patched
 * (a peer rewriting the header or directory after attach) and looked up
 * again.
 *
 * Invariants:
 *  - every result is a documented code, and validate/attach give exactly
 *    the code a reference implementation of region-format.md section 7.1
 *    gives (the checks in their documented order);
 *  - attach is validate plus the slot claim: -EINVAL for a side past
 *    part_count, -EBUSY for a slot JOINING or held by another live pid;
 *  - a lookup right after attach never fails the directory checks, and its
 *    entry is one with that name; every lookup's object lies inside the
 *    region as seen at attach (and ASan checks every byte of it is readable
 *    inside the image);
 *  - descriptor, message and broadcast ring attach give exactly the code
 *    of region-format.md 7.3, 7.4 and 7.6 (doorbells: 7.8), and a handle
 *    that attached moves one element without leaving the object;
 *  - after the peer rewrites the directory, lookups give 0, -ENOENT,
 *    PORTAL_ECHECKSUM or PORTAL_EDIR as the same reference says, and never
 *    an object outside the attach-time region.
 */
#include <sys/mman.h>
#include <signal.h>
#include <unistd.h>
#include <zlib.h>

#include "fuzz/fuzz_format.h"
#include "fuzz/fuzz_util.h"

#include "arena/arena_internal.h"
#include "portal/arena.h"
#include "portal/doorbell.h"
#include "portal/region.h"
#include "portal/ring.h"

FZ_DEFINE_GLOBALS

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fz_init();
	return 0;
}

static uint32_t crc(const void *p, size_t n)
{
	return (uint32_t)crc32(0L, p, (uInt)n);
}

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* ------------------------------------------------------------------ */
/* Reference checks, written from region-format.md section 7            */
/* ------------------------------------------------------------------ */

struct geom {
	uint64_t size;
	uint32_t dir_offset, dir_capacity, part_count, data_offset, region_id;
};

/* 7.1 step 8 for one entry copy. */
static int ref_entry(const struct portal_dir_entry *e, const struct geom *g)
{
	if (crc(e, 124) != e->checksum)
		return PORTAL_ECHECKSUM;
	if (!memchr(e->name, 0, sizeof(e->name)) || e->name[0] == 0)
		return PORTAL_EDIR;
	if (e->kind == 0 || e->kind > 6 || e->offset % 64)
		return PORTAL_EDIR;
	if (e->size == 0 || e->offset < g->data_offset || e->offset > g->size ||
	    e->size > g->size - e->offset)
		return PORTAL_EDIR;
	return 0;
}

/* 7.1 steps 8-9 on COUNT entries. */
static int ref_directory(const uint8_t *img, const struct geom *g, uint32_t count)
{
	const struct portal_dir_entry *dir = (const void *)(img + g->dir_offset);

	for (uint32_t i = 0; i < count; i++) {
		struct portal_dir_entry e;
		int rc;

		memcpy(&e, &dir[i], sizeof(e));
		rc = ref_entry(&e, g);
		if (rc)
			return rc;
	}
	/* Overlap, as the code defines it: an entry starts inside another's
	 * extent (no entry is empty by now, so the sort order cannot matter). */
	for (uint32_t i = 0; i < count; i++)
		for (uint32_t j = 0; j < count; j++) {
			uint64_t oi = dir[i].offset, si = dir[i].size, oj = dir[j].offset;

			if (i != j && oj >= oi && oj - oi < si)
				return PORTAL_EDIR;
		}
	return 0;
}

/* 7.1 steps 1-9: what validate must return for the image as it is now. */
static int ref_validate(const uint8_t *img, size_t len, struct geom *g)
{
	struct portal_region_hdr h;
	uint32_t count;

	if (len < 4096)
		return PORTAL_ESIZE;
	memcpy(&h, img, sizeof(h));
	count = atomic_load_explicit(&((const struct portal_region_hdr *)(void *)img)->dir_count,
				     memory_order_relaxed);
	if (h.magic != PORTAL_REGION_MAGIC)
		return PORTAL_EMAGIC;
	if (h.version_major != 1)
		return PORTAL_EVERSION;
	if (h.region_size != len || h.header_size != 4096)
		return PORTAL_ESIZE;
	if (crc(&h, 60) != h.hdr_checksum)
		return PORTAL_ECHECKSUM;
	if (h.part_offset != 1024 || h.part_count < 2 || h.part_count > 48 ||
	    h.dir_offset < 4096 || h.dir_offset % 64 ||
	    (uint64_t)h.dir_offset + 128ull * h.dir_capacity > h.data_offset ||
	    h.data_offset > h.region_size || count > h.dir_capacity || h.region_id == 0)
		return PORTAL_EDIR;
	g->size = len;
	g->dir_offset = h.dir_offset;
	g->dir_capacity = h.dir_capacity;
	g->part_count = h.part_count;
	g->data_offset = h.data_offset;
	g->region_id = h.region_id;
	return ref_directory(img, g, count);
}

static bool pid_alive(uint64_t pid)
{
	if (pid == 0 || pid > INT32_MAX)
		return false;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

static bool attach_code(int rc)
{
	return fz_rc_in(rc, 8, 0, PORTAL_EMAGIC, PORTAL_EVERSION, PORTAL_ESIZE, PORTAL_ECHECKSUM,
			PORTAL_EDIR, -EINVAL, -EBUSY);
}

/* ------------------------------------------------------------------ */
/* Objects                                                             */
/* ------------------------------------------------------------------ */

/* Read every byte of the object: ASan says whether it is all inside. */
static uint64_t touch(const void *p, uint64_t n)
{
	const volatile uint8_t *b = p;
	uint64_t s = 0;

	for (uint64_t i = 0; i < n; i++)
		s += b[i];
	return s;
}

/* Claim records of one side (region-format.md 6.1): the attach of a
 * multi-side handle takes a FREE one; failing that, a RETIRED one whose
 * claim it can settle (or it finds the record corrupt); else -EBUSY.
 * Returns the count of records in STATE. */
static uint32_t ring_records_in(const void *mem, uint64_t first, uint32_t n, uint32_t state)
{
	const struct portal_ring_claim *c = (const void *)((const uint8_t *)mem + first);
	uint32_t k = 0;

	for (uint32_t i = 0; i < n; i++)
		k += atomic_load_explicit(&c[i].state, memory_order_relaxed) == state;
	return k;
}

/* Does a call of ROLE on a multi-side ring find a foreign claim in flight? */
static bool claim_in_flight(void *mem, const struct portal_ring_hdr *h, int role, uint32_t nrec)
{
	struct portal_ring_hdr *s = mem;
	bool multi = role == PORTAL_ROLE_PRODUCER ? h->mode != PORTAL_RING_SPSC
						  : h->mode == PORTAL_RING_MPMC;

	/* A recoverable side never waits for another handle's claim. */
	if (!multi || nrec)
		return false;
	if (role == PORTAL_ROLE_PRODUCER)
		return atomic_load_explicit(&s->prod_head, memory_order_relaxed) !=
		       atomic_load_explicit(&s->prod_tail, memory_order_relaxed);
	return atomic_load_explicit(&s->cons_head, memory_order_relaxed) !=
	       atomic_load_explicit(&s->cons_tail, memory_order_relaxed);
}

static void use_ring(void *mem, size_t len)
{
	struct portal_ring_hdr h;
	int want = 0;
	uint32_t nrec[2] = { 0, 0 }; /* producer, consumer claim records */
	uint64_t base = 0;

	/* 7.3 */
	if (len < 384) {
		want = PORTAL_EPROTO;
	} else {
		uint64_t prod, cons;
		uint16_t mp, mc;
		uint32_t rf;

		memcpy(&h, mem, 24);
		memcpy(&mp, (uint8_t *)mem + 24, 2);
		memcpy(&mc, (uint8_t *)mem + 26, 2);
		memcpy(&rf, (uint8_t *)mem + 28, 4);
		base = 384 + (uint64_t)h.capacity * h.slot_size;
		/* A ring with claim records: sizes within bounds, producer
		 * records only on a multi-producer ring, consumer records only
		 * on MPMC, the one known flag, and the size to match. */
		if (h.obj_size != base && mp + mc > 0 && mp <= PORTAL_RING_MAX_CLAIMS &&
		    mc <= PORTAL_RING_MAX_CLAIMS && (mp == 0 || h.mode != PORTAL_RING_SPSC) &&
		    (mc == 0 || h.mode == PORTAL_RING_MPMC) && rf <= PORTAL_RING_F_POISON &&
		    h.obj_size == base + (uint64_t)(mp + mc) * sizeof(struct portal_ring_claim)) {
			nrec[0] = mp;
			nrec[1] = mc;
			base = h.obj_size;
		}
		prod = atomic_load_explicit(&((struct portal_ring_hdr *)mem)->prod_tail,
					    memory_order_relaxed);
		cons = atomic_load_explicit(&((struct portal_ring_hdr *)mem)->cons_tail,
					    memory_order_relaxed);
		if (h.magic != PORTAL_RING_MAGIC || h.version != 1 || h.mode < 1 || h.mode > 3 ||
		    !pow2(h.slot_size) || h.slot_size < 8 || h.slot_size > 256 ||
		    !pow2(h.capacity) || h.capacity < 2 || h.capacity > (1u << 30) ||
		    h.obj_size != base || h.obj_size > len || prod - cons > h.capacity)
			want = PORTAL_EPROTO;
	}
	for (int role = PORTAL_ROLE_PRODUCER; role <= PORTAL_ROLE_CONSUMER; role++) {
		portal_ring_t *r = NULL;
		uint32_t n = nrec[role - PORTAL_ROLE_PRODUCER];
		uint64_t first = 384 + (uint64_t)h.capacity * h.slot_size +
				 (role == PORTAL_ROLE_PRODUCER ? 0 : nrec[0]) *
					 sizeof(struct portal_ring_claim);
		/* Judged before the attach, which takes a record. */
		bool free_rec = !n || ring_records_in(mem, first, n, PORTAL_CLAIM_FREE);
		bool retired = n && ring_records_in(mem, first, n, PORTAL_CLAIM_RETIRED);
		int expect = want == 0 && !free_rec ? -EBUSY : want;
		int rc = portal_ring_attach(mem, len, role, &r);
		uint8_t *el;

		if (want == 0 && !free_rec && retired)
			FZ_CHECK(fz_rc_in(rc, 3, 0, -EBUSY, PORTAL_EPROTO), "ring attach: %d", rc);
		else
			FZ_CHECK(rc == expect, "ring attach: %d, reference says %d", rc, expect);
		if (rc)
			continue;
		FZ_CHECK(portal_ring_slot_size(r) == h.slot_size && portal_ring_capacity(r) == h.capacity,
			 "ring geometry differs from the header");
		/* A multi-side handle of a ring without claim records publishes
		 * after every earlier claim of its side. A claim in flight (the
		 * image's head ahead of its tail) belongs to a member of the
		 * trust domain that may never publish it: the call would wait
		 * for it (ring.h), so it is not made here. Recoverable rings
		 * never wait for another handle: their calls are made. */
		if (claim_in_flight(mem, &h, role, n)) {
			portal_ring_detach(r);
			continue;
		}
		el = malloc(h.slot_size);
		memset(el, 0x5a, h.slot_size);
		if (role == PORTAL_ROLE_PRODUCER) {
			rc = portal_ring_enqueue(r, el);
			FZ_CHECK(fz_rc_in(rc, 3, 0, -EAGAIN, PORTAL_EPROTO), "enqueue: %d", rc);
		} else {
			rc = portal_ring_count(r);
			FZ_CHECK(rc == PORTAL_EPROTO || (rc >= 0 && (uint32_t)rc <= h.capacity),
				 "count: %d", rc);
			rc = portal_ring_dequeue(r, el);
			FZ_CHECK(fz_rc_in(rc, 3, 0, -EAGAIN, PORTAL_EPROTO), "dequeue: %d", rc);
		}
		free(el);
		portal_ring_detach(r);
	}
}

static void use_msgring(void *mem, size_t len)
{
	struct portal_msgring_hdr h;
	int want = 0;
	uint64_t at_tail = 0; /* the record header word at prod_tail */

	/* 7.4 */
	if (len < 384) {
		want = PORTAL_EPROTO;
	} else {
		uint64_t prod, cons;

		memcpy(&h, mem, 24);
		prod = atomic_load_explicit(&((struct portal_msgring_hdr *)mem)->prod_tail,
					    memory_order_relaxed);
		cons = atomic_load_explicit(&((struct portal_msgring_hdr *)mem)->cons_head,
					    memory_order_relaxed);
		if (h.magic != PORTAL_MSGRING_MAGIC || h.version != 1 || !pow2(h.capacity) ||
		    h.capacity < 256 || h.capacity > (1u << 30) || h.max_msg < 1 ||
		    h.max_msg > h.capacity / 2 - 16 || h.obj_size != 384 + (uint64_t)h.capacity ||
		    h.obj_size > len || prod - cons > h.capacity || prod % 8 || cons % 8)
			want = PORTAL_EPROTO;
		else
			memcpy(&at_tail, (uint8_t *)mem + 384 + (prod & (h.capacity - 1)), 8);
	}
	for (int role = PORTAL_ROLE_PRODUCER; role <= PORTAL_ROLE_CONSUMER; role++) {
		portal_msgring_t *m = NULL;
		int rc = portal_msgring_attach(mem, len, role, &m);

		/* A producer finding a header at prod_tail (a predecessor
		 * killed inside commit) steps past it if it is a whole
		 * committed record, and refuses anything else (recovery.md). */
		if (role == PORTAL_ROLE_PRODUCER && want == 0 && at_tail != 0)
			FZ_CHECK(rc == 0 || rc == PORTAL_EPROTO, "msgring producer attach: %d", rc);
		else
			FZ_CHECK(rc == want, "msgring attach: %d, reference says %d", rc, want);
		if (rc)
			continue;
		FZ_CHECK(portal_msgring_max_msg(m) == h.max_msg, "max_msg differs from the header");
		if (role == PORTAL_ROLE_PRODUCER) {
			rc = portal_msgring_send(m, "x", 1);
			FZ_CHECK(fz_rc_in(rc, 3, 0, -EAGAIN, PORTAL_EPROTO), "send: %d", rc);
		} else {
			uint8_t *buf = malloc(h.max_msg);
			ssize_t n = portal_msgring_recv(m, buf, h.max_msg);

			FZ_CHECK(n == -EAGAIN || n == PORTAL_EPROTO || (n >= 0 && n <= (ssize_t)h.max_msg),
				 "recv: %zd", n);
			free(buf);
		}
		portal_msgring_detach(m);
	}
}

static void use_bcast(void *mem, size_t len)
{
	struct portal_bcast_hdr h;
	int want = 0;

	/* 7.6 */
	if (len < 256) {
		want = PORTAL_EPROTO;
	} else {
		memcpy(&h, mem, 32);
		if (h.magic != PORTAL_BCAST_MAGIC || h.version != 1 || h.mode < 1 || h.mode > 2 ||
		    h.slot_size < 8 || h.slot_size > 256 || h.slot_size % 8 || !pow2(h.capacity) ||
		    h.capacity < 2 || h.capacity > (1u << 28) || h.max_subs < 1 || h.max_subs > 64 ||
		    h.stride != 8 + h.slot_size ||
		    h.obj_size != 256 + 128ull * h.max_subs + (uint64_t)h.capacity * (8 + h.slot_size) ||
		    h.obj_size > len)
			want = PORTAL_EPROTO;
	}
	for (int sub = -1; sub <= 0; sub++) {
		portal_bcast_t *b = NULL;
		int rc, w = want;
		uint8_t *msg;
		uint64_t lost = 0;

		if (!w && sub == 0 &&
		    (uint32_t)atomic_load_explicit(&((struct portal_bcast_sub *)(void *)
						       ((uint8_t *)mem + 256))->state,
						     memory_order_relaxed) != PORTAL_BCAST_SUB_FREE)
			w = -EBUSY;
		rc = portal_bcast_attach(mem, len, sub, &b);
		FZ_CHECK(rc == w, "bcast attach(%d): %d, reference says %d", sub, rc, w);
		if (rc)
			continue;
		msg = malloc(h.slot_size);
		memset(msg, 0x3c, h.slot_size);
		if (sub < 0) {
			rc = portal_bcast_publish(b, msg);
			FZ_CHECK(fz_rc_in(rc, 2, 0, -EAGAIN), "publish: %d", rc);
		} else {
			rc = portal_bcast_read(b, msg, &lost);
			FZ_CHECK(fz_rc_in(rc, 4, 0, -EAGAIN, -EOVERFLOW, PORTAL_EPROTO), "read: %d", rc);
		}
		free(msg);
		portal_bcast_detach(b);
	}
}

static void use_arena(const struct portal_object_info *info, uint32_t region_id, void *base)
{
	portal_arena_t *a = NULL;
	struct portal_span spans[64];
	unsigned n = 0;
	int rc = arena_attach_seeded(info->addr, (size_t)info->size, info->offset, region_id, 42, &a);

	FZ_CHECK(fz_rc_in(rc, 3, 0, PORTAL_EPROTO, -EINVAL), "arena attach: %d", rc);
	if (rc)
		return;
	/* Whatever the header said, every block handed out lies in the object. */
	for (size_t want = 64; n < 64; n++) {
		void *p = NULL;

		rc = portal_arena_alloc(a, want, &spans[n], &p);
		if (rc == -EMSGSIZE || rc == -ENOSPC)
			break;
		FZ_CHECK(rc == 0, "arena alloc: %d", rc);
		FZ_CHECK(spans[n].offset >= info->offset + 256 &&
			 spans[n].offset - info->offset <= info->size &&
			 spans[n].length <= info->size - (spans[n].offset - info->offset),
			 "arena block outside the object");
		memset(p, 0xa5, spans[n].length);
		if (n % 3 == 2)
			want *= 2;
	}
	for (unsigned i = 0; i < n; i++) {
		void *p;

		rc = portal_arena_resolve(info, region_id, base, &spans[i], &p);
		FZ_CHECK(rc == 0, "resolve of a span just allocated: %d", rc);
		rc = portal_arena_free(a, &spans[i]);
		FZ_CHECK(rc == 0, "free of a span just allocated: %d", rc);
	}
	portal_arena_detach(a);
}

static void use_doorbell(void *mem, size_t len)
{
	const struct portal_doorbell_shm *s = mem;
	portal_doorbell_t *d = NULL;
	int rc, want = 0;

	/* 7.8; only the futex backend attaches without options. */
	if (len < 384)
		want = PORTAL_EPROTO;
	else if (s->magic != PORTAL_DOORBELL_MAGIC || s->version != 1)
		want = PORTAL_EPROTO;
	else if (s->backend != PORTAL_DOORBELL_FUTEX)
		return;
	rc = portal_doorbell_attach(mem, len, PORTAL_DOORBELL_NOTIFIER, NULL, &d);
	FZ_CHECK(rc == want, "doorbell attach: %d, reference says %d", rc, want);
	if (!rc)
		portal_doorbell_detach(d);
}

static void use_object(const struct portal_object_info *info, uint32_t region_id, void *base,
		       bool writable)
{
	(void)touch(info->addr, info->size);
	if (!writable)
		return;
	switch (info->kind) {
	case PORTAL_OBJ_RING:     use_ring(info->addr, (size_t)info->size); break;
	case PORTAL_OBJ_MSGRING:  use_msgring(info->addr, (size_t)info->size); break;
	case PORTAL_OBJ_BCAST:    use_bcast(info->addr, (size_t)info->size); break;
	case PORTAL_OBJ_ARENA:    use_arena(info, region_id, base); break;
	case PORTAL_OBJ_DOORBELL: use_doorbell(info->addr, (size_t)info->size); break;
	default: break;
	}
}

/* ------------------------------------------------------------------ */
/* Lookups                                                             */
/* ------------------------------------------------------------------ */

struct patch {
	uint16_t off;
	uint8_t val, count;
};

/* Check a lookup's answer against the entries of IMG. */
static void check_lookup(portal_region_t *r, const uint8_t *img, const struct geom *g,
			 uint32_t count, const char *name, uint32_t kind, bool fresh)
{
	const struct portal_dir_entry *dir = (const void *)(img + g->dir_offset);
	struct portal_object_info info;
	bool named = false, all_kinded = true, match = false;
	int want = count > g->dir_capacity ? PORTAL_EDIR : ref_directory(img, g, count);
	int rc = portal_region_lookup(r, name, kind, &info);

	if (want) {
		FZ_CHECK(rc == want, "lookup: %d, reference says %d", rc, want);
		return;
	}
	FZ_CHECK(!fresh || rc == 0 || rc == -ENOENT, "lookup right after attach: %d", rc);
	FZ_CHECK(rc == 0 || rc == -ENOENT, "lookup: %d, reference says the directory is valid", rc);
	for (uint32_t i = 0; i < count; i++) {
		if (strncmp(dir[i].name, name, PORTAL_NAME_MAX) != 0)
			continue;
		named = true;
		if (kind && dir[i].kind != kind)
			all_kinded = false;
		if (rc == 0 && (!kind || dir[i].kind == kind) && dir[i].kind == info.kind &&
		    dir[i].offset == info.offset && dir[i].size == info.size &&
		    dir[i].owner_side == info.owner_side &&
		    !memcmp(dir[i].param, info.param, sizeof(info.param)))
			match = true;
	}
	if (rc == -ENOENT) {
		/* Names may repeat in a forged directory: the first one found
		 * decides, and it may have another kind. */
		FZ_CHECK(!named || !all_kinded, "lookup: -ENOENT for \"%.47s\" kind %u, which is there",
			 name, kind);
		return;
	}
	FZ_CHECK(match, "lookup found \"%.47s\" kind %u, not an entry of the directory", name, kind);
	FZ_CHECK(strncmp(info.name, name, PORTAL_NAME_MAX) == 0, "lookup: other name");
	FZ_CHECK(!kind || info.kind == kind, "lookup: kind %u, asked %u", info.kind, kind);
	FZ_CHECK(info.offset >= g->data_offset && info.offset <= g->size &&
		 info.size <= g->size - info.offset && info.offset % 64 == 0,
		 "lookup: object [%llu, +%llu) outside the region", (unsigned long long)info.offset,
		 (unsigned long long)info.size);
	FZ_CHECK((uint8_t *)info.addr == (uint8_t *)portal_region_base(r) + info.offset,
		 "lookup: addr is not base + offset");
}

static void name_of(const uint8_t *img, const struct geom *g, uint32_t i, char *name)
{
	memcpy(name, img + g->dir_offset + (size_t)i * 128, PORTAL_NAME_MAX);
	name[PORTAL_NAME_MAX - 1] = 0;
}

/* ------------------------------------------------------------------ */

static size_t image_len(uint8_t sel)
{
	if (sel == 0xff)
		return 4000;
	return 4096u * (1u + (sel & 15u)) + 8u * (sel >> 4);
}

static void apply_patches(uint8_t *img, size_t len, int fd, const struct patch *pt, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		size_t off = pt[i].off % len;
		unsigned k = 1 + pt[i].count % 4;

		for (unsigned j = 0; j < k && off + j < len; j++) {
			img[off + j] = pt[i].val;
			if (fd >= 0 && pwrite(fd, &pt[i].val, 1, (off_t)(off + j)) != 1)
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t flags = fz_u8(&in), sizesel = fz_u8(&in), side = fz_u8(&in);
	unsigned nparts = fz_u8(&in) % 49, ndir = fz_u8(&in), npatch = fz_u8(&in);
	uint64_t our_epoch = 0; /* our slot's epoch after attach */
	size_t len = image_len(sizesel);
	uint8_t *img = fz_alloc(len), *view;
	struct portal_region_hdr h;
	struct patch patches[256];
	uint8_t chunk[128];
	struct portal_region_opts opts = { 0 };
	struct geom g;
	portal_region_t *r = NULL;
	uint32_t dir_off, count, eff_side;
	bool readonly = flags & FZR_F_READONLY, use_fd = flags & FZR_F_FD_BACKEND;
	int fd = -1, vrc, want, rc;

	memset(img, 0, len);
	fz_bytes(&in, chunk, FZR_HDR_BYTES);
	memcpy(img, chunk, FZR_HDR_BYTES);
	for (unsigned i = 0; i < nparts; i++) {
		fz_bytes(&in, chunk, 64);
		if (1024 + 64 * (i + 1) <= len)
			memcpy(img + 1024 + 64 * i, chunk, 64);
	}
	memcpy(&h, img, sizeof(h));
	dir_off = h.dir_offset;
	if ((uint64_t)dir_off + 128ull * ndir > len)
		dir_off = 4096;
	for (unsigned i = 0; i < ndir; i++) {
		fz_bytes(&in, chunk, 128);
		if ((uint64_t)dir_off + 128ull * (i + 1) <= len)
			memcpy(img + dir_off + 128 * i, chunk, 128);
	}
	for (unsigned i = 0; i < npatch; i++) {
		patches[i].off = fz_u16(&in);
		patches[i].val = fz_u8(&in);
		patches[i].count = fz_u8(&in);
	}
	if (h.data_offset < len) {
		size_t k = len - h.data_offset < in.n ? len - h.data_offset : in.n;

		memcpy(img + h.data_offset, in.p, k);
	}

	if (flags & FZR_F_PATCH_FIRST)
		apply_patches(img, len, -1, patches, npatch);
	/* Fix-ups, so that the fuzzer gets past the checksums. */
	if (flags & FZR_F_FIX_DIR_CRC)
		for (unsigned i = 0; i < ndir && (uint64_t)dir_off + 128ull * (i + 1) <= len; i++) {
			uint8_t *e = img + dir_off + 128 * i; /* dir_off may be unaligned */
			uint32_t c = crc(e, 124);

			memcpy(e + 124, &c, 4);
		}
	if (flags & FZR_F_FIX_COUNT)
		atomic_store_explicit(&((struct portal_region_hdr *)(void *)img)->dir_count, ndir,
				      memory_order_relaxed);
	if (flags & FZR_F_FIX_SIZE)
		((struct portal_region_hdr *)(void *)img)->region_size = len;
	if (flags & FZR_F_FIX_HDR_CRC)
		((struct portal_region_hdr *)(void *)img)->hdr_checksum = crc(img, 60);

	/* Validate, then attach: the same verdict as the reference. */
	want = ref_validate(img, len, &g);
	vrc = portal_region_validate(img, len);
	FZ_CHECK(vrc == want,
		 "validate: %d (%s), reference says %d", vrc, portal_strerror(vrc), want);
	if (vrc == 0) {
		const struct portal_participant *p;

		eff_side = side ? side : 1;
		if (readonly) {
			want = 0;
		} else if (eff_side >= g.part_count) {
			want = -EINVAL;
		} else {
			p = (const void *)(img + 1024 + 64 * eff_side);
			uint32_t st = atomic_load_explicit(&p->state, memory_order_relaxed);

			want = st == PORTAL_PART_JOINING ||
					       (st == PORTAL_PART_ACTIVE && pid_alive(p->pid) &&
						p->pid != (uint64_t)getpid())
				       ? -EBUSY
				       : 0;
		}
	} else {
		want = vrc;
	}
	opts.side = side;
	opts.flags = readonly ? PORTAL_REGION_F_READONLY : 0;
	opts.ident = "fuzz";
	if (use_fd) {
		char uri[32];

		fd = memfd_create("portal-fuzz", MFD_CLOEXEC);
		FZ_CHECK(fd >= 0, "memfd_create: %d", errno);
		if (pwrite(fd, img, len, 0) != (ssize_t)len)
			abort();
		snprintf(uri, sizeof(uri), "fd:%d", fd);
		rc = portal_region_attach(uri, &opts, &r);
	} else {
		rc = portal_region_attach_mem(img, len, &opts, &r);
	}
	FZ_TRACE("region: len %zu flags %#x validate %d attach %d\n", len, flags, vrc, rc);
	FZ_CHECK(attach_code(rc), "attach: undocumented %d", rc);
	FZ_CHECK(rc == want, "attach: %d (%s), expected %d", rc, portal_strerror(rc), want);
	if (rc)
		goto out;

	view = portal_region_base(r);
	FZ_CHECK(use_fd || view == img, "base is not the memory given");
	FZ_CHECK(portal_region_size(r) == len && portal_region_id(r) == g.region_id,
		 "handle geometry differs from the header");
	FZ_CHECK(portal_region_side(r) == (readonly ? UINT32_MAX : eff_side), "side %u",
		 portal_region_side(r));
	FZ_CHECK(use_fd ? portal_region_fd(r) >= 0 : portal_region_fd(r) == -1, "fd");
	for (uint32_t s = 0; s <= g.part_count; s++) {
		struct portal_participant_info pi;

		rc = portal_region_participant(r, s, &pi);
		FZ_CHECK(rc == (s < g.part_count ? 0 : -EINVAL), "participant(%u): %d", s, rc);
		FZ_CHECK(rc || memchr(pi.ident, 0, sizeof(pi.ident)), "ident not terminated");
	}
	if (!use_fd && !readonly)
		our_epoch = atomic_load_explicit(
			&((const struct portal_participant *)(const void *)(img + 1024 + 64 * eff_side))->epoch,
			memory_order_relaxed);
	rc = portal_region_heartbeat(r);
	FZ_CHECK(readonly ? rc == -EINVAL : rc == 0 || rc == PORTAL_ESTALE, "heartbeat: %d", rc);

	/* Look every entry up, and open what was found. */
	count = atomic_load_explicit(&((struct portal_region_hdr *)(void *)view)->dir_count,
				     memory_order_relaxed);
	for (uint32_t i = 0; i < count && i < 64; i++) {
		struct portal_object_info info;
		char name[PORTAL_NAME_MAX];
		uint32_t kind = ((const struct portal_dir_entry *)(const void *)(view + g.dir_offset))[i].kind;

		name_of(view, &g, i, name);
		check_lookup(r, view, &g, count, name, 0, true);
		check_lookup(r, view, &g, count, name, kind, true);
		check_lookup(r, view, &g, count, name, kind % 6 + 1, true);
		if ((flags & FZR_F_OBJECTS) && portal_region_lookup(r, name, 0, &info) == 0)
			use_object(&info, g.region_id, view, !(use_fd && readonly));
	}
	check_lookup(r, view, &g, count, "\x01no such object", 0, true);

	/* The peer rewrites the header or directory after attach. */
	if (!(flags & FZR_F_PATCH_FIRST) && npatch) {
		struct portal_participant_info pi;

		if (use_fd && readonly)
			apply_patches(img, len, fd, patches, npatch); /* the mapping is read-only */
		else
			apply_patches(view, len, -1, patches, npatch);
		count = atomic_load_explicit(&((struct portal_region_hdr *)(void *)view)->dir_count,
					     memory_order_relaxed);
		for (uint32_t i = 0; i < count && i < g.dir_capacity && i < 64; i++) {
			char name[PORTAL_NAME_MAX];

			name_of(view, &g, i, name);
			check_lookup(r, view, &g, count, name, 0, false);
		}
		check_lookup(r, view, &g, count, "\x01no such object", 0, false);
		rc = portal_region_participant(r, 0, &pi);
		FZ_CHECK(rc == 0, "participant after patch: %d", rc);
	}

	if (!use_fd && !readonly) {
		const struct portal_participant *p = (const void *)(img + 1024 + 64 * eff_side);
		/* A patch that rewrote our slot's epoch or state took it over
		 * (or freed it): we are fenced, and detach must leave the slot
		 * alone (region.h, portal_region_check_self). */
		bool ours = atomic_load_explicit(&p->epoch, memory_order_relaxed) == our_epoch &&
			    atomic_load_explicit(&p->state, memory_order_relaxed) == PORTAL_PART_ACTIVE;
		uint8_t before[64];

		memcpy(before, (const void *)p, sizeof(before));
		rc = portal_region_detach(r);
		FZ_CHECK(rc == 0, "detach: %d", rc);
		if (ours)
			FZ_CHECK(atomic_load_explicit(&p->state, memory_order_relaxed) ==
					 PORTAL_PART_GONE,
				 "detach did not mark the slot gone");
		else
			FZ_CHECK(!memcmp(before, (const void *)p, sizeof(before)),
				 "detach wrote a slot that was taken over");
	} else {
		rc = portal_region_detach(r);
		FZ_CHECK(rc == 0, "detach: %d", rc);
	}
out:
	if (fd >= 0)
		close(fd);
	free(img);
	return 0;
}
