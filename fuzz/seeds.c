/* SPDX-License-Identifier: MIT */
/*
 * seeds.c - writes the seed corpora of the fuzz targets:
 *
 *   portal_fuzz_seeds DIR      (fuzz/run.sh --seeds: DIR is fuzz/corpus)
 *
 * writes DIR/<target>/<name> for every target. The region images are real
 * regions built by this library (portal_region_create on a memfd, one
 * object of every kind, some traffic), encoded as region_attach reads them,
 * plus variants that each stop at one documented refusal. The scripts are
 * valid sessions that reach the deep paths: wraps, multi-writer claims,
 * PAD records, lapping, quarantine then heal and re-attach, every span
 * refusal. Input layouts: fuzz_format.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fuzz/fuzz_format.h"

#include "portal/arena.h"
#include "portal/doorbell.h"
#include "portal/region.h"
#include "portal/ring.h"

static const char *root;
static unsigned written;

struct buf {
	uint8_t b[16384];
	size_t n;
};

static void put8(struct buf *b, unsigned v)
{
	if (b->n < sizeof(b->b))
		b->b[b->n++] = (uint8_t)v;
}

static void put16(struct buf *b, unsigned v)
{
	put8(b, v & 0xff);
	put8(b, (v >> 8) & 0xff);
}

static void put32(struct buf *b, uint32_t v)
{
	put16(b, v & 0xffff);
	put16(b, v >> 16);
}

static void put64(struct buf *b, uint64_t v)
{
	put32(b, (uint32_t)v);
	put32(b, (uint32_t)(v >> 32));
}

static void putn(struct buf *b, const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		put8(b, ((const uint8_t *)p)[i]);
}

static void save(const char *target, const char *name, const struct buf *b)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->b, 1, b->n, f) != b->n || fclose(f)) {
		fprintf(stderr, "seeds: cannot write %s\n", path);
		exit(1);
	}
	written++;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "seeds: %s: %d (%s)\n", what, rc, portal_strerror(rc));
	exit(1);
}

/* ------------------------------------------------------------------ */
/* region_attach                                                       */
/* ------------------------------------------------------------------ */

struct image {
	uint8_t *p;
	size_t size;
	uint32_t parts, ndir, data_offset;
	uint64_t used;
};

/* A real region: one object of every kind, with some traffic in them. */
static void build_region(struct image *im, uint64_t size, uint32_t dir_cap, uint32_t parts,
			 bool objects)
{
	struct portal_region_opts o = { .size = size, .dir_capacity = dir_cap, .part_count = parts,
					.region_id = 0x5eed };
	static portal_region_t *r; /* kept mapped: the image points into it */
	const struct portal_region_hdr *h;
	int rc;

	rc = portal_region_create("memfd:portal-seed", &o, &r);
	if (rc)
		die("region create", rc);
	if (objects) {
		struct portal_ring_params rp = { .mode = PORTAL_RING_SPSC, .slot_size = 16, .capacity = 4 };
		struct portal_msgring_params mp = { .capacity = 256, .max_msg = 60 };
		struct portal_bcast_params bp = { .mode = PORTAL_BCAST_HOLD, .slot_size = 8,
						  .capacity = 4, .max_subs = 2 };
		struct portal_arena_params ap = { .nclasses = 2, .cls = { { 64, 2 }, { 128, 1 } },
						  .bump_size = 64 };
		portal_ring_t *q;
		portal_msgring_t *m;
		portal_bcast_t *bc;
		uint8_t el[16] = "element";

		if ((rc = portal_ring_create(r, "ring", &rp, 0)) ||
		    (rc = portal_msgring_create(r, "msgring", &mp, 0)) ||
		    (rc = portal_bcast_create(r, "bcast", &bp, 0)) ||
		    (rc = portal_arena_create(r, "arena", &ap, 1, NULL)) ||
		    (rc = portal_doorbell_create(r, "doorbell", PORTAL_DOORBELL_FUTEX, 1)) ||
		    (rc = portal_region_alloc(r, "user", PORTAL_OBJ_USER, 64, 0, 0, NULL, NULL)))
			die("object create", rc);
		/* Traffic: two elements, one message, one broadcast. */
		if ((rc = portal_ring_open(r, "ring", PORTAL_ROLE_PRODUCER, &q)))
			die("ring open", rc);
		portal_ring_enqueue(q, el);
		portal_ring_enqueue(q, el);
		portal_ring_detach(q);
		if ((rc = portal_msgring_open(r, "msgring", PORTAL_ROLE_PRODUCER, &m)))
			die("msgring open", rc);
		portal_msgring_send(m, "hello", 5);
		portal_msgring_detach(m);
		if ((rc = portal_bcast_open(r, "bcast", -1, &bc)))
			die("bcast open", rc);
		portal_bcast_publish(bc, el);
		portal_bcast_detach(bc);
	}
	im->p = portal_region_base(r);
	im->size = portal_region_size(r);
	h = (const void *)im->p;
	im->parts = h->part_count;
	im->ndir = atomic_load_explicit(&h->dir_count, memory_order_relaxed);
	im->data_offset = h->data_offset;
	im->used = atomic_load_explicit(&h->data_used, memory_order_relaxed);
	/* The creator holds slot 0; leave slot 1 free for the fuzz attach. */
}

/* Encode IM as region_attach's input. */
static void encode(struct buf *b, const struct image *im, unsigned flags, unsigned side,
		   const uint8_t *patches, unsigned npatch)
{
	uint64_t used = im->used;

	b->n = 0;
	put8(b, flags);
	put8(b, (unsigned)(im->size / 4096 - 1)); /* page multiples up to 16 */
	put8(b, side);
	put8(b, im->parts);
	put8(b, im->ndir);
	put8(b, npatch);
	putn(b, im->p, FZR_HDR_BYTES);
	putn(b, im->p + 1024, 64u * im->parts);
	putn(b, im->p + 4096, 128u * im->ndir);
	putn(b, patches, 4u * npatch);
	while (used && im->p[im->data_offset + used - 1] == 0)
		used--;
	putn(b, im->p + im->data_offset, used);
}

static void seeds_region(void)
{
	struct image full, empty, wide;
	struct buf b;
	uint8_t save_hdr[128];

	build_region(&full, 3 * 4096, 8, 2, true);
	encode(&b, &full, FZR_F_OBJECTS, 1, NULL, 0);
	save("region_attach", "full-objects", &b);
	encode(&b, &full, FZR_F_OBJECTS | FZR_F_FD_BACKEND, 1, NULL, 0);
	save("region_attach", "full-fd", &b);
	encode(&b, &full, FZR_F_OBJECTS | FZR_F_READONLY, 0, NULL, 0);
	save("region_attach", "full-readonly", &b);
	encode(&b, &full, FZR_F_OBJECTS | FZR_F_READONLY | FZR_F_FD_BACKEND, 0, NULL, 0);
	save("region_attach", "full-readonly-fd", &b);
	encode(&b, &full, FZR_F_OBJECTS, 5, NULL, 0);
	save("region_attach", "side-out-of-range", &b);
	{
		/* After attach the peer rewrites: dir_count, a name, an offset, a
		 * kind, the header checksum. */
		const uint8_t p[] = {
			64, 0, 0xff, 0,            /* dir_count = 255 */
			0x00, 0x10, 'X', 0,        /* entry 0 name */
			0xb8, 0x10, 0x40, 0,       /* entry 1 offset byte */
			0x30, 0x11, 9, 0,          /* entry 2 kind */
			60, 0, 0x11, 3,            /* hdr_checksum */
		};
		encode(&b, &full, FZR_F_OBJECTS, 1, p, sizeof(p) / 4);
		save("region_attach", "patched-after-attach", &b);
		encode(&b, &full, FZR_F_OBJECTS | FZR_F_FIX_DIR_CRC | FZR_F_PATCH_FIRST, 1, p + 4, 1);
		save("region_attach", "patched-fixed-crc", &b);
	}
	/* Object headers the peer rewrote, checksums repaired. */
	{
		uint8_t *obj;

		memcpy(save_hdr, full.p, sizeof(save_hdr));
		for (unsigned i = 0; i < full.ndir; i++) {
			const struct portal_dir_entry *e = (const void *)(full.p + 4096 + 128 * i);
			uint8_t keep[64];
			char name[64];

			obj = full.p + e->offset;
			memcpy(keep, obj, sizeof(keep));
			obj[8] ^= 0x40; /* slot size / capacity / nclasses ... */
			encode(&b, &full, FZR_F_OBJECTS, 1, NULL, 0);
			snprintf(name, sizeof(name), "object-%s-corrupt", e->name);
			save("region_attach", name, &b);
			memcpy(obj, keep, sizeof(keep));
		}
	}
	/* Refusals, in the order the checks run. */
	{
		struct portal_region_hdr *h = (void *)full.p;
		struct portal_dir_entry *e = (void *)(full.p + 4096), keep[2];

		memcpy(keep, e, sizeof(keep));

		h->magic ^= 1;
		encode(&b, &full, 0, 1, NULL, 0);
		save("region_attach", "bad-magic", &b);
		h->magic ^= 1;
		h->version_major = 2;
		encode(&b, &full, FZR_F_FIX_HDR_CRC, 1, NULL, 0);
		save("region_attach", "bad-version", &b);
		h->version_major = 1;
		h->region_size += 4096;
		encode(&b, &full, FZR_F_FIX_HDR_CRC, 1, NULL, 0);
		save("region_attach", "bad-size", &b);
		h->region_size -= 4096;
		h->flags = 1;
		encode(&b, &full, 0, 1, NULL, 0);
		save("region_attach", "bad-checksum", &b);
		h->flags = 0;
		h->dir_offset += 8;
		encode(&b, &full, FZR_F_FIX_HDR_CRC, 1, NULL, 0);
		save("region_attach", "bad-dir-offset", &b);
		h->dir_offset -= 8;
		h->part_count = 49;
		encode(&b, &full, FZR_F_FIX_HDR_CRC, 1, NULL, 0);
		save("region_attach", "bad-part-count", &b);
		h->part_count = 2;
		e[1].offset = e[0].offset + 64; /* overlaps entry 0 */
		encode(&b, &full, FZR_F_FIX_DIR_CRC, 1, NULL, 0);
		save("region_attach", "overlap", &b);
		e[1].offset = e[0].offset;
		e[1].size = 0;
		encode(&b, &full, FZR_F_FIX_DIR_CRC, 1, NULL, 0);
		save("region_attach", "empty-entry-at-same-offset", &b);
		memcpy(e, keep, sizeof(keep));
		memcpy(e[1].name, e[0].name, sizeof(e[0].name));
		encode(&b, &full, FZR_F_FIX_DIR_CRC | FZR_F_OBJECTS, 1, NULL, 0);
		save("region_attach", "duplicate-name", &b);
		memcpy(e, keep, sizeof(keep));
		memcpy(full.p, save_hdr, sizeof(save_hdr));
	}
	/* Participant slots: JOINING, held by a live pid (1), gone. */
	{
		struct portal_participant *pt = (void *)(full.p + 1024 + 64);

		atomic_store(&pt->state, PORTAL_PART_JOINING);
		encode(&b, &full, 0, 1, NULL, 0);
		save("region_attach", "slot-joining", &b);
		atomic_store(&pt->state, PORTAL_PART_ACTIVE);
		pt->pid = 1;
		encode(&b, &full, 0, 1, NULL, 0);
		save("region_attach", "slot-held", &b);
		atomic_store(&pt->state, PORTAL_PART_GONE);
		encode(&b, &full, 0, 1, NULL, 0);
		save("region_attach", "slot-gone", &b);
	}
	build_region(&empty, 3 * 4096, 4, 2, false);
	encode(&b, &empty, 0, 1, NULL, 0);
	save("region_attach", "empty", &b);
	b.b[1] = 0xff; /* 4000 bytes: shorter than a header */
	save("region_attach", "short", &b);
	build_region(&wide, 16 * 4096, 64, 48, false);
	encode(&b, &wide, FZR_F_FD_BACKEND, 47, NULL, 0);
	save("region_attach", "wide-48-slots", &b);
}

/* ------------------------------------------------------------------ */
/* ring                                                                */
/* ------------------------------------------------------------------ */

static void q_setup(struct buf *b, unsigned mode, bool consumer, unsigned slotsel, unsigned capsel,
		    unsigned base)
{
	b->n = 0;
	put8(b, (mode - 1) | (consumer ? 4 : 0));
	put8(b, slotsel | capsel << 3);
	put8(b, base);
}

static void q_op(struct buf *b, unsigned op, int a, int c)
{
	put8(b, op);
	switch (op) {
	case FZQ_BURST: put8(b, a); put8(b, c); break;
	case FZQ_WRONG: case FZQ_P_GOOD: case FZQ_P_CLAIM: case FZQ_CO: put8(b, a); break;
	case FZQ_P_FORGE: put8(b, a); put8(b, c & 0xff); put8(b, (c >> 8) & 0xff); break;
	case FZQ_P_SCRIBBLE: put8(b, a); put8(b, c); put8(b, 0x99); break;
	case FZQ_CO_FORGE: put8(b, a); put8(b, c); break;
	default: break;
	}
}

static void seeds_ring(void)
{
	struct buf b;
	char name[64];

	for (unsigned mode = 1; mode <= 3; mode++)
		for (int cons = 0; cons <= 1; cons++)
			for (unsigned base = 0; base < FZ_NBASES; base++) {
				unsigned capsel = (mode + base) % 4, cap = 2u << capsel;

				/* Traffic with wraps, claims in flight, co-claimants. */
				q_setup(&b, mode, cons, (mode + base) % 6, capsel, base);
				for (int i = 0; i < 5; i++) {
					q_op(&b, FZQ_P_GOOD, (int)cap - 1, 0);
					q_op(&b, FZQ_BURST, (int)cap, i & 1);
					q_op(&b, FZQ_COUNT, 0, 0);
					q_op(&b, FZQ_P_CLAIM, 1, 0);
					q_op(&b, FZQ_CO, 1, 0);
					q_op(&b, FZQ_ONE, 0, 0);
					q_op(&b, FZQ_P_PUBLISH, 0, 0);
					q_op(&b, FZQ_P_SCRIBBLE, i, 3);
				}
				q_op(&b, FZQ_WRONG, 0, 0);
				q_op(&b, FZQ_WRONG, 1, 0);
				q_op(&b, FZQ_WRONG, 2, 0);
				snprintf(name, sizeof(name), "traffic-m%u-%s-b%u", mode,
					 cons ? "cons" : "prod", base);
				save("ring", name, &b);

				/* A forged tail: caught, sticks; heal; re-attach; go on. */
				q_setup(&b, mode, cons, 0, capsel, base);
				q_op(&b, FZQ_P_GOOD, 2, 0);
				q_op(&b, FZQ_BURST, 1, 0);
				/* sel 2: honest position + cap + delta 1 */
				q_op(&b, FZQ_P_FORGE, 0, 2 | 1 << 8);
				q_op(&b, FZQ_BURST, (int)cap + 1, 1);
				q_op(&b, FZQ_COUNT, 0, 0);
				q_op(&b, FZQ_BURST, 1, 0);
				q_op(&b, FZQ_P_HEAL, 0, 0);
				q_op(&b, FZQ_REATTACH, 0, 0);
				q_op(&b, FZQ_P_GOOD, 2, 0);
				q_op(&b, FZQ_BURST, 4, 0);
				/* backwards (sel 0: current - 1) */
				q_op(&b, FZQ_P_FORGE, 0, 0 | 0xff << 8);
				q_op(&b, FZQ_BURST, (int)cap * 2, 0);
				q_op(&b, FZQ_P_HEAL, 0, 0);
				q_op(&b, FZQ_REATTACH, 0, 0);
				q_op(&b, FZQ_BURST, 1, 0);
				/* our own claim head out of range (multi-writer side) */
				q_op(&b, FZQ_CO_FORGE, (int)(base % 2), 3);
				q_op(&b, FZQ_BURST, 2, 1);
				q_op(&b, FZQ_CO_FORGE, 2, 0);
				q_op(&b, FZQ_REATTACH, 0, 0);
				q_op(&b, FZQ_P_GOOD, 1, 0);
				q_op(&b, FZQ_BURST, 2, 0);
				snprintf(name, sizeof(name), "forge-m%u-%s-b%u", mode,
					 cons ? "cons" : "prod", base);
				save("ring", name, &b);
			}
}

/* ------------------------------------------------------------------ */
/* msgring                                                             */
/* ------------------------------------------------------------------ */

static void m_setup(struct buf *b, bool consumer, unsigned base, unsigned seq, unsigned capsel,
		    unsigned maxsel)
{
	b->n = 0;
	put8(b, (consumer ? 1 : 0) | base << 1 | seq << 4);
	put8(b, capsel);
	put16(b, maxsel);
}

static void seeds_msgring(void)
{
	struct buf b;
	char name[64];

	for (unsigned base = 0; base < FZ_NBASES; base++)
		for (unsigned seq = 0; seq < 4; seq++) {
			unsigned capsel = (base + seq) % 3;

			/* Honest consumer: records of many lengths, PAD at the wraps. */
			m_setup(&b, true, base, seq, capsel, 100);
			for (unsigned i = 0; i < 12; i++) {
				put8(&b, FZM_P_GOOD); put16(&b, (i * 37) % 101);
				put8(&b, FZM_P_GOOD); put16(&b, i % 9);
				put8(&b, FZM_READY);
				put8(&b, FZM_RESERVE); put8(&b, i & 1);         /* peek [+release] */
				put8(&b, FZM_COMMIT);                           /* release */
				put8(&b, FZM_SEND); put16(&b, (i * 13) % 110);  /* recv */
				put8(&b, FZM_P_PAYLOAD); put8(&b, 0); put16(&b, i); put8(&b, 0x77);
			}
			put8(&b, FZM_P_INDEX); put8(&b, 0); put8(&b, 2); put8(&b, 1);
			put8(&b, FZM_REATTACH);
			put8(&b, FZM_P_HEAL);
			snprintf(name, sizeof(name), "cons-traffic-b%u-s%u", base, seq);
			save("msgring", name, &b);

			/* Honest consumer: a forged header at its position, then heal. */
			m_setup(&b, true, base, seq, capsel, 60);
			put8(&b, FZM_P_GOOD); put16(&b, 10);
			put8(&b, FZM_RESERVE); put8(&b, 1);
			for (unsigned k = 0; k < 10; k++) {
				put8(&b, FZM_P_WORD); put8(&b, 0); put8(&b, k % 5); put8(&b, k % 8);
				put8(&b, FZM_RESERVE); put8(&b, 1);
				put8(&b, FZM_SEND); put16(&b, 200);
				put8(&b, FZM_READY);
				put8(&b, FZM_P_HEAL);
				put8(&b, FZM_REATTACH);
				put8(&b, FZM_P_GOOD); put16(&b, 3 * k);
				put8(&b, FZM_RESERVE); put8(&b, 1);
			}
			snprintf(name, sizeof(name), "cons-forge-b%u-s%u", base, seq);
			save("msgring", name, &b);

			/* Honest producer: reserve/commit (shorter, longer), send,
			 * wraps, a plausible consumer checking every record. */
			m_setup(&b, false, base, seq, capsel, 90);
			for (unsigned i = 0; i < 12; i++) {
				put8(&b, FZM_RESERVE); put16(&b, (i * 29) % 95);
				put8(&b, FZM_COMMIT); put8(&b, i % 3); put8(&b, 1);
				put8(&b, FZM_COMMIT); put8(&b, 0); put8(&b, 0);
				put8(&b, FZM_SEND); put16(&b, (i * 11) % 91);
				put8(&b, FZM_P_GOOD);
				put8(&b, FZM_READY); put8(&b, i);
				put8(&b, FZM_P_GOOD);
				put8(&b, FZM_P_INDEX); put8(&b, 1); put32(&b, i);  /* cons_seq: unread */
			}
			put8(&b, FZM_P_WORD); put16(&b, 3); put64(&b, 0x1234);
			put8(&b, FZM_P_HEAL);
			snprintf(name, sizeof(name), "prod-traffic-b%u-s%u", base, seq);
			save("msgring", name, &b);

			/* Honest producer: forged cons_head, caught when full. */
			m_setup(&b, false, base, seq, capsel, 90);
			for (unsigned k = 0; k < 6; k++) {
				put8(&b, FZM_P_INDEX); put8(&b, 0); put8(&b, k % 11); put8(&b, 1 + k);
				for (unsigned i = 0; i < 8; i++) {
					put8(&b, FZM_SEND); put16(&b, 60);
				}
				put8(&b, FZM_P_HEAL);
				put8(&b, FZM_REATTACH);
				put8(&b, FZM_SEND); put16(&b, 5);
				put8(&b, FZM_P_GOOD);
			}
			snprintf(name, sizeof(name), "prod-forge-b%u-s%u", base, seq);
			save("msgring", name, &b);
		}
}

/* ------------------------------------------------------------------ */
/* bcast                                                               */
/* ------------------------------------------------------------------ */

static void seeds_bcast(void)
{
	struct buf b;
	char name[64];

	for (int lap = 0; lap <= 1; lap++)
		for (unsigned base = 0; base < 3; base++) {
			unsigned capsel = base + (unsigned)lap, cap = 2u << capsel;

			/* Honest subscriber. */
			b.n = 0;
			put8(&b, (unsigned)lap | 2 | base << 2);
			put8(&b, base | capsel << 3);
			put8(&b, 1 | 1 << 2); /* two lines, honest on line 1 */
			for (unsigned i = 0; i < 6; i++) {
				put8(&b, FZB_P_GOOD); put8(&b, i % 3 ? 1 : cap + 2);
				put8(&b, FZB_CALL);
				put8(&b, FZB_READY);
				put8(&b, FZB_P_BEGIN);
				put8(&b, FZB_CALL);
				put8(&b, FZB_P_END);
				put8(&b, FZB_CALL);
				put8(&b, FZB_P_PAYLOAD); put8(&b, i); put8(&b, 2); put8(&b, 0x55);
				put8(&b, FZB_CALL);
			}
			/* forged prod_tail (sel 1: cursor + delta), then a slot sequence */
			put8(&b, FZB_P_FORGE); put8(&b, 0); put8(&b, 1); put8(&b, cap + 3);
			put8(&b, FZB_CALL);
			put8(&b, FZB_CALL);
			put8(&b, FZB_P_HEAL);
			put8(&b, FZB_REATTACH);
			put8(&b, FZB_P_GOOD); put8(&b, 2);
			put8(&b, FZB_P_FORGE); put8(&b, 1); put8(&b, 1); put8(&b, 5);
			put8(&b, FZB_CALL);
			put8(&b, FZB_CALL);
			put8(&b, FZB_P_HEAL);
			put8(&b, FZB_REATTACH);
			put8(&b, FZB_P_GOOD); put8(&b, 1);
			put8(&b, FZB_CALL);
			/* Evicted by someone else (the line freed), read, re-attach;
			 * then evicted and the line re-joined by another: re-attach
			 * finds it busy. Evict our own line (refused), line 0 joins
			 * and is evicted under its tag. */
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 0);
			put8(&b, FZB_P_GOOD); put8(&b, cap + 1);
			put8(&b, FZB_CALL);
			put8(&b, FZB_READY);
			put8(&b, FZB_REATTACH);
			put8(&b, FZB_CALL);
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 1);
			put8(&b, FZB_CALL);
			put8(&b, FZB_REATTACH);
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 2);
			put8(&b, FZB_P_JOIN); put8(&b, 0); put8(&b, 0);
			put8(&b, FZB_P_JOIN); put8(&b, 0); put8(&b, 3);
			put8(&b, FZB_P_GOOD); put8(&b, 1);
			put8(&b, FZB_CALL);
			snprintf(name, sizeof(name), "sub-%s-b%u", lap ? "lap" : "hold", base);
			save("bcast", name, &b);

			/* Honest producer, three subscriber lines. */
			b.n = 0;
			put8(&b, (unsigned)lap | base << 2);
			put8(&b, base | capsel << 3);
			put8(&b, 2);
			put8(&b, FZB_P_JOIN); put8(&b, 0); put8(&b, 0);
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 1);  /* half-join */
			for (unsigned i = 0; i < cap + 2; i++)
				put8(&b, FZB_CALL);
			put8(&b, FZB_P_GOOD); put8(&b, 0); put8(&b, 3);
			put8(&b, FZB_CALL);
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 0);  /* finish joining */
			put8(&b, FZB_P_JOIN); put8(&b, 2); put8(&b, 0);
			for (unsigned i = 0; i < cap; i++) {
				put8(&b, FZB_CALL);
				put8(&b, FZB_P_GOOD); put8(&b, i % 3); put8(&b, 1);
			}
			/* forged cursor (sel 4: near 0) on line 2, active = 3 on line 0 */
			put8(&b, FZB_P_FORGE); put8(&b, 2 << 1); put8(&b, 4); put8(&b, 0);
			put8(&b, FZB_CALL);
			put8(&b, FZB_P_FORGE); put8(&b, 1); put8(&b, 3);
			put8(&b, FZB_CALL);
			put8(&b, FZB_READY); put8(&b, 1); /* a wrong-role call */
			put8(&b, FZB_P_HEAL);
			put8(&b, FZB_REATTACH);
			for (unsigned i = 0; i < cap + 1; i++)
				put8(&b, FZB_CALL);
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 2);  /* leave */
			put8(&b, FZB_CALL);
			/* Line 0 stops reading and holds (HOLD); evicted under a
			 * wrong tag (nothing), its own tag, then a half-joined
			 * line 1 by OWNER_ANY; the producer goes on. */
			put8(&b, FZB_P_JOIN); put8(&b, 0); put8(&b, 0);
			for (unsigned i = 0; i < cap + 1; i++)
				put8(&b, FZB_CALL);
			put8(&b, FZB_READY); put8(&b, 0 << 1 | 1 << 4);
			put8(&b, FZB_READY); put8(&b, 0 << 1 | 0 << 4);
			put8(&b, FZB_READY); put8(&b, 0 << 1 | 0 << 4);
			put8(&b, FZB_P_JOIN); put8(&b, 1); put8(&b, 1);  /* half-join */
			put8(&b, FZB_READY); put8(&b, 1 << 1 | 2 << 4);
			for (unsigned i = 0; i < cap + 1; i++)
				put8(&b, FZB_CALL);
			snprintf(name, sizeof(name), "pub-%s-b%u", lap ? "lap" : "hold", base);
			save("bcast", name, &b);
		}
}

/* ------------------------------------------------------------------ */
/* arena                                                               */
/* ------------------------------------------------------------------ */

static void a_setup(struct buf *b, unsigned s0, unsigned ncls, unsigned bump, unsigned ringsel)
{
	b->n = 0;
	put8(b, s0);
	put8(b, ncls);
	for (unsigned i = 0; i < ncls; i++) {
		put8(b, i);         /* block sizes 64, 192, 384, 640 */
		put8(b, 1 + i * 2); /* counts 2, 4, 6, 8 */
	}
	put16(b, bump);
	put8(b, ringsel);
	put32(b, 0xa11ce);
	put64(b, 0x5eed5eed);
}

/* Span selectors: an outstanding span (newest first), maybe mutated. */
static void sel_hist(struct buf *b, unsigned back) { put8(b, 1); put8(b, back); }
static void sel_mut(struct buf *b, unsigned back, unsigned what, unsigned amt)
{
	put8(b, 2); put8(b, back); put8(b, what); put8(b, amt);
}

static void seeds_arena(void)
{
	struct buf b;
	char name[64];

	for (unsigned s0 = 0; s0 < 8; s0++) {
		/* Traffic: alloc, give back through the ring, reclaim; bump. */
		a_setup(&b, s0, 1 + s0 % 4, 256 + 64 * s0, s0 % 4);
		for (unsigned i = 0; i < 6; i++) {
			put8(&b, FZA_ALLOC); put16(&b, 1 + 100 * i);
			put8(&b, FZA_ALLOC); put16(&b, 64);
			put8(&b, FZA_BUMP); put16(&b, 24 + i); put8(&b, i);
			put8(&b, FZA_GIVE); put8(&b, 1); sel_hist(&b, 0); sel_hist(&b, 2);
			put8(&b, FZA_RECLAIM); put8(&b, 3);
			put8(&b, FZA_FREE); sel_hist(&b, 1);
			put8(&b, FZA_RESOLVE); sel_hist(&b, 0); put8(&b, 0);
			put8(&b, FZA_RAW_GIVE); sel_hist(&b, 3); put64(&b, ~0ull);
			put8(&b, FZA_RECLAIM); put8(&b, 16);
		}
		put8(&b, FZA_BUMP_RESET);
		put8(&b, FZA_FREE); sel_hist(&b, 0);
		snprintf(name, sizeof(name), "traffic-%u", s0);
		save("arena", name, &b);

		/* Every refusal: double, stale, forged, range, region, flags. */
		a_setup(&b, s0, 2 + s0 % 3, 128, 2);
		for (unsigned what = 0; what < 10; what++) {
			put8(&b, FZA_ALLOC); put16(&b, 64);
			put8(&b, FZA_FREE); sel_mut(&b, 0, what, what * 7);
			put8(&b, FZA_FREE); sel_hist(&b, 0);
			put8(&b, FZA_FREE); sel_hist(&b, 0);         /* double */
			put8(&b, FZA_BUMP); put16(&b, 8); put8(&b, 3);
			put8(&b, FZA_FREE); sel_mut(&b, 0, what, 64);
			put8(&b, FZA_SPAN); sel_hist(&b, 0); put8(&b, 0); put8(&b, 0);
			put8(&b, 1); put8(&b, 0); put8(&b, 1);
			put8(&b, FZA_RESOLVE); sel_mut(&b, 1, what, 3); put8(&b, what);
		}
		put8(&b, FZA_BUMP_RESET);
		put8(&b, FZA_FREE); sel_hist(&b, 1);                 /* stale bump span */
		snprintf(name, sizeof(name), "refusals-%u", s0);
		save("arena", name, &b);

		/* The receiver forges the return ring's prod_tail; heal. */
		a_setup(&b, s0 & 7, 2, 0, 1);
		put8(&b, FZA_ALLOC); put16(&b, 10);
		put8(&b, FZA_GIVE); put8(&b, 0); sel_hist(&b, 0);
		put8(&b, FZA_FORGE); put8(&b, 2); put8(&b, 5);        /* peer + cap + 5 */
		put8(&b, FZA_RECLAIM); put8(&b, 8);
		put8(&b, FZA_RECLAIM); put8(&b, 8);
		put8(&b, FZA_HEAL);
		put8(&b, FZA_GIVE); put8(&b, 0); sel_hist(&b, 0);
		put8(&b, FZA_RECLAIM); put8(&b, 8);
		put8(&b, FZA_FORGE); put8(&b, 0); put8(&b, 1);        /* one ahead */
		put8(&b, FZA_RECLAIM); put8(&b, 8);
		put8(&b, FZA_HEAL);
		put8(&b, FZA_RECLAIM); put8(&b, 8);
		snprintf(name, sizeof(name), "ring-forge-%u", s0);
		save("arena", name, &b);

		/* Header mode: the owner re-attaches to a rewritten header. */
		a_setup(&b, 8 | (s0 & 6), 1 + s0 % 4, 64 * s0, 0);
		put8(&b, 1); put8(&b, 64 + 4 * (s0 % 4)); put8(&b, 0x40); /* a class's block_size */
		put8(&b, 0); put8(&b, 2); put8(&b, 0); put8(&b, 64);       /* obj_size + 64 */
		snprintf(name, sizeof(name), "header-%u", s0);
		save("arena", name, &b);
	}
	a_setup(&b, 8, 3, 512, 0);
	snprintf(name, sizeof(name), "header-intact");
	save("arena", name, &b);
}

/* ------------------------------------------------------------------ */
/* ivshmem                                                             */
/* ------------------------------------------------------------------ */

/* Short names for the selectors of fuzz_format.h (section "ivshmem"). */
#define IV_SMALL(n)    FZIC_VAL(FZIC_V_SMALL, n)    /* n = 0..31 */
#define IV_MINUS1      FZIC_VAL(FZIC_V_MINUS1, 0)
#define IV_TOLD_ID     FZIC_VAL(FZIC_V_TOLD_ID, 0)
#define IV_NEAR_MAX(n) FZIC_VAL(FZIC_V_NEAR_MAX, n) /* 65519 + n */
#define IV_RAW         FZIC_VAL(FZIC_V_RAW, 0)
#define IF_NONE        FZIC_FD(FZIC_FD_NONE, 0, 0)
#define IF_EFD         FZIC_FD(FZIC_FD_ONE, FZIC_K_EFD, 0)
#define IF_EFD_AGAIN   FZIC_FD(FZIC_FD_ONE, FZIC_K_EFD_AGAIN, 0)
#define IF_MEMFD(sz)   FZIC_FD(FZIC_FD_ONE, FZIC_K_MEMFD, sz) /* sz: 0, 1, 4096, 1 MiB */
#define IF_PIPE_R      FZIC_FD(FZIC_FD_ONE, FZIC_K_PIPE_R, 0)
#define IF_PIPE_W      FZIC_FD(FZIC_FD_ONE, FZIC_K_PIPE_W, 0)
#define IF_NULL        FZIC_FD(FZIC_FD_ONE, FZIC_K_NULL, 0)
#define IF_PIPE_FULL   FZIC_FD(FZIC_FD_ONE, FZIC_K_PIPE_FULL, 0)
#define IF_TWO         FZIC_FD(FZIC_FD_TWO, FZIC_K_EFD, 0)
#define IF_FIVE        FZIC_FD(FZIC_FD_FIVE, FZIC_K_EFD, 0)

static void i_send(struct buf *b, unsigned vsel, unsigned fsel, unsigned split)
{
	put8(b, FZIC_SEND); put8(b, vsel); put8(b, fsel); put8(b, split);
}

/* A set-up by hand: version, id, shm, then peer 5's vectors before ours. */
static void i_manual_setup(struct buf *b, unsigned id, unsigned vectors)
{
	i_send(b, IV_SMALL(0), IF_NONE, 0);
	i_send(b, IV_SMALL(id), IF_NONE, 0);
	i_send(b, IV_MINUS1, IF_MEMFD(2), 0);
	put8(b, FZIC_JOIN); put8(b, 5); put8(b, 0);
	for (unsigned v = 0; v < vectors; v++)
		i_send(b, IV_SMALL(id), IF_EFD, 0);
}

static void seeds_ivshmem(void)
{
	struct buf b;

	/* Client: a whole session, two vectors. */
	b.n = 0;
	put8(&b, 0); put8(&b, 1);
	i_manual_setup(&b, 3, 2);
	put8(&b, FZIC_CONNECT);
	put8(&b, FZIC_PEERS); put8(&b, 4);
	put8(&b, FZIC_EVENTFD); put8(&b, 1); put8(&b, 0);
	put8(&b, FZIC_RING); put8(&b, 1); put8(&b, 1);
	put8(&b, FZIC_RING); put8(&b, 0); put8(&b, 0);
	put8(&b, FZIC_JOIN); put8(&b, 9); put8(&b, 0);
	put8(&b, FZIC_PROCESS); put8(&b, 1);
	put8(&b, FZIC_LEAVE); put8(&b, 5);
	put8(&b, FZIC_PROCESS); put8(&b, 0);
	put8(&b, FZIC_RING); put8(&b, 1 | 1 << 2); put8(&b, 1);
	put8(&b, FZIC_PEERS); put8(&b, 3);
	put8(&b, FZIC_CLOSE);
	save("ivshmem", "client-session", &b);

	/* Client: the convenience set-up, then peers joining and leaving in
	 * every way, a second session after close. */
	b.n = 0;
	put8(&b, 0); put8(&b, 2);
	put8(&b, FZIC_SETUP); put8(&b, 7);
	put8(&b, FZIC_JOIN); put8(&b, 1); put8(&b, 0);
	put8(&b, FZIC_JOIN); put8(&b, 2); put8(&b, 0x80 | 4);  /* one vector too many */
	put8(&b, FZIC_JOIN); put8(&b, 3); put8(&b, 0x80 | 1);  /* too few */
	put8(&b, FZIC_CONNECT);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_EVENTFD); put8(&b, 1 | 2 << 2); put8(&b, 2);
	put8(&b, FZIC_RING); put8(&b, 1 | 2 << 2); put8(&b, 2);
	put8(&b, FZIC_LEAVE); put8(&b, 2);
	put8(&b, FZIC_LEAVE); put8(&b, 2);                  /* unknown now */
	put8(&b, FZIC_LEAVE); put8(&b, 7);                  /* ourselves */
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_CLOSE);
	put8(&b, FZIC_SETUP); put8(&b, 0);
	put8(&b, FZIC_EOF);
	put8(&b, FZIC_PROCESS); put8(&b, 1);
	put8(&b, FZIC_PEERS); put8(&b, 1);
	save("ivshmem", "client-peers", &b);

	/* Client: malformed messages after a good set-up: a second shm, ids
	 * out of range, several fds, fds of the wrong kind, split writes,
	 * extra own vectors, a message cut by the end of the stream. */
	b.n = 0;
	put8(&b, 0); put8(&b, 0);
	put8(&b, FZIC_SETUP); put8(&b, 1);
	put8(&b, FZIC_CONNECT);
	i_send(&b, IV_MINUS1, IF_MEMFD(2), 0);
	i_send(&b, IV_NEAR_MAX(16), IF_EFD, 0);             /* 65535: fine */
	i_send(&b, IV_NEAR_MAX(17), IF_EFD, 0);             /* 65536 */
	i_send(&b, IV_SMALL(4), IF_FIVE, 0);
	i_send(&b, IV_SMALL(4), FZIC_FD(FZIC_FD_TWO, FZIC_K_PIPE_W, 0), 0);
	i_send(&b, IV_SMALL(5), IF_PIPE_R, 3);
	i_send(&b, IV_SMALL(6), IF_PIPE_W, 5 | 0x10);
	i_send(&b, IV_SMALL(8), IF_NULL, 0);
	i_send(&b, IV_SMALL(9), IF_MEMFD(0), 0);
	i_send(&b, IV_SMALL(10), IF_EFD_AGAIN, 7);
	i_send(&b, IV_TOLD_ID, IF_EFD, 0);                  /* an extra own vector */
	i_send(&b, IV_RAW, IF_NONE, 0);
	put64(&b, UINT64_C(0x8000000000000000));
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	for (unsigned p = 5; p <= 10; p++) {
		if (p == 7)
			continue;
		put8(&b, FZIC_RING); put8(&b, 2 | p << 2); put8(&b, 0);
	}
	put8(&b, FZIC_PART); put8(&b, 2); put8(&b, IF_EFD); put8(&b, 4); put8(&b, 0); put8(&b, 0);
	put8(&b, FZIC_EOF);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	put8(&b, FZIC_PROCESS); put8(&b, 3);
	save("ivshmem", "client-malformed", &b);

	/* Client: vectors that are full blocking pipes (a peer's, one of our
	 * own, a later peer's in a split write): every ring of them returns at
	 * once and writes nothing. Then five of them in one message, and one
	 * as the shared memory of a second session. Two vectors. */
	b.n = 0;
	put8(&b, 0); put8(&b, 1);
	i_send(&b, IV_SMALL(0), IF_NONE, 0);
	i_send(&b, IV_SMALL(3), IF_NONE, 0);
	i_send(&b, IV_MINUS1, IF_MEMFD(2), 0);
	i_send(&b, IV_SMALL(5), IF_PIPE_FULL, 0);
	i_send(&b, IV_SMALL(5), IF_EFD, 0);
	i_send(&b, IV_SMALL(3), IF_EFD, 0);
	i_send(&b, IV_SMALL(3), IF_PIPE_FULL, 0);
	put8(&b, FZIC_CONNECT);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_KNOWN(0)); put8(&b, 0);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_KNOWN(0)); put8(&b, 1);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_KNOWN(0)); put8(&b, 0);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_OWN); put8(&b, 1);
	put8(&b, FZIC_EVENTFD); put8(&b, FZIC_PEER_ID(5)); put8(&b, 0);
	i_send(&b, IV_SMALL(6), IF_PIPE_FULL, 3 | 0x10);
	i_send(&b, IV_SMALL(6), IF_PIPE_FULL, 5);
	put8(&b, FZIC_PROCESS); put8(&b, 1);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_ID(6)); put8(&b, 0);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_ID(6)); put8(&b, 1);
	i_send(&b, IV_SMALL(7), FZIC_FD(FZIC_FD_FIVE, FZIC_K_PIPE_FULL, 0), 0);
	put8(&b, FZIC_PROCESS); put8(&b, 0);
	put8(&b, FZIC_LEAVE); put8(&b, 5);
	put8(&b, FZIC_PROCESS); put8(&b, 0);
	put8(&b, FZIC_RING); put8(&b, FZIC_PEER_ID(5)); put8(&b, 0);
	put8(&b, FZIC_PEERS); put8(&b, 3);
	put8(&b, FZIC_CLOSE);
	i_send(&b, IV_SMALL(0), IF_NONE, 0);
	i_send(&b, IV_SMALL(1), IF_NONE, 0);
	i_send(&b, IV_MINUS1, IF_PIPE_FULL, 0);
	put8(&b, FZIC_CONNECT);
	save("ivshmem", "client-full-pipe", &b);

	/* Client: set-ups that each stop at one refusal of connect. */
	{
		static const struct {
			const char *name;
			uint8_t v0, f0, v1, f1, v2, f2;
			bool eof;
		} bad[] = {
			{ "connect-version", IV_SMALL(1), IF_NONE, 0, 0, 0, 0, false },
			{ "connect-version-fd", IV_SMALL(0), IF_EFD, 0, 0, 0, 0, false },
			{ "connect-id-range", IV_SMALL(0), IF_NONE, IV_NEAR_MAX(20), IF_NONE, 0, 0,
			  false },
			{ "connect-no-shm-fd", IV_SMALL(0), IF_NONE, IV_SMALL(2), IF_NONE, IV_MINUS1,
			  IF_NONE, false },
			{ "connect-shm-empty", IV_SMALL(0), IF_NONE, IV_SMALL(2), IF_NONE, IV_MINUS1,
			  IF_MEMFD(0), false },
			{ "connect-shm-pipe", IV_SMALL(0), IF_NONE, IV_SMALL(2), IF_NONE, IV_MINUS1,
			  IF_PIPE_R, false },
			{ "connect-eof", IV_SMALL(0), IF_NONE, IV_SMALL(2), IF_NONE, IV_MINUS1,
			  IF_MEMFD(1), true },
			{ "connect-timeout", IV_SMALL(0), IF_NONE, IV_SMALL(2), IF_NONE, IV_MINUS1,
			  IF_MEMFD(3), false },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			b.n = 0;
			put8(&b, 0); put8(&b, i & 1 ? 8 : 0);
			i_send(&b, bad[i].v0, bad[i].f0, 0);
			if (bad[i].v1 || bad[i].f1)
				i_send(&b, bad[i].v1, bad[i].f1, 3);
			if (bad[i].v2 || bad[i].f2)
				i_send(&b, bad[i].v2, bad[i].f2, 0);
			if (bad[i].eof)
				put8(&b, FZIC_EOF);
			put8(&b, FZIC_CONNECT);
			put8(&b, FZIC_EOF);
			put8(&b, FZIC_CONNECT);                     /* nothing: refused */
			save("ivshmem", bad[i].name, &b);
		}
	}

	/* Server: honest clients join, ring each other, one leaves. 2 vectors,
	 * 4 peers at most. */
	b.n = 0;
	put8(&b, 1); put8(&b, 1 | 3 << 2);
	put8(&b, FZIS_HONEST); put8(&b, 1);
	put8(&b, FZIS_HONEST); put8(&b, 0);
	put8(&b, FZIS_HONEST); put8(&b, 1);
	put8(&b, FZIS_PROCESS); put8(&b, 0);
	put8(&b, FZIS_RING); put8(&b, 0); put8(&b, 1); put8(&b, 1);
	put8(&b, FZIS_LEAVE); put8(&b, 1);
	put8(&b, FZIS_PROCESS); put8(&b, 1);
	put8(&b, FZIS_STATUS);
	put8(&b, FZIS_HONEST); put8(&b, 1);
	save("ivshmem", "server-honest", &b);

	/* Server: hostile clients next to an honest one: one sends bytes with
	 * fds, one half-closes, one closes, one never reads; then the server
	 * is full. 1 vector, 3 peers at most. */
	b.n = 0;
	put8(&b, 1); put8(&b, 0 | 2 << 2);
	put8(&b, FZIS_HONEST); put8(&b, 0);
	put8(&b, FZIS_HOSTILE); put8(&b, 1);
	put8(&b, FZIS_HOSTILE); put8(&b, 0);
	put8(&b, FZIS_HOSTILE); put8(&b, 0);                /* refused: full */
	put8(&b, FZIS_HONEST); put8(&b, 0);                 /* refused: full */
	put8(&b, FZIS_SEND); put8(&b, 0); put8(&b, 7); put8(&b, 0x12);
	putn(&b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	put8(&b, FZIS_HOSTILE); put8(&b, 1);
	put8(&b, FZIS_SHUT); put8(&b, 1);
	put8(&b, FZIS_READ); put8(&b, 0);
	put8(&b, FZIS_PROCESS); put8(&b, 0);
	put8(&b, FZIS_DROP); put8(&b, 0);
	put8(&b, FZIS_HONEST); put8(&b, 0);
	put8(&b, FZIS_HOSTILE); put8(&b, 1);
	put8(&b, FZIS_PROCESS); put8(&b, 1);
	save("ivshmem", "server-hostile", &b);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	root = argv[1];
	mkdir(root, 0755);
	seeds_region();
	seeds_ring();
	seeds_msgring();
	seeds_bcast();
	seeds_arena();
	seeds_ivshmem();
	printf("seeds: %u files written under %s\n", written, root);
	return 0;
}
