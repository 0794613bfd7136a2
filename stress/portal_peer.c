/* SPDX-License-Identifier: MIT */
/*
 * portal_peer - one process of a cross-process test. The driver
 * (process_test.c, hostile_test.c) creates the region and starts several of
 * these with fork+exec, each in one role:
 *
 *   portal_peer --uri shm:NAME --side N --role producer|consumer|sub|hostile|honest
 *               --kind spsc|mpsc|mpmc|msg|bcast-hold|bcast-lap|<hostile scenario>
 *               [--count N] [--id K] [--producers P] [--consumers C] [--burst B]
 *               [--timeout SEC] [--block futex|eventfd --efd-data FD --efd-space FD]
 *               [--slow] [--guard] [--seed S]
 *
 * It attaches to the region as side N, reports into result slot N-1 of the
 * control block, prints a one-line summary on stdout, and exits 0 only if
 * every check passed (see stress.h for the other exit codes).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portal/region.h"
#include "stress/peer.h"

void peer_log(const struct peer *p, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "portal_peer[%s/%s side %u id %u]: %s\n", p->role ? p->role : "?",
		p->kind ? p->kind : "?", p->side, p->id, buf);
}

static void log_cb(enum portal_log_level level, const char *msg, void *arg)
{
	const struct peer *p = arg;
	static unsigned printed;

	/* Quarantine messages are expected in the hostile test; keep the
	 * first few so a failure can be read, drop the flood. */
	if (printed++ < 8)
		peer_log(p, "portal log %d: %s", (int)level, msg);
}

int peer_barrier(struct peer *p)
{
	struct stress_backoff b = { 0 };

	/* Relaxed is enough for the count; the data the others need to see
	 * (handles attached, cursors placed) is published by the rings and
	 * the acq_rel add below orders our attach before the others start. */
	atomic_fetch_add_explicit(&p->ctl->ready, 1, memory_order_acq_rel);
	while (atomic_load_explicit(&p->ctl->ready, memory_order_acquire) < p->ctl->npeers) {
		if (atomic_load_explicit(&p->ctl->abort, memory_order_relaxed))
			return STRESS_EXIT_ABORTED;
		if (stress_now() > p->deadline)
			return STRESS_EXIT_TIMEOUT;
		stress_backoff(&b);
	}
	return 0;
}

bool peer_should_stop(struct peer *p)
{
	if (atomic_load_explicit(&p->ctl->abort, memory_order_relaxed))
		return true;
	if ((p->tick++ & 255) == 0 && stress_now() > p->deadline)
		return true;
	return false;
}

void peer_abort(struct peer *p)
{
	atomic_store_explicit(&p->ctl->abort, 1, memory_order_relaxed);
}

static int usage(void)
{
	fprintf(stderr, "usage: portal_peer --uri URI --side N --role ROLE --kind KIND [options]\n"
			"  see the top of stress/portal_peer.c\n");
	return STRESS_EXIT_USAGE;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || end == s || *end ? -1 : 0;
}

static int parse_args(struct peer *p, int argc, char **argv)
{
	uint64_t v;

	p->producers = 1;
	p->consumers = 1;
	p->burst = 32;
	p->timeout = 120;
	p->efd_data = -1;
	p->efd_space = -1;
	p->seed = (uint64_t)getpid() * UINT64_C(0x9E3779B97F4A7C15) + 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--slow")) {
			p->slow = true;
			continue;
		}
		if (!strcmp(a, "--guard")) {
			p->guard = true;
			continue;
		}
		if (!val)
			return -1;
		i++;
		if (!strcmp(a, "--uri"))
			p->uri = val;
		else if (!strcmp(a, "--role"))
			p->role = val;
		else if (!strcmp(a, "--kind"))
			p->kind = val;
		else if (!strcmp(a, "--block")) {
			if (!strcmp(val, "futex"))
				p->block = PEER_BLOCK_FUTEX;
			else if (!strcmp(val, "eventfd"))
				p->block = PEER_BLOCK_EVENTFD;
			else
				return -1;
		} else {
			if (parse_u64(val, &v))
				return -1;
			if (!strcmp(a, "--side"))
				p->side = (uint32_t)v;
			else if (!strcmp(a, "--count"))
				p->count = v;
			else if (!strcmp(a, "--id"))
				p->id = (uint32_t)v;
			else if (!strcmp(a, "--producers"))
				p->producers = (uint32_t)v;
			else if (!strcmp(a, "--consumers"))
				p->consumers = (uint32_t)v;
			else if (!strcmp(a, "--burst"))
				p->burst = (uint32_t)v;
			else if (!strcmp(a, "--timeout"))
				p->timeout = (double)v;
			else if (!strcmp(a, "--efd-data"))
				p->efd_data = (int)v;
			else if (!strcmp(a, "--efd-space"))
				p->efd_space = (int)v;
			else if (!strcmp(a, "--seed"))
				p->seed = v ? v : 1;
			else
				return -1;
		}
	}
	if (!p->uri || !p->role || !p->kind || p->side == 0 || p->side > STRESS_MAX_PEERS ||
	    p->producers == 0 || p->producers > 64 || p->consumers == 0 || p->burst == 0 ||
	    p->burst > 256)
		return -1;
	return 0;
}

/*
 * Map the region ourselves between two PROT_NONE guard pages and attach to
 * that memory: a read that runs off either end of the region faults at
 * once instead of landing in whatever mapping happens to be next. Only the
 * shm: scheme (the drivers use it).
 */
static int attach_guarded(struct peer *p, const struct portal_region_opts *opts)
{
	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	char path[256];
	struct stat st;
	uint8_t *res;
	void *m;
	int fd, rc;

	if (strncmp(p->uri, "shm:", 4) != 0)
		return -EINVAL;
	snprintf(path, sizeof(path), "/%s", p->uri + 4);
	fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return -EINVAL;
	}
	p->map_len = (size_t)st.st_size + 2 * page;
	res = mmap(NULL, p->map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED) {
		close(fd);
		return -errno;
	}
	m = mmap(res + page, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
		 0);
	close(fd);
	if (m == MAP_FAILED) {
		munmap(res, p->map_len);
		return -errno;
	}
	p->map = res;
	rc = portal_region_attach_mem(m, (size_t)st.st_size, opts, &p->reg);
	if (rc) {
		munmap(res, p->map_len);
		p->map = NULL;
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct portal_region_opts opts = { 0 };
	struct portal_object_info info;
	struct peer p = { 0 };
	char ident[32];
	int rc, code;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse_args(&p, argc, argv))
		return usage();
#if defined(PORTAL_STRESS_EXPECT_ASAN)
	if (!PEER_ASAN) {
		fprintf(stderr, "portal_peer_asan: built without AddressSanitizer\n");
		return STRESS_EXIT_SETUP;
	}
#endif
	p.t0 = stress_now();
	p.deadline = p.t0 + p.timeout;
	portal_set_log(log_cb, &p, PORTAL_LOG_ERROR);

	snprintf(ident, sizeof(ident), "peer %s %u", p.role, p.id);
	opts.side = p.side;
	opts.ident = ident;
	rc = p.guard ? attach_guarded(&p, &opts) : portal_region_attach(p.uri, &opts, &p.reg);
	if (rc) {
		peer_log(&p, "attach %s: %s", p.uri, portal_strerror(rc));
		return STRESS_EXIT_SETUP;
	}
	rc = portal_region_lookup(p.reg, STRESS_CTL_NAME, PORTAL_OBJ_USER, &info);
	if (rc || info.size < sizeof(struct stress_ctl) ||
	    ((struct stress_ctl *)info.addr)->magic != STRESS_CTL_MAGIC ||
	    ((struct stress_ctl *)info.addr)->npeers < p.side) {
		peer_log(&p, "control block: %s", rc ? portal_strerror(rc) : "bad");
		portal_region_detach(p.reg);
		return STRESS_EXIT_SETUP;
	}
	p.ctl = info.addr;
	p.res = &p.ctl->res[p.side - 1];
	memset(p.res, 0, sizeof(*p.res));
	atomic_store_explicit(&p.res->state, STRESS_ST_RUNNING, memory_order_release);

	if (!strcmp(p.role, "hostile"))
		code = peer_run_hostile(&p);
	else if (!strcmp(p.role, "honest"))
		code = peer_run_honest(&p);
	else
		code = peer_run_stress(&p);

	if (code == 0 && p.res->errors)
		code = STRESS_EXIT_FAIL;
	if (code != 0 && code != STRESS_EXIT_ABORTED)
		peer_abort(&p);
	printf("portal_peer: role=%s kind=%s id=%u messages=%llu errors=%llu seq_errors=%llu "
	       "sum_errors=%llu lost=%llu sleeps=%llu asan=%s time=%.2fs result=%s\n",
	       p.role, p.kind, p.id, (unsigned long long)p.res->messages,
	       (unsigned long long)p.res->errors, (unsigned long long)p.res->seq_errors,
	       (unsigned long long)p.res->sum_errors, (unsigned long long)p.res->lost,
	       (unsigned long long)p.res->sleeps, PEER_ASAN ? "on" : "off", stress_now() - p.t0,
	       code == 0 ? "PASS" : code == STRESS_EXIT_TIMEOUT ? "TIMEOUT"
			    : code == STRESS_EXIT_ABORTED ? "ABORTED" : "FAIL");
	/* Release: the result fields, then the state; the driver reads them
	 * after waitpid anyway. */
	atomic_store_explicit(&p.res->state, code == 0 ? STRESS_ST_PASSED : STRESS_ST_FAILED,
			      memory_order_release);
	portal_region_detach(p.reg);
	if (p.map)
		munmap(p.map, p.map_len);
	return code;
}
