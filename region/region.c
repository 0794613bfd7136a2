/* SPDX-License-Identifier: MIT */
/*
 * Regions: the header, directory and participant slots of portal/abi.h, on
 * whatever memory a backend maps. Everything read from the mapping is copied
 * into the handle at attach and checked; the handle's copy is authoritative.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "portal/region.h"
#include "region/region_internal.h"

#define DEFAULT_SIZE     (UINT64_C(1) << 20)
#define DEFAULT_DIR_CAP  64u
#define DEFAULT_PARTS    2u
#define PAGE             4096u

struct portal_region {
	uint8_t *base;
	uint64_t size;          /* private copies of the immutable header */
	uint64_t epoch;
	uint32_t region_id;
	uint32_t dir_offset;
	uint32_t dir_capacity;
	uint32_t part_count;
	uint32_t data_offset;
	uint32_t side;          /* our participant slot; UINT32_MAX: none */
	uint64_t alloc_top;     /* creator: next free byte */
	uint32_t dir_used;      /* creator: entries written (authoritative) */
	int fd;                 /* -1 when attached from memory */
	bool mapped;            /* we own the mapping */
	bool creator;
};

static const struct portal_region_backend *const backends[] = {
	&portal_region_backend_shm, &portal_region_backend_memfd,
	&portal_region_backend_fd, &portal_region_backend_file,
	&portal_region_backend_ivshmem, &portal_region_backend_pmem,
};

/* A URI taken apart: the backend, the name it gets, and the window. */
struct uri {
	const struct portal_region_backend *be;
	char name[4096];
	struct portal_region_window w;
};

/* "4096", "0x1000", "2M": bytes, with an optional k/M/G (binary) suffix. */
static int parse_bytes(const char *s, size_t n, uint64_t *out)
{
	char buf[32], *end;
	unsigned long long v;
	unsigned shift = 0;

	if (n == 0 || n >= sizeof(buf) || *s == '-' || *s == '+')
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	errno = 0;
	v = strtoull(buf, &end, 0);
	if (errno || end == buf)
		return -EINVAL;
	if (*end) {
		shift = *end == 'k' || *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 64;
		if (shift == 64 || end[1] || v > (UINT64_MAX >> shift))
			return -EINVAL;
	}
	*out = (uint64_t)v << shift;
	return 0;
}

/* "offset=N&size=N&devdax" (file:, fd: and pmem: only). */
static int parse_window(const char *q, const struct portal_region_backend *be,
			struct portal_region_window *w)
{
	memset(w, 0, sizeof(*w));
	w->given = true;
	while (*q) {
		size_t n = strcspn(q, "&");
		const char *eq = memchr(q, '=', n);
		size_t k = eq ? (size_t)(eq - q) : n;
		int rc = 0;

		if (k == 6 && !memcmp(q, "offset", 6) && eq)
			rc = parse_bytes(eq + 1, n - k - 1, &w->offset);
		else if (k == 4 && !memcmp(q, "size", 4) && eq)
			rc = parse_bytes(eq + 1, n - k - 1, &w->size);
		else if (k == 6 && !memcmp(q, "devdax", 6) && !eq && be == &portal_region_backend_file)
			w->devdax = true;
		else
			rc = -EINVAL;
		if (rc)
			return rc;
		q += n;
		if (*q == '&')
			q++;
	}
	return 0;
}

/* "scheme:rest[?query]"; no scheme means shm. */
static int parse_uri(const char *uri, struct uri *u)
{
	const char *colon, *rest = NULL, *q;
	size_t n;

	memset(u, 0, sizeof(*u));
	if (!uri)
		return -EINVAL;
	colon = strchr(uri, ':');
	if (!colon) {
		rest = uri;
		u->be = &portal_region_backend_shm;
	}
	for (size_t i = 0; colon && i < sizeof(backends) / sizeof(backends[0]); i++) {
		n = strlen(backends[i]->scheme);
		if ((size_t)(colon - uri) == n && !memcmp(uri, backends[i]->scheme, n)) {
			rest = colon + 1;
			u->be = backends[i];
		}
	}
	if (!u->be)
		return -EINVAL;
	q = NULL;
	if (u->be == &portal_region_backend_file || u->be == &portal_region_backend_fd ||
	    u->be == &portal_region_backend_pmem)
		q = strchr(rest, '?');
	n = q ? (size_t)(q - rest) : strlen(rest);
	if (n >= sizeof(u->name))
		return -EINVAL;
	memcpy(u->name, rest, n);
	u->name[n] = '\0';
	return q ? parse_window(q + 1, u->be, &u->w) : 0;
}

static uint32_t crc(const void *p, size_t n)
{
	return (uint32_t)crc32(0L, p, (uInt)n);
}

static uint64_t random_u64(void)
{
	uint64_t v = 0;

	while (getrandom(&v, sizeof(v), 0) != sizeof(v))
		;
	return v;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static struct portal_region_hdr *hdr_of(const portal_region_t *r)
{
	return (struct portal_region_hdr *)r->base;
}

static struct portal_participant *part_of(const portal_region_t *r, uint32_t side)
{
	return (struct portal_participant *)(r->base + PORTAL_REGION_PART_OFFSET) + side;
}

static struct portal_dir_entry *dir_of(const portal_region_t *r)
{
	return (struct portal_dir_entry *)(r->base + r->dir_offset);
}

/* ---- validation, shared by attach and lookup ---- */

/* Check one directory entry copy against the region geometry. */
static int check_entry(const struct portal_dir_entry *e, uint64_t size, uint64_t data_offset)
{
	if (crc(e, offsetof(struct portal_dir_entry, checksum)) != e->checksum)
		return PORTAL_ECHECKSUM;
	if (memchr(e->name, '\0', sizeof(e->name)) == NULL || e->name[0] == '\0')
		return PORTAL_EDIR;
	if (e->kind == 0 || e->kind > PORTAL_OBJ_KIND_MAX || e->offset % PORTAL_CACHELINE)
		return PORTAL_EDIR;
	if (e->offset < data_offset || e->offset > size || e->size > size - e->offset)
		return PORTAL_EDIR;
	return 0;
}

static int cmp_offset(const void *a, const void *b)
{
	const struct portal_dir_entry *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/*
 * Copy the first COUNT directory entries out of shared memory and check
 * each, then that no two overlap. Works on copies only: the peer may be
 * rewriting the directory while we look. With ENTRIES, the checked copies
 * (sorted by offset; the caller frees them) are handed out, so the caller
 * uses exactly what was checked.
 */
static int check_directory(const uint8_t *base, uint64_t size, uint32_t dir_offset,
			   uint32_t count, uint64_t data_offset,
			   struct portal_dir_entry **entries)
{
	struct portal_dir_entry *copy;
	int rc = 0;

	if (entries)
		*entries = NULL;
	if (count == 0)
		return 0;
	copy = malloc((size_t)count * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, base + dir_offset, (size_t)count * sizeof(*copy));
	for (uint32_t i = 0; i < count && !rc; i++)
		rc = check_entry(&copy[i], size, data_offset);
	if (!rc) {
		qsort(copy, count, sizeof(*copy), cmp_offset);
		for (uint32_t i = 1; i < count && !rc; i++)
			if (copy[i].offset - copy[i - 1].offset < copy[i - 1].size)
				rc = PORTAL_EDIR;
	}
	if (rc || !entries)
		free(copy);
	else
		*entries = copy;
	return rc;
}

/* Validate the header of a mapping of LEN bytes and fill r's private copy. */
static int check_header(const uint8_t *base, uint64_t len, portal_region_t *r)
{
	struct portal_region_hdr h;
	uint32_t count;
	uint64_t dir_end;

	if (len < PORTAL_REGION_HEADER_SIZE)
		return PORTAL_ESIZE;
	/* A1: dir_count, then the header and entries it covers; pairs with
	 * R0 in format_region and R1 in alloc. */
	count = atomic_load_explicit(&((const struct portal_region_hdr *)base)->dir_count,
				     memory_order_acquire);
	memcpy(&h, base, sizeof(h));
	if (h.magic != PORTAL_REGION_MAGIC)
		return PORTAL_EMAGIC;
	if (h.version_major != PORTAL_REGION_VERSION_MAJOR)
		return PORTAL_EVERSION;
	if (h.region_size != len || h.header_size != PORTAL_REGION_HEADER_SIZE)
		return PORTAL_ESIZE;
	if (crc(&h, offsetof(struct portal_region_hdr, hdr_checksum)) != h.hdr_checksum)
		return PORTAL_ECHECKSUM;
	dir_end = (uint64_t)h.dir_offset + (uint64_t)h.dir_capacity * sizeof(struct portal_dir_entry);
	if (h.part_offset != PORTAL_REGION_PART_OFFSET || h.part_count < 2 ||
	    h.part_count > PORTAL_REGION_MAX_PARTS || h.dir_offset < PORTAL_REGION_HEADER_SIZE ||
	    h.dir_offset % PORTAL_CACHELINE || dir_end > h.data_offset || h.data_offset > len ||
	    count > h.dir_capacity || h.region_id == 0)
		return PORTAL_EDIR;
	r->size = len;
	r->epoch = h.epoch;
	r->region_id = h.region_id;
	r->dir_offset = h.dir_offset;
	r->dir_capacity = h.dir_capacity;
	r->part_count = h.part_count;
	r->data_offset = h.data_offset;
	return check_directory(base, len, h.dir_offset, count, h.data_offset, NULL);
}

int portal_region_validate(const void *base, size_t len)
{
	portal_region_t tmp;

	if (!base)
		return -EINVAL;
	return check_header(base, len, &tmp);
}

/* ---- participant slots ---- */

static bool pid_alive(uint64_t pid)
{
	if (pid == 0 || pid > INT32_MAX)
		return false;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

static int claim_slot(portal_region_t *r, uint32_t side, const char *ident)
{
	struct portal_participant *p = part_of(r, side);
	uint32_t state;

	/* P2 (acquire): the previous owner's fields, to judge its pid. */
	state = atomic_load_explicit(&p->state, memory_order_acquire);
	if (state == PORTAL_PART_JOINING ||
	    (state == PORTAL_PART_ACTIVE && pid_alive(p->pid) && p->pid != (uint64_t)getpid()))
		return -EBUSY;
	/* C0: one claimant wins the slot; a racing attacher sees JOINING or
	 * loses the CAS. Relaxed on failure: we give up. */
	if (!atomic_compare_exchange_strong_explicit(&p->state, &state, PORTAL_PART_JOINING,
						     memory_order_acquire, memory_order_relaxed))
		return -EBUSY;
	p->kind = PORTAL_PART_PROCESS;
	p->pid = (uint64_t)getpid();
	memset(p->ident, 0, sizeof(p->ident));
	if (ident)
		strncpy(p->ident, ident, sizeof(p->ident) - 1);
	atomic_store_explicit(&p->epoch, random_u64(), memory_order_relaxed);
	atomic_store_explicit(&p->heartbeat, 0, memory_order_relaxed);
	/* P1: slot fields, then state; pairs with P2 in portal_region_participant. */
	atomic_store_explicit(&p->state, PORTAL_PART_ACTIVE, memory_order_release);
	r->side = side;
	return 0;
}

/* ---- create / attach / detach ---- */

static portal_region_t *handle_new(void)
{
	portal_region_t *r = calloc(1, sizeof(*r));

	if (r) {
		r->fd = -1;
		r->side = UINT32_MAX;
	}
	return r;
}

static void handle_free(portal_region_t *r)
{
	if (r->mapped && r->base)
		munmap(r->base, r->size);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

int portal_region_file_extent(int fd, const struct portal_region_window *w, uint64_t *offset,
			      uint64_t *len)
{
	uint64_t base = 0, avail, off = w ? w->offset : 0, size = w ? w->size : 0;
	struct stat st;
	int rc;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < 0)
		return -EINVAL;
	avail = (uint64_t)st.st_size;
	if (w && w->devdax) {
		rc = portal_region_devdax_data(fd, avail, &base, &avail);
		if (rc)
			return rc;
	}
	if (off % PAGE || off > avail || size > avail - off)
		return -EINVAL;
	*offset = base + off;
	*len = size ? size : avail - off;
	return 0;
}

/* Map the extent of r->fd that the backend and the URI's window name. */
static int map_fd(portal_region_t *r, const struct uri *u, bool readonly)
{
	uint64_t off, len;
	void *p;
	int rc;

	rc = u->be->extent ? u->be->extent(r->fd, &u->w, &off, &len)
			   : portal_region_file_extent(r->fd, &u->w, &off, &len);
	if (rc)
		return rc;
	if (len < PORTAL_REGION_HEADER_SIZE)
		return PORTAL_ESIZE;
	if (len > SIZE_MAX || off > (uint64_t)INT64_MAX)
		return -EINVAL;
	p = mmap(NULL, (size_t)len, readonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
		 r->fd, (off_t)off);
	if (p == MAP_FAILED)
		return -errno;
	r->base = p;
	r->size = len;
	r->mapped = true;
	return 0;
}

/* Write a fresh header, directory and slots; magic last. */
static void format_region(portal_region_t *r, uint32_t dir_cap, uint32_t parts, uint32_t id)
{
	struct portal_region_hdr *h = hdr_of(r);
	uint64_t dir_bytes = (uint64_t)dir_cap * sizeof(struct portal_dir_entry);

	memset(r->base, 0, PORTAL_REGION_HEADER_SIZE + dir_bytes);
	r->epoch = random_u64();
	r->region_id = id;
	while (r->region_id == 0)
		r->region_id = (uint32_t)random_u64();
	r->dir_offset = PORTAL_REGION_HEADER_SIZE;
	r->dir_capacity = dir_cap;
	r->part_count = parts;
	r->data_offset = (uint32_t)align_up(PORTAL_REGION_HEADER_SIZE + dir_bytes, PAGE);
	r->alloc_top = r->data_offset;
	r->creator = true;

	h->version_major = PORTAL_REGION_VERSION_MAJOR;
	h->version_minor = PORTAL_REGION_VERSION_MINOR;
	h->header_size = PORTAL_REGION_HEADER_SIZE;
	h->region_size = r->size;
	h->epoch = r->epoch;
	h->region_id = r->region_id;
	h->dir_offset = r->dir_offset;
	h->dir_capacity = dir_cap;
	h->part_offset = PORTAL_REGION_PART_OFFSET;
	h->part_count = parts;
	h->data_offset = r->data_offset;
	h->magic = PORTAL_REGION_MAGIC;
	h->hdr_checksum = crc(h, offsetof(struct portal_region_hdr, hdr_checksum));
	atomic_store_explicit(&h->data_used, 0, memory_order_relaxed);
	/* R0: header, then dir_count; pairs with A1 in check_header. */
	atomic_store_explicit(&h->dir_count, 0, memory_order_release);
}

/* Backings whose size is fixed or found in place: create keeps it. */
static bool keeps_size(const struct uri *u)
{
	return u->w.given || u->be == &portal_region_backend_file ||
	       u->be == &portal_region_backend_ivshmem || u->be == &portal_region_backend_pmem;
}

int portal_region_create(const char *uri, const struct portal_region_opts *opts,
			 portal_region_t **out)
{
	static const struct portal_region_opts defaults;
	struct uri *u;
	portal_region_t *r;
	uint64_t size, min;
	uint32_t dir_cap, parts;
	bool excl;
	int rc;

	if (!opts)
		opts = &defaults;
	if (!out || (opts->flags & ~PORTAL_REGION_F_MASK) || (opts->flags & PORTAL_REGION_F_READONLY))
		return -EINVAL;
	dir_cap = opts->dir_capacity ? opts->dir_capacity : DEFAULT_DIR_CAP;
	parts = opts->part_count ? opts->part_count : DEFAULT_PARTS;
	if (parts < 2 || parts > PORTAL_REGION_MAX_PARTS || dir_cap > (1u << 16))
		return -EINVAL;
	u = malloc(sizeof(*u));
	if (!u)
		return -ENOMEM;
	rc = parse_uri(uri, u);
	excl = opts->flags & PORTAL_REGION_F_EXCL;
	/* A window is laid into an existing backing, never made or resized. */
	if (rc == 0 && u->w.given && excl)
		rc = -EINVAL;
	size = opts->size ? align_up(opts->size, PAGE) : 0;
	if (rc == 0 && !opts->size && !keeps_size(u))
		size = DEFAULT_SIZE;
	min = align_up(PORTAL_REGION_HEADER_SIZE + (uint64_t)dir_cap * sizeof(struct portal_dir_entry),
		       PAGE);
	if (rc == 0 && size && (size <= min || size > UINT64_C(1) << 40))
		rc = -EINVAL;
	r = rc ? NULL : handle_new();
	if (rc == 0 && !r)
		rc = -ENOMEM;
	if (rc == 0)
		rc = u->w.given ? u->be->open(u->name, false, &r->fd)
				: u->be->create(u->name, size, excl, &r->fd);
	if (rc == 0)
		rc = map_fd(r, u, false);
	/* A backing that keeps its size must already have the size asked for. */
	if (rc == 0 && (r->size <= min || r->size > UINT64_C(1) << 40 || (size && r->size != size)))
		rc = -EINVAL;
	free(u);
	if (rc) {
		if (r)
			handle_free(r);
		return rc;
	}
	format_region(r, dir_cap, parts, opts->region_id);
	rc = claim_slot(r, 0, opts->ident);
	if (rc) {
		handle_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static int attach_common(portal_region_t *r, const struct portal_region_opts *opts)
{
	uint32_t side = opts->side ? opts->side : 1;
	int rc = check_header(r->base, r->size, r);

	if (rc)
		return rc;
	if (opts->flags & PORTAL_REGION_F_READONLY)
		return 0;
	if (side >= r->part_count)
		return -EINVAL;
	return claim_slot(r, side, opts->ident);
}

int portal_region_attach(const char *uri, const struct portal_region_opts *opts,
			 portal_region_t **out)
{
	static const struct portal_region_opts defaults;
	struct uri *u;
	portal_region_t *r = NULL;
	bool ro;
	int rc;

	if (!opts)
		opts = &defaults;
	if (!out || (opts->flags & ~PORTAL_REGION_F_MASK))
		return -EINVAL;
	u = malloc(sizeof(*u));
	if (!u)
		return -ENOMEM;
	rc = parse_uri(uri, u);
	ro = opts->flags & PORTAL_REGION_F_READONLY;
	if (rc == 0 && !(r = handle_new()))
		rc = -ENOMEM;
	if (rc == 0)
		rc = u->be->open(u->name, ro, &r->fd);
	if (rc == 0)
		rc = map_fd(r, u, ro);
	if (rc == 0)
		rc = attach_common(r, opts);
	free(u);
	if (rc) {
		portal_log(PORTAL_LOG_WARN, "region %s: attach refused: %s", uri ? uri : "(null)",
			   portal_strerror(rc));
		if (r)
			handle_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int portal_region_attach_mem(void *base, size_t len, const struct portal_region_opts *opts,
			     portal_region_t **out)
{
	static const struct portal_region_opts defaults;
	portal_region_t *r;
	int rc;

	if (!opts)
		opts = &defaults;
	if (!base || !out || (opts->flags & ~PORTAL_REGION_F_MASK))
		return -EINVAL;
	r = handle_new();
	if (!r)
		return -ENOMEM;
	r->base = base;
	r->size = len;
	rc = attach_common(r, opts);
	if (rc) {
		handle_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int portal_region_detach(portal_region_t *r)
{
	if (!r)
		return 0;
	if (r->side != UINT32_MAX)
		/* P1 again: we leave; pairs with P2. */
		atomic_store_explicit(&part_of(r, r->side)->state, PORTAL_PART_GONE,
				      memory_order_release);
	handle_free(r);
	return 0;
}

int portal_region_destroy(const char *uri)
{
	struct uri *u = malloc(sizeof(*u));
	int rc;

	if (!u)
		return -ENOMEM;
	rc = parse_uri(uri, u);
	/* A window lies in a backing that holds more than the region. */
	if (rc == 0)
		rc = u->w.given ? -EOPNOTSUPP : u->be->destroy(u->name);
	free(u);
	return rc;
}

void *portal_region_base(const portal_region_t *r) { return r->base; }
size_t portal_region_size(const portal_region_t *r) { return (size_t)r->size; }
uint64_t portal_region_epoch(const portal_region_t *r) { return r->epoch; }
uint32_t portal_region_id(const portal_region_t *r) { return r->region_id; }
uint32_t portal_region_side(const portal_region_t *r) { return r->side; }
int portal_region_fd(const portal_region_t *r) { return r->fd; }

/* ---- directory ---- */

static void fill_info(const portal_region_t *r, const struct portal_dir_entry *e,
		      struct portal_object_info *info)
{
	memcpy(info->name, e->name, sizeof(info->name));
	info->kind = e->kind;
	info->owner_side = e->owner_side;
	info->offset = e->offset;
	info->size = e->size;
	memcpy(info->param, e->param, sizeof(info->param));
	info->addr = r->base + e->offset;
}

int portal_region_lookup(const portal_region_t *r, const char *name, uint32_t kind,
			 struct portal_object_info *info)
{
	struct portal_dir_entry *e;
	uint32_t n;
	int rc;

	if (!r || !name || !info)
		return -EINVAL;
	/* A1: pairs with R1 in alloc: entries below the count are complete. */
	n = atomic_load_explicit(&hdr_of(r)->dir_count, memory_order_acquire);
	if (n > r->dir_capacity)
		return PORTAL_EDIR;
	rc = check_directory(r->base, r->size, r->dir_offset, n, r->data_offset, &e);
	if (rc)
		return rc;
	rc = -ENOENT;
	for (uint32_t i = 0; i < n; i++) {
		if (strncmp(e[i].name, name, sizeof(e[i].name)) == 0) {
			if (!kind || e[i].kind == kind) {
				fill_info(r, &e[i], info);
				rc = 0;
			}
			break;
		}
	}
	free(e);
	return rc;
}

int portal_region_alloc(portal_region_t *r, const char *name, uint32_t kind, uint64_t size,
			uint64_t align, uint32_t owner_side, const uint64_t param[6],
			struct portal_object_info *info)
{
	return portal_region_alloc_init(r, name, kind, size, align, owner_side, param, NULL, NULL,
					info);
}

int portal_region_alloc_init(portal_region_t *r, const char *name, uint32_t kind, uint64_t size,
			     uint64_t align, uint32_t owner_side, const uint64_t param[6],
			     portal_object_init_fn init, void *arg, struct portal_object_info *info)
{
	int rc;
	struct portal_object_info tmp;
	struct portal_dir_entry *e;
	uint64_t off;
	uint32_t n;

	if (!r || !name || !*name || strlen(name) >= PORTAL_NAME_MAX || kind == 0 ||
	    kind > PORTAL_OBJ_KIND_MAX || size == 0)
		return -EINVAL;
	if (align == 0)
		align = PORTAL_LINE_PAIR;
	if (align & (align - 1) || align < PORTAL_CACHELINE || align > (UINT64_C(1) << 30))
		return -EINVAL;
	if (!r->creator)
		return -EPERM;
	if (owner_side >= r->part_count)
		return -EINVAL;
	if (portal_region_lookup(r, name, 0, &tmp) != -ENOENT)
		return -EEXIST;
	n = r->dir_used; /* ours, not the shared count a peer could lower */
	if (n >= r->dir_capacity)
		return -ENOSPC;
	off = align_up(r->alloc_top, align);
	if (off > r->size || size > r->size - off)
		return -ENOSPC;

	memset(r->base + off, 0, size);
	r->alloc_top = off + size;
	if (init && (rc = init(r->base + off, (size_t)size, off, arg)) != 0)
		return rc;
	e = &dir_of(r)[n];
	memset(e, 0, sizeof(*e));
	strncpy(e->name, name, sizeof(e->name) - 1);
	e->kind = kind;
	e->owner_side = owner_side;
	e->offset = off;
	e->size = size;
	if (param)
		memcpy(e->param, param, sizeof(e->param));
	e->checksum = crc(e, offsetof(struct portal_dir_entry, checksum));
	atomic_store_explicit(&hdr_of(r)->data_used, r->alloc_top - r->data_offset,
			      memory_order_relaxed); /* informative only */
	/* R1: object zeroed and built, entry written, then the count; pairs
	 * with A1. */
	r->dir_used = n + 1;
	atomic_store_explicit(&hdr_of(r)->dir_count, n + 1, memory_order_release);
	if (info)
		fill_info(r, e, info);
	return 0;
}

/* ---- participants ---- */

void portal_region_heartbeat(portal_region_t *r)
{
	struct portal_participant *p;

	if (!r || r->side == UINT32_MAX)
		return;
	p = part_of(r, r->side);
	/* Relaxed: only we write it, and readers want only "did it move". */
	atomic_store_explicit(&p->heartbeat,
			      atomic_load_explicit(&p->heartbeat, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

int portal_region_participant(const portal_region_t *r, uint32_t side,
			      struct portal_participant_info *out)
{
	struct portal_participant *p;

	if (!r || !out || side >= r->part_count)
		return -EINVAL;
	p = part_of(r, side);
	/* P2: state, then the fields; pairs with P1 in claim_slot. */
	out->state = atomic_load_explicit(&p->state, memory_order_acquire);
	out->kind = p->kind;
	out->epoch = atomic_load_explicit(&p->epoch, memory_order_relaxed);
	out->heartbeat = atomic_load_explicit(&p->heartbeat, memory_order_relaxed);
	out->pid = p->pid;
	memcpy(out->ident, p->ident, sizeof(out->ident));
	out->ident[sizeof(out->ident) - 1] = '\0';
	return 0;
}
