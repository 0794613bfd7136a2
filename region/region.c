/* SPDX-License-Identifier: MIT */
/*
 * Regions: the header, directory and participant slots of portal/abi.h, on
 * whatever memory a backend maps. Everything read from the mapping is copied
 * into the handle at attach and checked; the handle's copy is authoritative.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "common/thread_internal.h"
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
	uint64_t map_off;       /* file offset of the mapping (the window) */
	bool mapped;            /* we own the mapping */
	bool creator;

	/* Our participant slot (side != UINT32_MAX). */
	uint64_t my_epoch;      /* the epoch we wrote at claim */
	int lock_fd;            /* private open file description holding the OFD
	                         * lock on our slot byte; -1 when none */
	uint64_t lock_key;      /* its lock_key, when lock_fd >= 0 */
	_Atomic int fenced;     /* sticky: our slot was taken over */
	struct {
		bool started;
		bool stop;          /* under mu */
		int64_t period_ns;
		pthread_t tid;
		pthread_mutex_t mu;
		pthread_cond_t cv;
	} hb;
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
	/* Size 0: alloc never writes one, and an empty entry at the start of
	 * another would pass or fail the overlap check by sort order. */
	if (e->size == 0 || e->offset < data_offset || e->offset > size ||
	    e->size > size - e->offset)
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

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n--)
		h = (h ^ *b++) * UINT64_C(0x100000001b3);
	return h;
}

/*
 * The lock_key of byte OFF of the file behind FD as seen from this kernel:
 * a digest of the kernel's boot_id, the file's st_dev and st_ino, and OFF.
 * Two participants that compute the same key lock the same byte of the
 * same inode on the same kernel, so one can test the other's OFD lock.
 * Returns 0 and a nonzero *KEY, or a negative errno (no boot_id: no /proc).
 */
static int lock_key_of(int fd, uint64_t off, uint64_t *key)
{
	char boot[64];
	struct stat st;
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	ssize_t n;
	int bfd;

	bfd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	if (bfd < 0)
		return -errno;
	n = read(bfd, boot, sizeof(boot));
	close(bfd);
	if (n < 16)
		return -ENOENT;
	if (fstat(fd, &st) < 0)
		return -errno;
	h = fnv1a(h, boot, (size_t)n);
	h = fnv1a(h, &st.st_dev, sizeof(st.st_dev));
	h = fnv1a(h, &st.st_ino, sizeof(st.st_ino));
	h = fnv1a(h, &off, sizeof(off));
	*key = h ? h : 1;
	return 0;
}

/* File offset of SIDE's slot: the byte its owner locks. */
static uint64_t lock_off(const portal_region_t *r, uint32_t side)
{
	return r->map_off + PORTAL_REGION_PART_OFFSET + (uint64_t)side * sizeof(struct portal_participant);
}

/*
 * Take the OFD write lock on SIDE's slot byte through a private open file
 * description (a re-open of our fd through /proc, close-on-exec): the lock
 * belongs to it alone, so neither an exec'd child that inherited the
 * region's fd (memfd: is inheritable on purpose) nor our own other handles
 * keep it. Returns 0 (held; *KEY set), -EBUSY (another live description
 * holds it), or another negative errno (no lock possible here).
 */
static int take_lock(portal_region_t *r, uint32_t side, uint64_t *key)
{
	uint64_t off = lock_off(r, side);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
	char path[40];
	int fd, rc;

	rc = lock_key_of(r->fd, off, key);
	if (rc)
		return rc;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", r->fd);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	fl.l_start = (off_t)off;
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		rc = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
		close(fd);
		return rc;
	}
	r->lock_fd = fd;
	r->lock_key = *key;
	return 0;
}

static void drop_lock(portal_region_t *r)
{
	if (r->lock_fd >= 0)
		close(r->lock_fd); /* closing the description drops its lock */
	r->lock_fd = -1;
}

/* Is byte OFF of FD's file write-locked by another open file description?
 * 1 yes, 0 no, or a negative errno. */
static int lock_held(int fd, uint64_t off)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = 1 };

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

static int claim_slot(portal_region_t *r, uint32_t side, const char *ident, bool vm)
{
	struct portal_participant *p = part_of(r, side);
	uint64_t key = r->lock_key;
	uint32_t state;
	bool locked = r->lock_fd >= 0, judged;
	int rc;

	/* Same-kernel processes: the OS lock decides first (create took it
	 * already, before formatting). A VM as a whole is judged by
	 * heartbeat and takes none. */
	if (!locked && r->fd >= 0 && !vm) {
		rc = take_lock(r, side, &key);
		if (rc == -EBUSY)
			return -EBUSY;
		locked = rc == 0;
	}
	/* P2 (acquire): the previous owner's fields, to judge it. */
	state = atomic_load_explicit(&p->state, memory_order_acquire);
	if (state == PORTAL_PART_ACTIVE || state == PORTAL_PART_JOINING) {
		/* We hold the lock its owner held on this kernel and file: the
		 * owner is dead, whatever its pid says now (pids are reused).
		 * Relaxed: ordered after P2. */
		judged = locked &&
			 (atomic_load_explicit(&p->flags, memory_order_relaxed) & PORTAL_PART_F_OSLOCK) &&
			 p->lock_key == key;
		/* Otherwise the old rule: its pid, on our kernel. */
		if (!judged && (state == PORTAL_PART_JOINING ||
				(pid_alive(p->pid) && p->pid != (uint64_t)getpid()))) {
			drop_lock(r);
			return -EBUSY;
		}
	}
	/* C0: one claimant wins the slot; a racing attacher sees JOINING or
	 * loses the CAS. Relaxed on failure: we give up. */
	if (!atomic_compare_exchange_strong_explicit(&p->state, &state, PORTAL_PART_JOINING,
						     memory_order_acquire, memory_order_relaxed)) {
		drop_lock(r);
		return -EBUSY;
	}
	p->kind = vm ? PORTAL_PART_VM : PORTAL_PART_PROCESS;
	p->pid = vm ? 0 : (uint64_t)getpid();
	p->lock_key = locked ? key : 0;
	/* Relaxed: published by P1 below. */
	atomic_store_explicit(&p->flags, locked ? PORTAL_PART_F_OSLOCK : 0, memory_order_relaxed);
	memset(p->ident, 0, sizeof(p->ident));
	if (ident)
		strncpy(p->ident, ident, sizeof(p->ident) - 1);
	r->my_epoch = 0;
	while (r->my_epoch == 0) /* 0 means "no incarnation" to a watch */
		r->my_epoch = random_u64();
	atomic_store_explicit(&p->epoch, r->my_epoch, memory_order_relaxed);
	atomic_store_explicit(&p->heartbeat, 0, memory_order_relaxed);
	/* P1: slot fields, then state; pairs with P2 in portal_region_participant
	 * and W1 in the liveness watch. */
	atomic_store_explicit(&p->state, PORTAL_PART_ACTIVE, memory_order_release);
	atomic_store_explicit(&r->fenced, 0, memory_order_relaxed);
	r->side = side;
	return 0;
}

/* ---- create / attach / detach ---- */

static portal_region_t *handle_new(void)
{
	portal_region_t *r = calloc(1, sizeof(*r));

	if (r) {
		r->fd = -1;
		r->lock_fd = -1;
		r->side = UINT32_MAX;
	}
	return r;
}

static void handle_free(portal_region_t *r)
{
	drop_lock(r);
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
	r->map_off = off;
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
	/* Side 0's lock before the format: a live creator of this backing
	 * (same kernel) keeps it, and we must not wipe its region. */
	if (!(opts->flags & PORTAL_REGION_F_VM)) {
		uint64_t key;

		rc = take_lock(r, 0, &key);
		if (rc == -EBUSY) {
			handle_free(r);
			return -EBUSY;
		}
	}
	format_region(r, dir_cap, parts, opts->region_id);
	rc = claim_slot(r, 0, opts->ident, opts->flags & PORTAL_REGION_F_VM);
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
	return claim_slot(r, side, opts->ident, opts->flags & PORTAL_REGION_F_VM);
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
	struct portal_participant *p;
	uint32_t state = PORTAL_PART_ACTIVE;

	if (!r)
		return 0;
	portal_region_heartbeat_stop(r);
	if (r->side != UINT32_MAX && portal_region_check_self(r) == 0) {
		p = part_of(r, r->side);
		/* P1 again: we leave; pairs with P2 and W1. A CAS from ACTIVE,
		 * after the epoch check in check_self, so a fenced incarnation
		 * leaves a new owner's slot alone (a new claim goes through
		 * JOINING, which fails the CAS). Then the lock is dropped
		 * (handle_free): a watcher that finds it free re-reads state
		 * and sees GONE. */
		atomic_compare_exchange_strong_explicit(&p->state, &state, PORTAL_PART_GONE,
							memory_order_release, memory_order_relaxed);
	}
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

int portal_region_check_self(const portal_region_t *r)
{
	struct portal_participant *p;
	uint32_t state;
	uint64_t epoch;

	if (!r || r->side == UINT32_MAX)
		return -EINVAL;
	/* F1: relaxed, a sticky flag of our own handle. */
	if (atomic_load_explicit(&r->fenced, memory_order_relaxed))
		return PORTAL_ESTALE;
	p = part_of(r, r->side);
	/* F2: state, then epoch; acquire, pairs with P1 of whoever claimed
	 * the slot last (a new owner's ACTIVE comes with its epoch). */
	state = atomic_load_explicit(&p->state, memory_order_acquire);
	epoch = atomic_load_explicit(&p->epoch, memory_order_relaxed);
	if (state != PORTAL_PART_ACTIVE || epoch != r->my_epoch) {
		atomic_store_explicit(&((portal_region_t *)r)->fenced, 1, memory_order_relaxed);
		portal_log(PORTAL_LOG_WARN, "region: side %u was taken over (we are fenced)",
			   r->side);
		return PORTAL_ESTALE;
	}
	return 0;
}

int portal_region_heartbeat(portal_region_t *r)
{
	struct portal_participant *p;
	int rc = portal_region_check_self(r);

	if (rc)
		return rc;
	p = part_of(r, r->side);
	/* Relaxed: only we write these, and a watcher asks only "did it
	 * move", timed on its own clock. An RMW because the heartbeat thread
	 * and the application may both beat. */
	if (!(atomic_load_explicit(&p->flags, memory_order_relaxed) & PORTAL_PART_F_HEARTBEAT))
		atomic_fetch_or_explicit(&p->flags, PORTAL_PART_F_HEARTBEAT, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->heartbeat, 1, memory_order_relaxed);
	return 0;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *hb_main(void *arg)
{
	portal_region_t *r = arg;
	struct timespec ts;
	int64_t next;

	pthread_mutex_lock(&r->hb.mu);
	while (!r->hb.stop) {
		if (portal_region_heartbeat(r) == PORTAL_ESTALE)
			break; /* fenced: beating would make the new owner look alive */
		next = mono_ns() + r->hb.period_ns;
		ts.tv_sec = (time_t)(next / 1000000000);
		ts.tv_nsec = (long)(next % 1000000000);
		while (!r->hb.stop && pthread_cond_timedwait(&r->hb.cv, &r->hb.mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&r->hb.mu);
	return NULL;
}

int portal_region_heartbeat_start(portal_region_t *r, int64_t period_ns)
{
	pthread_condattr_t ca;
	int rc;

	if (!r || r->side == UINT32_MAX || period_ns < 0 || (period_ns && period_ns < 1000000))
		return -EINVAL;
	if (r->hb.started)
		return -EALREADY;
	/* The first beat now, so the slot says F_HEARTBEAT on return. */
	rc = portal_region_heartbeat(r);
	if (rc)
		return rc;
	r->hb.period_ns = period_ns ? period_ns : PORTAL_HEARTBEAT_PERIOD_NS_DEFAULT;
	r->hb.stop = false;
	rc = pthread_condattr_init(&ca);
	if (rc)
		return -rc;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&r->hb.cv, &ca);
	pthread_condattr_destroy(&ca);
	if (rc)
		return -rc;
	pthread_mutex_init(&r->hb.mu, NULL);
	rc = portal_helper_thread(&r->hb.tid, hb_main, r);
	if (rc) {
		pthread_cond_destroy(&r->hb.cv);
		pthread_mutex_destroy(&r->hb.mu);
		return -rc;
	}
	r->hb.started = true;
	return 0;
}

void portal_region_heartbeat_stop(portal_region_t *r)
{
	if (!r || !r->hb.started)
		return;
	pthread_mutex_lock(&r->hb.mu);
	r->hb.stop = true;
	pthread_cond_signal(&r->hb.cv);
	pthread_mutex_unlock(&r->hb.mu);
	pthread_join(r->hb.tid, NULL);
	pthread_cond_destroy(&r->hb.cv);
	pthread_mutex_destroy(&r->hb.mu);
	r->hb.started = false;
}

int portal_region_participant(const portal_region_t *r, uint32_t side,
			      struct portal_participant_info *out)
{
	struct portal_participant *p;

	if (!r || !out || side >= r->part_count)
		return -EINVAL;
	p = part_of(r, side);
	memset(out, 0, sizeof(*out));
	/* P2: state, then the fields; pairs with P1 in claim_slot. */
	out->state = atomic_load_explicit(&p->state, memory_order_acquire);
	out->kind = p->kind;
	out->flags = atomic_load_explicit(&p->flags, memory_order_relaxed);
	out->epoch = atomic_load_explicit(&p->epoch, memory_order_relaxed);
	out->heartbeat = atomic_load_explicit(&p->heartbeat, memory_order_relaxed);
	out->pid = p->pid;
	out->lock_key = p->lock_key;
	memcpy(out->ident, p->ident, sizeof(p->ident));
	out->ident[sizeof(p->ident) - 1] = '\0';
	return 0;
}

/* ---- liveness: watching a peer ---- */

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* the same number on every architecture */
#endif

struct portal_peer_watch {
	const portal_region_t *r;
	uint32_t side;
	uint32_t methods;
	int64_t stall_ns;
	uint64_t epoch;        /* the incarnation watched; 0: none seen yet */
	uint64_t key;          /* our lock_key for the peer's byte; 0: no lock test */
	uint64_t off;          /* the peer's lock byte in our file */
	uint64_t last_beat;    /* heartbeat as last seen */
	int64_t last_move_ns;  /* our clock when it last moved (or watching began) */
	int pidfd;             /* -1: none */
	bool pidfd_tried;      /* for this incarnation */
};

static void watch_reset(portal_peer_watch_t *w, uint64_t epoch, uint64_t beat)
{
	w->epoch = epoch;
	w->last_beat = beat;
	w->last_move_ns = mono_ns();
	if (w->pidfd >= 0)
		close(w->pidfd);
	w->pidfd = -1;
	w->pidfd_tried = false;
}

int portal_region_watch_open(const portal_region_t *r, uint32_t side,
			     const struct portal_liveness_opts *opts, portal_peer_watch_t **out)
{
	static const struct portal_liveness_opts defaults;
	struct portal_participant *p;
	portal_peer_watch_t *w;
	uint32_t state;

	if (!opts)
		opts = &defaults;
	if (!r || !out || side >= r->part_count || opts->flags || opts->stall_ns < 0 ||
	    (opts->methods & ~PORTAL_LIVENESS_ALL))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->r = r;
	w->side = side;
	w->methods = opts->methods ? opts->methods : PORTAL_LIVENESS_ALL;
	w->stall_ns = opts->stall_ns ? opts->stall_ns : PORTAL_LIVENESS_STALL_NS_DEFAULT;
	w->pidfd = -1;
	w->off = lock_off(r, side);
	if (r->fd < 0 || lock_key_of(r->fd, w->off, &w->key) != 0)
		w->key = 0;
	p = part_of(r, side);
	/* W1: state, then epoch and heartbeat; acquire, pairs with P1. */
	state = atomic_load_explicit(&p->state, memory_order_acquire);
	watch_reset(w, state == PORTAL_PART_ACTIVE ? atomic_load_explicit(&p->epoch, memory_order_relaxed) : 0,
		    atomic_load_explicit(&p->heartbeat, memory_order_relaxed));
	*out = w;
	return 0;
}

void portal_region_watch_close(portal_peer_watch_t *w)
{
	if (!w)
		return;
	if (w->pidfd >= 0)
		close(w->pidfd);
	free(w);
}

int portal_region_watch_fd(const portal_peer_watch_t *w)
{
	return w ? w->pidfd : -1;
}

int portal_region_watch_rearm(portal_peer_watch_t *w)
{
	struct portal_participant *p;
	uint32_t state;

	if (!w)
		return -EINVAL;
	p = part_of(w->r, w->side);
	/* W1: as in watch_open. */
	state = atomic_load_explicit(&p->state, memory_order_acquire);
	watch_reset(w, state == PORTAL_PART_ACTIVE ? atomic_load_explicit(&p->epoch, memory_order_relaxed) : 0,
		    atomic_load_explicit(&p->heartbeat, memory_order_relaxed));
	return 0;
}

/* Open (once per incarnation) or check the pidfd hint of a lock-judged
 * peer. A pidfd that fired while the lock is still held named another
 * process (another pid namespace, or a forked child keeps the lock): drop it. */
static void watch_pidfd(portal_peer_watch_t *w, uint64_t pid, uint16_t kind)
{
	struct pollfd pf;
	long fd;

	if (!(w->methods & PORTAL_LIVENESS_PIDFD))
		return;
	if (w->pidfd < 0 && !w->pidfd_tried) {
		w->pidfd_tried = true;
		if (kind != PORTAL_PART_PROCESS || pid == 0 || pid > INT32_MAX)
			return;
		fd = syscall(SYS_pidfd_open, (pid_t)pid, 0u);
		if (fd < 0)
			return; /* ENOSYS (before 5.3), ESRCH (not ours to see) */
		if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0) { /* pidfd_open sets it; belt and braces */ }
		w->pidfd = (int)fd;
	}
	if (w->pidfd < 0)
		return;
	pf.fd = w->pidfd;
	pf.events = POLLIN;
	if (poll(&pf, 1, 0) == 1 && lock_held(w->r->fd, w->off) == 1) {
		close(w->pidfd);
		w->pidfd = -1;
	}
}

int portal_region_watch_status(portal_peer_watch_t *w, struct portal_peer_status *st)
{
	struct portal_participant *p;
	uint32_t state;
	uint16_t flags, kind;
	uint64_t epoch, beat, pid, key;
	int64_t now;
	int held;

	if (!w || !st)
		return -EINVAL;
	p = part_of(w->r, w->side);
	/* W1: state, then the fields; acquire, pairs with P1 in claim_slot
	 * (and detach's release of GONE). Each field is read once. */
	state = atomic_load_explicit(&p->state, memory_order_acquire);
	flags = atomic_load_explicit(&p->flags, memory_order_relaxed);
	kind = p->kind;
	epoch = atomic_load_explicit(&p->epoch, memory_order_relaxed);
	beat = atomic_load_explicit(&p->heartbeat, memory_order_relaxed);
	pid = p->pid;
	key = p->lock_key;
	now = mono_ns();

	if (w->epoch == 0 && state == PORTAL_PART_ACTIVE && epoch != 0)
		watch_reset(w, epoch, beat); /* first sighting of the peer */
	memset(st, 0, sizeof(*st));
	st->epoch = epoch;
	st->watched_epoch = w->epoch;
	st->heartbeat = beat;

	switch (state) {
	case PORTAL_PART_FREE:
		st->state = PORTAL_PEER_ABSENT;
		return 0;
	case PORTAL_PART_GONE:
		st->state = PORTAL_PEER_GONE;
		return 0;
	case PORTAL_PART_JOINING:
		st->state = w->epoch == 0 ? PORTAL_PEER_ABSENT
			  : epoch == w->epoch ? PORTAL_PEER_DEAD : PORTAL_PEER_RESTARTED;
		return 0;
	case PORTAL_PART_ACTIVE:
		break;
	default:
		st->state = PORTAL_PEER_DEAD; /* a slot no live owner would write */
		return 0;
	}
	if (epoch != w->epoch) {
		st->state = PORTAL_PEER_RESTARTED;
		return 0;
	}

	if ((w->methods & (PORTAL_LIVENESS_LOCK | PORTAL_LIVENESS_PIDFD)) &&
	    (flags & PORTAL_PART_F_OSLOCK) && w->key && key == w->key) {
		held = lock_held(w->r->fd, w->off);
		if (held == 1) {
			st->method = PORTAL_LIVENESS_BY_LOCK;
			st->state = PORTAL_PEER_ALIVE;
			watch_pidfd(w, pid, kind);
			return 0;
		}
		if (held == 0) {
			st->method = PORTAL_LIVENESS_BY_LOCK;
			/* W2: the lock is free: a clean detach stored GONE
			 * before dropping it (the kernel's lock handoff orders
			 * the two), so look again before calling it dead. */
			state = atomic_load_explicit(&p->state, memory_order_acquire);
			epoch = atomic_load_explicit(&p->epoch, memory_order_relaxed);
			st->epoch = epoch;
			if (state == PORTAL_PART_GONE)
				st->state = PORTAL_PEER_GONE;
			else if (state == PORTAL_PART_ACTIVE && epoch != w->epoch)
				st->state = PORTAL_PEER_RESTARTED;
			else
				st->state = PORTAL_PEER_DEAD;
			return 0;
		}
		/* A lock we cannot test: fall back to the heartbeat. */
	}
	if ((w->methods & PORTAL_LIVENESS_HEARTBEAT) && (flags & PORTAL_PART_F_HEARTBEAT)) {
		st->method = PORTAL_LIVENESS_BY_HEARTBEAT;
		if (beat != w->last_beat) {
			w->last_beat = beat;
			w->last_move_ns = now;
		}
		st->stalled_ns = now - w->last_move_ns;
		st->state = st->stalled_ns >= w->stall_ns ? PORTAL_PEER_DEAD : PORTAL_PEER_ALIVE;
		return 0;
	}
	st->method = PORTAL_LIVENESS_NONE;
	st->state = PORTAL_PEER_ALIVE;
	return 0;
}
