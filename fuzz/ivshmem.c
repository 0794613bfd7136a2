/* SPDX-License-Identifier: MIT */
/*
 * ivshmem.c - libFuzzer target: the ivshmem server protocol, both ways.
 *
 * The first input byte picks the mode (bit 0).
 *
 * Hostile server -> our client (portal_ivshmem_client_*). The harness plays
 * the server over a real Unix stream socket: it listens on a socket in a
 * temporary directory, and the script's server operations write int64
 * messages to the accepted connection, each with zero, one or several
 * real fds (eventfds, memfds of any size, both ends of a pipe, the write
 * end of a full blocking pipe, /dev/null), whole or split in two writes,
 * or cut short; plus convenience operations
 * that send a valid set-up, a peer joining, a peer leaving. The client's
 * calls (connect, process, eventfd, ring, peers, close) are interleaved.
 *
 * The client connects by path, and reads its set-up inside
 * portal_ivshmem_client_connect(). To keep a single thread (and every run
 * deterministic), this file defines connect(): for our socket path it
 * connects, accepts the connection and writes the script's set-up
 * messages before returning, the way a server that answers at once would;
 * every other connect() goes straight to the system call.
 *
 * A model of the stream follows every byte written: which bytes form each
 * 8-byte message, and which fds the client receives with it (the fds of a
 * write arrive with the message that holds its first byte; Linux delivers
 * them with the read that first touches that write). Messages with more
 * than one fd, or cut by the end of the stream, are malformed. A model of
 * the client, written from doorbell.h, applies them. Invariants:
 *
 *  - every call returns what the model says (connect: 0, -ECONNREFUSED,
 *    -ETIMEDOUT, PORTAL_EVERSION, PORTAL_EPROTO, PORTAL_EPEERDEAD; process:
 *    1 with the event the model names, 0, PORTAL_EPROTO, PORTAL_EPEERDEAD;
 *    eventfd, ring and peers likewise), so no other code is ever returned;
 *  - the client's id, vectors, shared memory size, peer list and every
 *    eventfd it hands out match the model; each fd it hands out is the very
 *    file the server sent for that peer and vector (same inode; ringing an
 *    eventfd raises exactly that eventfd's counter) and is close-on-exec;
 *  - no fd leaks: after every call, the open fds of the process are the
 *    harness's plus exactly those the model says the client holds, and at
 *    the end of the input exactly those open before it;
 *  - no hang: connect is given a long timeout only when the model says the
 *    set-up completes or fails with what was sent (else FI_SHORT_WAIT_NS,
 *    or 0); process uses timeout 0;
 *    ringing a vector that is a full blocking pipe returns 0 and writes
 *    nothing (the client makes every vector fd non-blocking, so a full pipe
 *    is a full counter), where a blocking write would hang until
 *    libFuzzer's -timeout.
 *
 * Hostile client -> our server (ivshmem-server/server.c, compiled into this
 * target by fuzz/CMakeLists.txt). ivs_run() runs on a listening socket, as
 * a coroutine on a stack of its own in the harness's thread: it runs when
 * the harness waits for it, until it waits itself ("Running the server
 * loop" below), so one thread plays both sides here too and every input
 * runs the same way every time. A pipe stands in for its signalfd (the
 * loop only read()s a struct signalfd_siginfo from it), so the harness
 * stops it by writing a SIGTERM record. The script connects honest clients
 * (portal_ivshmem_client_connect) and raw hostile ones, which send bytes
 * (with or without fds), half-close, close, read or do not read, and calls
 * process on the honest clients. Before a connect, a read or a process, the
 * loop has handled everything the harness did before (fs_settle), so what
 * each client reads is determined, and a peer that closed is gone.
 * Invariants:
 *
 *  - every connection the server accepts gets the next id (0, 1, 2, ...);
 *    one is refused exactly when the server is full (--max-peers live
 *    peers; every peer that closed before has been reaped);
 *  - a set-up lists every live peer, vectors times each, and no dead one;
 *  - a client that sends a byte or half-closes is dropped (its stream
 *    ends); a well-behaved one never is, and never gets a malformed
 *    message (an honest client's process never returns PORTAL_EPROTO or
 *    PORTAL_EPEERDEAD while the server runs);
 *  - at the end, every honest client's peer table converges to exactly the
 *    live peers, each with all its vectors, and ringing a peer through the
 *    table raises that peer's own eventfd;
 *  - SIGTERM stops the loop as soon as it reads the record, every client
 *    then sees the end of the stream, the loop left no connection
 *    unaccepted and no record unread, and once all is closed no fd is left
 *    open.
 *
 * Waits for the server keep deadlines of seconds (FS_WAIT_NS) that only a
 * bug reaches; in a correct run the answer is there when the loop yields.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "fuzz/fuzz_format.h"
#include "fuzz/fuzz_util.h"

#include "portal/doorbell.h"

#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>

/* The server's event loop: ivshmem-server/server.c is compiled into this
 * target alone, with its sanitizers (fuzz/CMakeLists.txt); server.h is all
 * the harness uses of it. */
#include "ivshmem-server/server.h"

FZ_DEFINE_GLOBALS

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int connect(int fd, const struct sockaddr *addr, socklen_t len);

/* The input format: fuzz_format.h, section "ivshmem" (enum fzic_op,
 * fzic_kind, the selectors, enum fzis_op). */

#define FI_MAX_OBJS   192
#define FI_MAX_MSGS   2048
#define FS_MAX_HONEST 6
#define FS_MAX_HOSTILE 8
#define FS_MAX_IDS    4096 /* ids one input can be handed out: at most one a byte */
#define FS_WAIT_NS    (INT64_C(10000000000)) /* 10 s: only a bug waits this long */
/*
 * connect's timeout when the model says the client will wait for bytes
 * that never come: it waits (ppoll) and times out. It must outlast the
 * client's own start (socket, our connect() writing the set-up): 18 us
 * median, 54 us at the 99th percentile over a grown corpus, so at 50 us
 * almost every such connect still reaches the wait, and one that does not
 * takes the "deadline passed between messages" path, with the same result.
 * (It was 1 ms, which slept for most of each client-mode input.)
 */
#define FI_SHORT_WAIT_NS (INT64_C(50000))

static char fi_dir[64];
static char fi_path[108];       /* client mode's socket */
static char fs_path[108];       /* server mode's */
/*
 * The listening sockets, server mode's shared memory and signal pipe live
 * as long as the process: made anew for every input they cost a bind and
 * an unlink (a file in /tmp) and five more syscalls, a tenth of an empty
 * server-mode input. Each server-mode input checks that it leaves them as
 * it found them (nothing in the backlog or in the pipe).
 */
static int fi_listen = -1;      /* client mode's listening socket */
static int fs_listen = -1;      /* server mode's (non-blocking, as main.c's) */
static int fs_shm = -1;         /* the server's shared memory, 4096 bytes */
static int fs_sigr = -1, fs_sigw = -1; /* the pipe that stands in for the signalfd */
static int fi_baseline;         /* open fds between inputs */
static int fi_fd_limit;         /* RLIMIT_NOFILE: no fd is at or above it */

static int64_t fi_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The open fds, from /proc/self/fd: exact, but a directory read (a dentry
 * made per fd), which took a quarter of client mode's CPU when done after
 * every call (with an open and a close of the directory each time). So this
 * runs at the start and end of every input, on a directory fd kept open
 * (one of the fds it counts); with KEEP, it keeps their numbers for
 * fi_scan_prepare(). */
static int *fi_base;            /* the fds open at the input's start, sorted */
static int fi_base_n;

static int fi_cmp_int(const void *a, const void *b)
{
	return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static int fi_proc_fd = -1;     /* /proc/self/fd, open for good: read from 0 */

static int fi_count_fds(bool keep)
{
	static char buf[16384] __attribute__((aligned(8)));
	int n = 0;

	if (keep)
		fi_base_n = 0;
	FZ_CHECK(lseek(fi_proc_fd, 0, SEEK_SET) == 0, "lseek /proc/self/fd: %d", errno);
	for (;;) {
		ssize_t got = getdents64(fi_proc_fd, buf, sizeof(buf));

		FZ_CHECK(got >= 0, "getdents64 /proc/self/fd: %d", errno);
		if (got == 0)
			break;
		for (ssize_t off = 0; off < got;) {
			const struct dirent64 *e = (const struct dirent64 *)(const void *)(buf + off);
			const char *name = e->d_name;

			off += e->d_reclen;
			if (name[0] == '.')
				continue;
			n++;
			if (keep) {
				int *nb = realloc(fi_base, (size_t)(fi_base_n + 1) * sizeof(*nb));

				FZ_CHECK(nb, "harness: out of memory");
				fi_base = nb;
				fi_base[fi_base_n++] = atoi(name);
			}
		}
	}
	if (keep)
		qsort(fi_base, (size_t)fi_base_n, sizeof(*fi_base), fi_cmp_int);
	return n;
}

/*
 * After every client call, the count is taken with one poll() over a list
 * of fd numbers (no events asked: POLLNVAL marks a number not open) that
 * is sure to hold every open fd. Linux gives each new fd the lowest number
 * not open, and nothing in this process picks a number itself during an
 * input (no dup2, dup3 or F_DUPFD with a floor: not the harness, the
 * client, libFuzzer or the sanitizers). So while at most M fds made in
 * this input are open at once, each of them has one of the first M
 * numbers that were free at its start, or the number of an fd open at
 * its start that was closed since: the list is those numbers and every fd
 * open at the start. M counts the harness's fds (two per object, the
 * accepted socket), every fd sent to the client so far (the most it can
 * hold), its socket, and 64 for what a call holds for an instant (one
 * recvmsg's fds). For a leak to escape, one call would have to hold more
 * than 64 fds beyond all these at once, close the lower ones and keep a
 * higher one; and the exact count at the end of the input
 * (fi_count_fds) still sees any fd left open.
 */
static struct pollfd *fi_scan;
static int fi_scan_len, fi_scan_cap;
static long fi_scan_m;          /* the M the list was made for; -1: none */

static void fi_scan_push(int fd)
{
	if (fi_scan_len == fi_scan_cap) {
		int cap = fi_scan_cap ? 2 * fi_scan_cap : 256;
		struct pollfd *np = realloc(fi_scan, (size_t)cap * sizeof(*np));

		FZ_CHECK(np, "harness: out of memory");
		fi_scan = np;
		fi_scan_cap = cap;
	}
	fi_scan[fi_scan_len++] = (struct pollfd){ .fd = fd, .events = 0 };
}

static void fi_scan_prepare(long m)
{
	int fd, j = 0;
	long free_seen = 0;

	if (m <= fi_scan_m)
		return; /* M only grows within an input: the list too */
	fi_scan_len = 0;
	for (fd = 0; free_seen < m && fd < fi_fd_limit; fd++) {
		if (j < fi_base_n && fi_base[j] == fd)
			j++;
		else
			free_seen++;
		fi_scan_push(fd);
	}
	for (; j < fi_base_n; j++)
		fi_scan_push(fi_base[j]);
	fi_scan_m = m;
}

static int fi_count_fds_listed(void)
{
	const struct timespec zero = { 0, 0 };
	int open = 0;

	FZ_CHECK(ppoll(fi_scan, (nfds_t)fi_scan_len, &zero, NULL) >= 0, "ppoll: %d", errno);
	for (int i = 0; i < fi_scan_len; i++)
		open += !(fi_scan[i].revents & POLLNVAL);
	return open;
}

static bool fi_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	return fl >= 0 && (fl & FD_CLOEXEC);
}

static bool fi_same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* ------------------------------------------------------------------ */
/* Client mode: the objects the server sends                           */
/* ------------------------------------------------------------------ */

struct fi_obj {
	int kind;       /* FZIC_K_EFD, _MEMFD, _PIPE_R, _PIPE_W, _NULL, _PIPE_FULL */
	int fd;         /* what is sent (the harness keeps it open) */
	int fd2;        /* the pipe's other end, or -1 */
	int fill;       /* FZIC_K_PIPE_FULL: the bytes that fill it */
};

/* One 8-byte message as the client will read it. */
struct fi_msg {
	int64_t v;
	int nfds;       /* fds that arrive with it */
	int obj;        /* the object of its fd when nfds == 1 */
	bool cut;       /* ended by the end of the stream */
};

struct fi_peer {
	uint32_t id;
	unsigned received;
	int obj[PORTAL_IVSHMEM_MAX_VECTORS]; /* -1: no fd stored */
};

struct fi {
	struct fz *in;
	unsigned vectors;
	bool short_timeout_zero;
	/* every object created for this input */
	struct fi_obj obj[FI_MAX_OBJS];
	unsigned nobj;
	/* the session */
	int srv;                /* accepted connection, -1 before connect */
	bool connected;         /* the client exists */
	bool eof_sent;
	bool eof_pending;       /* FZIC_EOF before connect */
	/* chunks written before connect (replayed by connect()); fi_pre */
	struct fi_chunk *pre;
	unsigned npre;
	/* the stream model: FI_MAX_MSGS entries, fi_q or fi_dry_q */
	struct fi_msg *q;
	unsigned qhead, qtail;
	uint8_t part[8];
	unsigned partlen, partfds;
	int partobj;
	bool stream_full;       /* too many messages for the model: stop writing */
	unsigned long sent_fds; /* fds the socket took in this input */
	int64_t told_id;        /* the id message last sent as FZIC_SETUP, or -1 */
	/* the client model */
	portal_ivshmem_client_t *c;
	uint32_t id;
	int shm_obj;
	uint64_t shm_size;
	unsigned own_received;
	int own[PORTAL_IVSHMEM_MAX_VECTORS];
	struct fi_peer *peers;  /* sorted by id */
	size_t npeers;
};

static struct fi *fi_cur; /* for connect() */

/*
 * Client mode's state is static: a calloc of it for every input and every
 * connect's dry run cost fresh pages each time (ASan's quarantine keeps
 * freed ones), more than the rest of a short input. The two big queues
 * are written before they are read, so only struct fi is cleared.
 */
struct fi_chunk {
	uint8_t b[8];
	unsigned len, nfds;
	int objs[5];
};
static struct fi_chunk fi_pre[FI_MAX_MSGS];
static struct fi_msg fi_q[FI_MAX_MSGS], fi_dry_q[FI_MAX_MSGS];
static struct fi fi_state, fi_dry;

static int fi_harness_fds(const struct fi *s)
{
	int n = s->srv >= 0;

	for (unsigned i = 0; i < s->nobj; i++)
		n += (s->obj[i].fd >= 0) + (s->obj[i].fd2 >= 0);
	return n;
}

static int fi_client_fds(const struct fi *s)
{
	int n;

	if (!s->connected)
		return 0;
	n = 2; /* socket, shm */
	for (unsigned v = 0; v < s->vectors; v++)
		n += s->own[v] >= 0;
	for (size_t i = 0; i < s->npeers; i++)
		for (unsigned v = 0; v < s->vectors; v++)
			n += s->peers[i].obj[v] >= 0;
	return n;
}

/* For a failure report: what each open fd is. */
static void fi_dump_fds(void)
{
	char path[64], target[256];

	for (int fd = 0; fd < 1024 || (fi_scan_len && fd <= fi_scan[fi_scan_len - 1].fd); fd++) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		fprintf(stderr, "  fd %d: %s\n", fd, target);
	}
}

static void fi_check_fds(const struct fi *s, const char *after)
{
	int now, want = fi_baseline + fi_harness_fds(s) + fi_client_fds(s);

	fi_scan_prepare(2 * (long)s->nobj + 1 + (long)s->sent_fds + 1 + 64);
	now = fi_count_fds_listed();

	if (now != want)
		fi_dump_fds();

	FZ_CHECK(now == want, "after %s: %d fds open, expected %d (%d harness, %d client)",
		 after, now, want, fi_harness_fds(s), fi_client_fds(s));
}

/* Bytes waiting in the pipe whose read end is FD. */
static int fi_pipe_bytes(int fd)
{
	int n = -1;

	FZ_CHECK(ioctl(fd, FIONREAD, &n) == 0, "FIONREAD: %d", errno);
	return n;
}

/*
 * Fill the pipe whose write end is W until a write of 8 bytes (a ring)
 * would block, then make W blocking again: a hostile server's vector that
 * blocks a writer for ever unless the client made it non-blocking. The
 * pipe is shrunk to one page first, so filling it is cheap. Returns the
 * bytes in the pipe.
 */
static int fi_fill_pipe(int w, int r)
{
	static const uint8_t page[4096];
	int fl;

	(void)fcntl(w, F_SETPIPE_SZ, 4096); /* may fail: then 64 KiB */
	fl = fcntl(w, F_GETFL);
	FZ_CHECK(fl >= 0 && fcntl(w, F_SETFL, fl | O_NONBLOCK) == 0, "fcntl: %d", errno);
	while (write(w, page, sizeof(page)) > 0)
		;
	/* Partial pages: top up in ring-sized writes until one is refused. */
	while (write(w, page, 8) == 8)
		;
	FZ_CHECK(errno == EAGAIN, "filling a pipe: %d", errno);
	FZ_CHECK(fcntl(w, F_SETFL, fl & ~O_NONBLOCK) == 0, "fcntl: %d", errno);
	return fi_pipe_bytes(r);
}

static int fi_new_obj(struct fi *s, int kind, unsigned arg)
{
	static const off_t sizes[4] = FZIC_MEMFD_SIZES;
	struct fi_obj *o;
	int p[2];

	if (kind == FZIC_K_EFD_AGAIN) {
		/* an eventfd sent before, again: arg counts back from the newest */
		for (unsigned i = s->nobj, k = 0; i-- > 0;)
			if (s->obj[i].kind == FZIC_K_EFD && k++ == arg)
				return (int)i;
		kind = FZIC_K_EFD;
	}
	if (s->nobj == FI_MAX_OBJS)
		return -1;
	o = &s->obj[s->nobj];
	o->kind = kind;
	o->fd2 = -1;
	o->fill = 0;
	switch (kind) {
	case FZIC_K_EFD:
		o->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		break;
	case FZIC_K_MEMFD:
		o->fd = memfd_create("fi-shm", MFD_CLOEXEC);
		if (o->fd >= 0 && ftruncate(o->fd, sizes[arg & 3]) < 0)
			FZ_CHECK(0, "ftruncate: %d", errno);
		break;
	case FZIC_K_PIPE_R:
	case FZIC_K_PIPE_W:
		FZ_CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0, "pipe2: %d", errno);
		o->fd = kind == FZIC_K_PIPE_R ? p[0] : p[1];
		o->fd2 = kind == FZIC_K_PIPE_R ? p[1] : p[0];
		break;
	case FZIC_K_PIPE_FULL:
		/* blocking, unlike the other kinds: as a hostile server can */
		FZ_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe2: %d", errno);
		o->fd = p[1];
		o->fd2 = p[0];
		o->fill = fi_fill_pipe(p[1], p[0]);
		FZ_CHECK(o->fill > 0 && !(fcntl(p[1], F_GETFL) & O_NONBLOCK), "full pipe: %d",
			 o->fill);
		break;
	default:
		o->fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		break;
	}
	FZ_CHECK(o->fd >= 0, "cannot make an fd of kind %d: %d", kind, errno);
	return (int)s->nobj++;
}

/* ---- the stream model ---- */

static void fi_push(struct fi *s, const struct fi_msg *m)
{
	FZ_CHECK(s->qtail - s->qhead < FI_MAX_MSGS, "harness: message queue");
	s->q[s->qtail++ % FI_MAX_MSGS] = *m;
}

/* N bytes at B were written, with NFDS fds (objects OBJS) on the first. */
static void fi_model_bytes(struct fi *s, const uint8_t *b, unsigned n, unsigned nfds,
			   const int *objs)
{
	if (!n)
		return;
	if (nfds)
		s->partobj = s->partfds ? -1 : objs[0];
	s->partfds += nfds;
	for (unsigned i = 0; i < n; i++) {
		s->part[s->partlen++] = b[i];
		if (s->partlen == 8) {
			struct fi_msg m = { 0 };
			uint64_t le;

			memcpy(&le, s->part, 8);
			m.v = (int64_t)le64toh(le);
			m.nfds = (int)s->partfds;
			m.obj = s->partfds == 1 ? s->partobj : -1;
			fi_push(s, &m);
			s->partlen = 0;
			s->partfds = 0;
			s->partobj = -1;
		}
	}
}

/* Write N bytes with the fds of objects OBJS[0..NFDS) on the connection;
 * what the socket takes goes into the model. */
static void fi_write(struct fi *s, const uint8_t *b, unsigned n, unsigned nfds, const int *objs)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 5)];
	} u;
	struct msghdr m;
	struct iovec iov;
	ssize_t k;

	if (s->stream_full || !n)
		return;
	if (s->qtail - s->qhead > FI_MAX_MSGS - 8) {
		s->stream_full = true;
		return;
	}
	memset(&m, 0, sizeof(m));
	memset(&u, 0, sizeof(u));
	iov.iov_base = (void *)b;
	iov.iov_len = n;
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	if (nfds) {
		struct cmsghdr *c;

		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		for (unsigned i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(c) + i * sizeof(int), &s->obj[objs[i]].fd, sizeof(int));
	}
	k = sendmsg(s->srv, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	FZ_TRACE("  server writes %u bytes, %u fds: %zd\n", n, nfds, k);
	if (k <= 0) {
		/* full, or the client has gone: nothing was written */
		FZ_CHECK(k < 0 && (errno == EAGAIN || errno == EPIPE || errno == ECONNRESET),
			 "server write: %zd errno %d", k, errno);
		if (errno == EAGAIN)
			s->stream_full = true;
		return;
	}
	s->sent_fds += nfds;
	fi_model_bytes(s, b, (unsigned)k, nfds, objs);
	if ((unsigned)k < n)
		s->stream_full = true;
}

static void fi_eof(struct fi *s)
{
	if (s->eof_sent)
		return;
	s->eof_sent = true;
	FZ_CHECK(shutdown(s->srv, SHUT_WR) == 0 || errno == ENOTCONN, "shutdown: %d", errno);
	FZ_TRACE("  server half-closes\n");
	if (s->partlen) {
		/* the client reads the piece, then the end: a cut message */
		struct fi_msg m = { .nfds = (int)s->partfds, .obj = -1, .cut = true };

		fi_push(s, &m);
		s->partlen = 0;
		s->partfds = 0;
	}
}

/* A write of the script: before connect it is kept for connect(). */
static void fi_chunk(struct fi *s, const uint8_t *b, unsigned n, unsigned nfds, const int *objs)
{
	if (s->srv >= 0) {
		if (!s->eof_sent)
			fi_write(s, b, n, nfds, objs);
		return;
	}
	if (s->npre == FI_MAX_MSGS || s->eof_pending)
		return;
	memcpy(s->pre[s->npre].b, b, n);
	s->pre[s->npre].len = n;
	s->pre[s->npre].nfds = nfds;
	if (nfds)
		memcpy(s->pre[s->npre].objs, objs, nfds * sizeof(int));
	s->npre++;
}

static void fi_send_value(struct fi *s, int64_t v, int obj)
{
	uint64_t le = htole64((uint64_t)v);

	fi_chunk(s, (const uint8_t *)&le, 8, obj >= 0, &obj);
}

/* Pop the message the client reads next: 1, or 0 with nothing there
 * (the client would wait), or PORTAL_EPEERDEAD at the end of the stream. */
static int fi_pop(struct fi *s, struct fi_msg *m)
{
	if (s->qhead != s->qtail) {
		*m = s->q[s->qhead++ % FI_MAX_MSGS];
		return 1;
	}
	return s->eof_sent ? PORTAL_EPEERDEAD : 0;
}

/* ---- the client model ---- */

static struct fi_peer *fi_find(struct fi *s, uint32_t id, size_t *pos)
{
	size_t i;

	for (i = 0; i < s->npeers && s->peers[i].id < id; i++)
		;
	if (pos)
		*pos = i;
	return i < s->npeers && s->peers[i].id == id ? &s->peers[i] : NULL;
}

/* What apply() must do with M (after the set-up's first three): the
 * return code, and *EV. */
static int fi_model_apply(struct fi *s, const struct fi_msg *m, struct portal_ivshmem_event *ev)
{
	struct fi_peer *p;
	uint32_t id;
	size_t pos;

	if (m->v < 0 || m->v > PORTAL_IVSHMEM_MAX_PEER_ID)
		return PORTAL_EPROTO;
	id = (uint32_t)m->v;
	if (m->nfds && id == s->id) {
		ev->kind = PORTAL_IVSHMEM_EV_OWN_VECTOR;
		ev->peer = id;
		ev->vector = s->own_received;
		if (s->own_received < s->vectors)
			s->own[s->own_received] = m->obj;
		s->own_received++;
		return 1;
	}
	if (m->nfds) {
		p = fi_find(s, id, &pos);
		if (!p) {
			s->peers = realloc(s->peers, (s->npeers + 1) * sizeof(*s->peers));
			FZ_CHECK(s->peers, "harness: out of memory");
			memmove(&s->peers[pos + 1], &s->peers[pos],
				(s->npeers - pos) * sizeof(*s->peers));
			s->npeers++;
			p = &s->peers[pos];
			p->id = id;
			p->received = 0;
			for (unsigned v = 0; v < PORTAL_IVSHMEM_MAX_VECTORS; v++)
				p->obj[v] = -1;
		}
		ev->kind = PORTAL_IVSHMEM_EV_PEER_VECTOR;
		ev->peer = id;
		ev->vector = p->received;
		if (p->received < s->vectors)
			p->obj[p->received] = m->obj;
		p->received++;
		return 1;
	}
	if (id == s->id)
		return PORTAL_EPROTO;
	p = fi_find(s, id, &pos);
	if (!p)
		return PORTAL_EPROTO;
	memmove(p, p + 1, (s->npeers - pos - 1) * sizeof(*p));
	s->npeers--;
	ev->kind = PORTAL_IVSHMEM_EV_PEER_LEFT;
	ev->peer = id;
	ev->vector = 0;
	return 1;
}

static void fi_model_reset_client(struct fi *s)
{
	s->connected = false;
	s->c = NULL;
	s->own_received = 0;
	for (unsigned v = 0; v < PORTAL_IVSHMEM_MAX_VECTORS; v++)
		s->own[v] = -1;
	free(s->peers);
	s->peers = NULL;
	s->npeers = 0;
	s->shm_obj = -1;
	s->shm_size = 0;
}

/* What connect must return, with the messages there now; *RUNS_OUT: the
 * client would wait for more. */
static int fi_model_connect(struct fi *s, bool *runs_out)
{
	struct portal_ivshmem_event ev;
	struct fi_msg m;
	struct stat st;
	int k;

	*runs_out = false;
	/* 1. version */
	k = fi_pop(s, &m);
	if (k == 0)
		goto out;
	if (k < 0)
		return -ECONNREFUSED;
	if (m.cut || m.nfds)
		return PORTAL_EPROTO;
	if (m.v != PORTAL_IVSHMEM_PROTOCOL_VERSION)
		return PORTAL_EVERSION;
	/* 2. id */
	k = fi_pop(s, &m);
	if (k <= 0)
		goto out_k;
	if (m.cut || m.nfds || m.v < 0 || m.v > PORTAL_IVSHMEM_MAX_PEER_ID)
		return PORTAL_EPROTO;
	s->id = (uint32_t)m.v;
	/* 3. shm */
	k = fi_pop(s, &m);
	if (k <= 0)
		goto out_k;
	if (m.cut || m.nfds != 1 || m.v != -1)
		return PORTAL_EPROTO;
	FZ_CHECK(fstat(s->obj[m.obj].fd, &st) == 0, "fstat: %d", errno);
	if (st.st_size <= 0)
		return PORTAL_EPROTO;
	s->shm_obj = m.obj;
	s->shm_size = (uint64_t)st.st_size;
	/* 4, 5. */
	while (s->own_received < s->vectors) {
		k = fi_pop(s, &m);
		if (k <= 0)
			goto out_k;
		if (m.cut || m.nfds > 1)
			return PORTAL_EPROTO;
		k = fi_model_apply(s, &m, &ev);
		if (k < 0)
			return k;
	}
	return 0;
out_k:
	if (k < 0)
		return PORTAL_EPEERDEAD;
out:
	*runs_out = true;
	return -ETIMEDOUT;
}

/* ---- connect() for the client under test ---- */

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	const struct sockaddr_un *sa = (const struct sockaddr_un *)(const void *)addr;
	struct fi *s = fi_cur;
	long rc;

	rc = syscall(SYS_connect, fd, addr, len);
	if (rc < 0 || !s || addr->sa_family != AF_UNIX || strcmp(sa->sun_path, fi_path) != 0)
		return (int)rc;
	/* The server answers: accept, then write the set-up at once. */
	s->srv = accept4(fi_listen, NULL, NULL, SOCK_CLOEXEC);
	FZ_CHECK(s->srv >= 0, "accept: %d", errno);
	{
		int big = 4 << 20;

		(void)setsockopt(s->srv, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	}
	for (unsigned i = 0; i < s->npre; i++)
		fi_write(s, s->pre[i].b, s->pre[i].len, s->pre[i].nfds, s->pre[i].objs);
	s->npre = 0;
	if (s->eof_pending)
		fi_eof(s);
	else if (s->partlen)
		fi_write(s, (const uint8_t *)"\0\0\0\0\0\0\0", 8 - s->partlen, 0, NULL);
	return 0;
}

/* ---- the client's calls ---- */

static void fi_end_session(struct fi *s)
{
	if (s->c)
		portal_ivshmem_client_close(s->c);
	fi_model_reset_client(s);
	if (s->srv >= 0)
		close(s->srv);
	s->srv = -1;
	s->eof_sent = s->eof_pending = false;
	s->npre = 0;
	s->qhead = s->qtail = 0;
	s->partlen = s->partfds = 0;
	s->partobj = -1;
	s->stream_full = false;
	s->told_id = -1;
}

/* Before a client call: no message left half-written (the client would
 * wait MSG_REST for the rest). */
static void fi_complete(struct fi *s)
{
	static const uint8_t zero[8];

	if (s->srv >= 0 && !s->eof_sent && s->partlen)
		fi_write(s, zero, 8 - s->partlen, 0, NULL);
	if (s->partlen && !s->eof_sent) {
		/* the socket took nothing more: end the stream instead */
		fi_eof(s);
	}
}

static void fi_verify_fd(struct fi *s, int fd, int obj, const char *what)
{
	FZ_CHECK(obj >= 0 && obj < (int)s->nobj, "%s: model object %d", what, obj);
	FZ_CHECK(fi_same_file(fd, s->obj[obj].fd), "%s: fd %d is not the file sent", what, fd);
	FZ_CHECK(fi_cloexec(fd), "%s: fd %d without close-on-exec", what, fd);
}

/* The object the model says eventfd(PEER, VECTOR) gives, or the error. */
static int fi_model_eventfd(struct fi *s, uint32_t peer, uint32_t vector)
{
	struct fi_peer *p;
	int obj;

	if (vector >= s->vectors)
		return -EINVAL;
	if (peer == s->id) {
		obj = s->own[vector];
	} else {
		p = fi_find(s, peer, NULL);
		if (!p)
			return -ENOENT;
		obj = p->obj[vector];
	}
	return obj >= 0 ? obj : -ENOENT;
}

static void fi_check_view(struct fi *s)
{
	uint32_t *ids = NULL;
	size_t n;

	FZ_CHECK(portal_ivshmem_client_id(s->c) == s->id, "id %u, model %u",
		 portal_ivshmem_client_id(s->c), s->id);
	FZ_CHECK(portal_ivshmem_client_vectors(s->c) == s->vectors, "vectors");
	FZ_CHECK(portal_ivshmem_client_shm_size(s->c) == s->shm_size, "shm size %llu, model %llu",
		 (unsigned long long)portal_ivshmem_client_shm_size(s->c),
		 (unsigned long long)s->shm_size);
	fi_verify_fd(s, portal_ivshmem_client_shm_fd(s->c), s->shm_obj, "shm fd");
	FZ_CHECK(fi_cloexec(portal_ivshmem_client_sock_fd(s->c)), "socket without close-on-exec");
	if (s->npeers)
		ids = fz_alloc(s->npeers * sizeof(*ids));
	n = portal_ivshmem_client_peers(s->c, ids, s->npeers);
	FZ_CHECK(n == s->npeers, "%zu peers, model %zu", n, s->npeers);
	for (size_t i = 0; i < n; i++) {
		FZ_CHECK(ids[i] == s->peers[i].id, "peer %zu is %u, model %u", i, ids[i],
			 s->peers[i].id);
		for (unsigned v = 0; v < s->vectors; v++) {
			int want = fi_model_eventfd(s, ids[i], v);
			int fd = portal_ivshmem_client_eventfd(s->c, ids[i], v);

			FZ_CHECK(want < 0 ? fd == want : fd >= 0, "eventfd(%u, %u): %d, model %d",
				 ids[i], v, fd, want);
			if (fd >= 0)
				fi_verify_fd(s, fd, want, "peer eventfd");
		}
	}
	for (unsigned v = 0; v < s->vectors; v++) {
		int want = fi_model_eventfd(s, s->id, v);
		int fd = portal_ivshmem_client_eventfd(s->c, s->id, v);

		FZ_CHECK(want < 0 ? fd == want : fd >= 0, "own eventfd(%u): %d, model %d", v, fd,
			 want);
		if (fd >= 0)
			fi_verify_fd(s, fd, want, "own eventfd");
	}
	free(ids);
}

static void fi_connect(struct fi *s)
{
	bool runs_out;
	int64_t timeout, t0;
	int want, rc;

	if (s->connected)
		return;
	/* connect() writes what the script queued; a dry run of the model on
	 * it says whether the client would wait for more (then a short
	 * timeout, else a long one that only a bug reaches). */
	{
		struct fi *dry = &fi_dry;

		/* A dry run over the chunks connect() will write, in a scratch
		 * model; it only picks the timeout. */
		memset(dry, 0, sizeof(*dry));
		dry->q = fi_dry_q;
		dry->vectors = s->vectors;
		dry->nobj = s->nobj;
		memcpy(dry->obj, s->obj, s->nobj * sizeof(dry->obj[0]));
		dry->partobj = -1;
		for (unsigned v = 0; v < PORTAL_IVSHMEM_MAX_VECTORS; v++)
			dry->own[v] = -1;
		for (unsigned i = 0; i < s->npre; i++)
			fi_model_bytes(dry, s->pre[i].b, s->pre[i].len, s->pre[i].nfds,
				       s->pre[i].objs);
		if (s->eof_pending && dry->partlen) {
			struct fi_msg m = { .obj = -1, .cut = true };

			fi_push(dry, &m);
		}
		dry->eof_sent = s->eof_pending;
		(void)fi_model_connect(dry, &runs_out);
		free(dry->peers);
	}
	timeout = runs_out ? (s->short_timeout_zero ? 0 : FI_SHORT_WAIT_NS) : FS_WAIT_NS;
	fi_cur = s;
	t0 = fi_now();
	rc = portal_ivshmem_client_connect(fi_path, s->vectors, timeout, &s->c);
	fi_cur = NULL;
	if (s->srv < 0) {
		/* connect() was not reached: cannot happen with our path */
		FZ_CHECK(0, "connect: %d without reaching the server", rc);
	}
	/* The real model, on what connect() really wrote. */
	want = fi_model_connect(s, &runs_out);
	FZ_TRACE("connect(%u vectors, %lld ns): %d, model %d\n", s->vectors, (long long)timeout,
		 rc, want);
	FZ_CHECK(rc == want, "connect: %d (%s), model %d (%s), after %lld ms", rc,
		 portal_strerror(rc), want, portal_strerror(want),
		 (long long)((fi_now() - t0) / 1000000));
	if (rc == 0) {
		s->connected = true;
		fi_check_view(s);
		fi_check_fds(s, "connect");
		return;
	}
	FZ_CHECK(s->c == NULL || rc == 0, "connect failed but set *out");
	s->c = NULL;
	fi_model_reset_client(s);
	fi_check_fds(s, "failed connect");
	fi_end_session(s);
}

static void fi_process(struct fi *s)
{
	struct portal_ivshmem_event ev, wev = { 0 };
	struct fi_msg m;
	int rc, want;

	rc = portal_ivshmem_client_process(s->c, &ev, 0);
	want = fi_pop(s, &m);
	if (want == 1) {
		if (m.cut || m.nfds > 1)
			want = PORTAL_EPROTO;
		else if (m.v == -1)
			want = PORTAL_EPROTO;
		else
			want = fi_model_apply(s, &m, &wev);
	}
	FZ_TRACE("process: %d, model %d\n", rc, want);
	FZ_CHECK(rc == want, "process: %d (%s), model %d", rc, portal_strerror(rc), want);
	if (rc == 1)
		FZ_CHECK(ev.kind == wev.kind && ev.peer == wev.peer && ev.vector == wev.vector,
			 "event %d peer %u vector %u, model %d %u %u", ev.kind, ev.peer, ev.vector,
			 wev.kind, wev.peer, wev.vector);
	fi_check_fds(s, "process");
}

static uint32_t fi_peer_sel(struct fi *s)
{
	uint8_t p = fz_u8(s->in);

	switch (p & 3) {
	case FZIC_PEER_OWN: return s->id;
	case FZIC_PEER_KNOWN(0): return s->npeers ? s->peers[(p >> 2) % s->npeers].id : p >> 2;
	case FZIC_PEER_ID(0): return p >> 2;
	default: return fz_u32(s->in);
	}
}

static void fi_op_eventfd(struct fi *s, uint32_t peer, uint32_t vec)
{
	int want = fi_model_eventfd(s, peer, vec);
	int fd = portal_ivshmem_client_eventfd(s->c, peer, vec);

	FZ_TRACE("eventfd(%u, %u): %d, model %d\n", peer, vec, fd, want);
	FZ_CHECK(want < 0 ? fd == want : fd >= 0, "eventfd(%u, %u): %d, model %d", peer, vec, fd,
		 want);
	if (fd >= 0)
		fi_verify_fd(s, fd, want, "eventfd");
}

/* Read and reset every eventfd the harness made; only WHICH may be 1. */
static void fi_check_counters(struct fi *s, int which)
{
	for (unsigned i = 0; i < s->nobj; i++) {
		uint64_t v = 0;
		ssize_t n;

		if (s->obj[i].kind != FZIC_K_EFD)
			continue;
		n = read(s->obj[i].fd, &v, sizeof(v));
		if ((int)i == which)
			FZ_CHECK(n == 8 && v == 1, "rung eventfd: read %zd, value %llu", n,
				 (unsigned long long)v);
		else
			FZ_CHECK(n < 0 && errno == EAGAIN, "eventfd %u rung by mistake", i);
	}
}

static void fi_op_ring(struct fi *s, uint32_t peer, uint32_t vec)
{
	int want = fi_model_eventfd(s, peer, vec);
	int rc = portal_ivshmem_client_ring(s->c, peer, vec);
	uint8_t junk[64];

	FZ_TRACE("ring(%u, %u): %d, object %d\n", peer, vec, rc, want);
	if (want < 0) {
		FZ_CHECK(rc == want, "ring(%u, %u): %d, model %d", peer, vec, rc, want);
		fi_check_counters(s, -1);
		return;
	}
	switch (s->obj[want].kind) {
	case FZIC_K_EFD:
		FZ_CHECK(rc == 0, "ring of an eventfd: %d", rc);
		fi_check_counters(s, want);
		break;
	case FZIC_K_PIPE_R:
		FZ_CHECK(rc == -EBADF, "ring of a pipe's read end: %d", rc);
		break;
	case FZIC_K_PIPE_W:
		FZ_CHECK(rc == 0, "ring of a pipe: %d", rc);
		FZ_CHECK(read(s->obj[want].fd2, junk, sizeof(junk)) == 8, "pipe got not 8 bytes");
		break;
	case FZIC_K_PIPE_FULL:
		/* doorbell.h: ring returns 0 once the counter is full ("readable
		 * already"); a full pipe is one, and takes nothing. Without
		 * O_NONBLOCK on the vector the call above never returns. */
		FZ_CHECK(rc == 0, "ring of a full pipe: %d", rc);
		FZ_CHECK(fi_pipe_bytes(s->obj[want].fd2) == s->obj[want].fill,
			 "ring of a full pipe: %d bytes in it, filled with %d",
			 fi_pipe_bytes(s->obj[want].fd2), s->obj[want].fill);
		break;
	default:
		FZ_CHECK(rc == 0, "ring of kind %d: %d", s->obj[want].kind, rc);
		break;
	}
}

static void fi_op_peers(struct fi *s, size_t max)
{
	uint32_t *ids = max ? fz_alloc(max * sizeof(*ids)) : NULL;
	size_t n = portal_ivshmem_client_peers(s->c, ids, max);

	FZ_TRACE("peers(%zu): %zu, model %zu\n", max, n, s->npeers);
	FZ_CHECK(n == s->npeers, "peers: %zu, model %zu", n, s->npeers);
	for (size_t i = 0; i < n && i < max; i++)
		FZ_CHECK(ids[i] == s->peers[i].id, "peers[%zu] %u, model %u", i, ids[i],
			 s->peers[i].id);
	free(ids);
}

static int64_t fi_value(struct fi *s)
{
	uint8_t v = fz_u8(s->in);
	int64_t d = v >> 3;

	switch (v & 7) {
	case FZIC_V_SMALL: return d;
	case FZIC_V_MINUS1: return -1;
	case FZIC_V_TOLD_ID: return s->told_id >= 0 ? s->told_id : (int64_t)s->id;
	case FZIC_V_NEAR_MAX: return 65519 + d;
	case FZIC_V_NEG: return -1 - d;
	case FZIC_V_MIN: return INT64_MIN + d;
	case FZIC_V_MAX: return INT64_MAX - d;
	default: return (int64_t)fz_u64(s->in);
	}
}

/* Objects for an fd selector; returns how many. */
static unsigned fi_fds(struct fi *s, int *objs)
{
	static const unsigned counts[8] = FZIC_FD_COUNTS;
	uint8_t f = fz_u8(s->in);
	unsigned n = counts[f & 7], k = 0;

	for (unsigned i = 0; i < n; i++) {
		int o = fi_new_obj(s, ((f >> 3) & 7) % FZIC_NKINDS, f >> 6);

		if (o >= 0)
			objs[k++] = o;
	}
	return k;
}

static void fi_op_send(struct fi *s)
{
	int64_t v = fi_value(s);
	int objs[5];
	unsigned nfds = fi_fds(s, objs), split = fz_u8(s->in);
	uint64_t le = htole64((uint64_t)v);
	const uint8_t *b = (const uint8_t *)&le;
	unsigned k = split % 9;

	FZ_TRACE("server: %lld with %u fds, split %u\n", (long long)v, nfds, k);
	if (k == 0 || k == 8) {
		fi_chunk(s, b, 8, nfds, objs);
	} else if (split & 0x10) {
		fi_chunk(s, b, k, 0, NULL);
		fi_chunk(s, b + k, 8 - k, nfds, objs);
	} else {
		fi_chunk(s, b, k, nfds, objs);
		fi_chunk(s, b + k, 8 - k, 0, NULL);
	}
}

static void fi_op_part(struct fi *s)
{
	unsigned len = 1 + fz_u8(s->in) % 7;
	int objs[5];
	unsigned nfds = fi_fds(s, objs);
	uint8_t b[8];

	fz_bytes(s->in, b, len);
	FZ_TRACE("server: %u bytes with %u fds\n", len, nfds);
	fi_chunk(s, b, len, nfds, objs);
}

static void fi_op_setup(struct fi *s)
{
	uint8_t id = fz_u8(s->in);
	int o;

	FZ_TRACE("server: set-up, id %u\n", id);
	s->told_id = id;
	fi_send_value(s, PORTAL_IVSHMEM_PROTOCOL_VERSION, -1);
	fi_send_value(s, id, -1);
	o = fi_new_obj(s, FZIC_K_MEMFD, 2);
	fi_send_value(s, -1, o);
	for (unsigned v = 0; v < s->vectors; v++) {
		o = fi_new_obj(s, FZIC_K_EFD, 0);
		fi_send_value(s, id, o);
	}
}

static void fi_op_join(struct fi *s)
{
	uint32_t peer = fz_u8(s->in) % 16;
	uint8_t nb = fz_u8(s->in);
	unsigned n = nb & 0x80 ? nb % (s->vectors + 2) : s->vectors;

	FZ_TRACE("server: peer %u joins, %u eventfds\n", peer, n);
	for (unsigned v = 0; v < n; v++)
		fi_send_value(s, peer, fi_new_obj(s, FZIC_K_EFD, 0));
}

static void fi_close_objs(struct fi *s)
{
	for (unsigned i = 0; i < s->nobj; i++) {
		close(s->obj[i].fd);
		if (s->obj[i].fd2 >= 0)
			close(s->obj[i].fd2);
	}
	s->nobj = 0;
}

static void fi_run(struct fz *in)
{
	struct fi *s = &fi_state;
	uint8_t cfg = fz_u8(in);

	memset(s, 0, sizeof(*s));
	s->in = in;
	s->pre = fi_pre;
	s->q = fi_q;
	s->vectors = cfg & 4 ? 8 : 1 + (cfg & 3);
	s->short_timeout_zero = cfg & 8;
	s->srv = -1;
	fi_model_reset_client(s);
	fi_end_session(s);
	FZ_TRACE("client mode: %u vectors\n", s->vectors);

	for (unsigned steps = 0; fz_more(in) && steps < 2048; steps++) {
		unsigned op = fz_u8(in) % FZIC_NOPS;

		if (op >= FZIC_CONNECT && op != FZIC_CLOSE) {
			fi_complete(s);
			fi_connect(s);
			if (!s->connected)
				continue;
		}
		switch (op) {
		case FZIC_SEND: fi_op_send(s); break;
		case FZIC_PART: fi_op_part(s); break;
		case FZIC_SETUP: fi_op_setup(s); break;
		case FZIC_JOIN: fi_op_join(s); break;
		case FZIC_LEAVE:
			fi_send_value(s, fz_u8(in) % 16, -1);
			break;
		case FZIC_EOF:
			if (s->srv >= 0)
				fi_eof(s);
			else
				s->eof_pending = true;
			break;
		case FZIC_CONNECT:
			break;
		case FZIC_PROCESS:
			for (unsigned n = 1 + fz_u8(in) % 4; n; n--)
				fi_process(s);
			break;
		case FZIC_EVENTFD: {
			uint32_t peer = fi_peer_sel(s);

			fi_op_eventfd(s, peer, fz_u8(in) % (s->vectors + 2));
			break;
		}
		case FZIC_RING: {
			uint32_t peer = fi_peer_sel(s);

			fi_op_ring(s, peer, fz_u8(in) % (s->vectors + 2));
			break;
		}
		case FZIC_PEERS:
			fi_op_peers(s, fz_u8(in) % (s->npeers + 2));
			break;
		case FZIC_CLOSE:
			FZ_TRACE("close\n");
			fi_end_session(s);
			fi_check_fds(s, "close");
			break;
		}
	}
	if (s->connected)
		fi_check_view(s);
	fi_end_session(s);
	fi_close_objs(s);
}

/* ------------------------------------------------------------------ */
/* Server mode                                                         */
/* ------------------------------------------------------------------ */

enum { FS_NONE, FS_LIVE, FS_DYING, FS_DEAD };

struct fs_peer {
	uint32_t id;
	int state;
	bool honest;
};

struct fs {
	struct fz *in;
	struct ivs_config cfg;
	int lfd, shm, sigr, sigw;
	int run_rc;
	/* every accepted connection, by id (ids are 0, 1, 2, ...) */
	struct fs_peer ids[FS_MAX_IDS];
	unsigned naccepted;
	struct fs_honest {
		portal_ivshmem_client_t *c;
		uint32_t id;
		unsigned nv;
	} hon[FS_MAX_HONEST];
	struct fs_hostile {
		int sock;
		uint32_t id;
	} hos[FS_MAX_HOSTILE];
	bool stopped;           /* ivs_run returned (run_rc) */
};

/*
 * Running the server loop. ivs_run() runs on a stack of its own in the
 * harness's thread, as a coroutine: this file defines poll(), the loop's
 * one blocking call (the way it defines connect() for client mode). On
 * the loop's stack, poll() first looks at the loop's fds without waiting;
 * when nothing is ready, the loop is idle, and instead of blocking it
 * switches back to the harness. The harness runs the loop (fs_step) when
 * it needs the server's answer: before an observation (fs_settle), and
 * whenever it, or the client library on its behalf, would wait for the
 * server: this file defines ppoll() too, which the client library waits
 * in, and there it runs the loop until it is idle before waiting for real.
 * So one thread plays both sides, every input runs the same way every
 * time, and a wait for the server costs two context switches in the
 * process instead of a wake-up of another thread (and a thread per input).
 * The loop's code runs unchanged; it only sees the events of several
 * harness steps at once when no wait came between them, as a busy server
 * does.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FS_ASAN 1
#endif
#endif

#define FS_STACK_SIZE (1u << 20)

static struct fs *fs_cur;       /* the server-mode input running */
static bool fs_in_loop;         /* running on the loop's stack */
static ucontext_t fs_harness_ctx, fs_loop_ctx;
static uint8_t *fs_stack;       /* FS_STACK_SIZE, a guard page below */
static const void *fs_harness_stack; /* for ASan's fiber switches */
static size_t fs_harness_stack_size;
/* swapcontext itself: ASan's interceptor of it would clear the shadow of
 * the loop's whole stack at every switch (the redzones of its live frames
 * too) and warn of false positives; the fiber annotations below are
 * ASan's interface for switching stacks. */
static int (*fs_swapcontext)(ucontext_t *, const ucontext_t *);

int poll(struct pollfd *fds, nfds_t n, int timeout);
int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo, const sigset_t *mask);

/* The system call; writing every revents first has ASan check the
 * caller's array, as its interceptor of ppoll() would. */
static int fi_sys_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo,
			const sigset_t *mask)
{
	struct timespec t, *tp = NULL;

	for (nfds_t i = 0; i < n; i++)
		fds[i].revents = 0;
	if (tmo) {
		t = *tmo; /* the kernel writes back the time left */
		tp = &t;
	}
	return (int)syscall(SYS_ppoll, fds, n, tp, mask, mask ? (size_t)_NSIG / 8 : (size_t)0);
}

static void fs_switch(ucontext_t *from, const ucontext_t *to, const void *bottom, size_t size,
		      bool leaving_for_good)
{
#ifdef FS_ASAN
	void *fake = NULL;

	__sanitizer_start_switch_fiber(leaving_for_good ? NULL : &fake, bottom, size);
#else
	(void)bottom, (void)size, (void)leaving_for_good;
#endif
	FZ_CHECK(fs_swapcontext(from, to) == 0, "swapcontext: %d", errno);
#ifdef FS_ASAN
	/* back on FROM's stack; the loop learns the harness's stack here */
	__sanitizer_finish_switch_fiber(fake, from == &fs_loop_ctx ? &fs_harness_stack : NULL,
					from == &fs_loop_ctx ? &fs_harness_stack_size : NULL);
#endif
}

/* The loop's side: back to the harness until it runs the loop again. */
static void fs_yield(bool for_good)
{
	fs_in_loop = false;
	fs_switch(&fs_loop_ctx, &fs_harness_ctx, fs_harness_stack, fs_harness_stack_size,
		  for_good);
	fs_in_loop = true;
}

static void fs_loop_main(void)
{
	struct fs *S = fs_cur;

#ifdef FS_ASAN
	__sanitizer_finish_switch_fiber(NULL, &fs_harness_stack, &fs_harness_stack_size);
#endif
	fs_in_loop = true;
	S->run_rc = ivs_run(&S->cfg, S->lfd, S->shm, S->sigr);
	S->stopped = true;
	fs_yield(true); /* never resumed: the next input makes a new context */
	abort();
}

/* The harness's side: run the loop until it waits for something (or ivs_run
 * returned). Afterwards a scan that began after every earlier action of
 * the harness found nothing ready: the loop has handled them all, its sends
 * are in the sockets, and a peer that closed is reaped and announced. */
static void fs_step(struct fs *S)
{
	if (S->stopped)
		return;
	fs_switch(&fs_harness_ctx, &fs_loop_ctx, fs_stack, FS_STACK_SIZE, false);
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	const struct timespec zero = { 0, 0 };
	struct timespec t;

	if (!fs_in_loop) {
		if (timeout < 0)
			return fi_sys_ppoll(fds, n, NULL, NULL);
		t.tv_sec = timeout / 1000;
		t.tv_nsec = (long)(timeout % 1000) * 1000000;
		return fi_sys_ppoll(fds, n, &t, NULL);
	}
	/* The loop: ivs_run() always waits with -1 (a finite timeout would
	 * just wait for the harness, as -1 does). */
	for (;;) {
		int k = fi_sys_ppoll(fds, n, &zero, NULL);

		if (k != 0 || timeout == 0)
			return k;
		fs_yield(false);
	}
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo, const sigset_t *mask)
{
	const struct timespec zero = { 0, 0 };
	struct fs *S = fs_cur;

	if (S && !fs_in_loop && !S->stopped && (!tmo || tmo->tv_sec || tmo->tv_nsec)) {
		/* The harness is about to wait, for the server: let it answer. */
		int k = fi_sys_ppoll(fds, n, &zero, mask);

		if (k != 0)
			return k;
		fs_step(S);
	}
	return fi_sys_ppoll(fds, n, tmo, mask);
}

static void fs_signal(struct fs *S, uint32_t signo)
{
	struct signalfd_siginfo si;

	memset(&si, 0, sizeof(si));
	si.ssi_signo = signo;
	FZ_CHECK(write(S->sigw, &si, sizeof(si)) == (ssize_t)sizeof(si), "signal pipe: %d", errno);
}

/* Run the loop until it has handled every earlier action (fs_step); then
 * every peer that closed is gone for good. */
static void fs_settle(struct fs *S)
{
	fs_step(S);
	FZ_CHECK(!S->stopped, "ivs_run returned %d before SIGTERM", S->run_rc);
	for (unsigned i = 0; i < S->naccepted; i++)
		if (S->ids[i].state == FS_DYING)
			S->ids[i].state = FS_DEAD;
}

static unsigned fs_count(const struct fs *S, int state)
{
	unsigned n = 0;

	for (unsigned i = 0; i < S->naccepted; i++)
		n += S->ids[i].state == state;
	return n;
}

/* A new connection's fate. ACCEPTED: it got id ID. */
static void fs_joined(struct fs *S, bool accepted, uint32_t id, bool honest)
{
	unsigned live = fs_count(S, FS_LIVE), dying = fs_count(S, FS_DYING);

	/* fs_settle() before every connect: no close is still unseen */
	FZ_CHECK(dying == 0, "harness: %u peers leaving at a connect", dying);
	if (!accepted) {
		FZ_CHECK(live >= S->cfg.max_peers, "refused with %u live, max_peers %u", live,
			 S->cfg.max_peers);
		return;
	}
	FZ_CHECK(live < S->cfg.max_peers, "accepted with %u live, max_peers %u", live,
		 S->cfg.max_peers);
	FZ_CHECK(id == S->naccepted, "id %u, expected %u (ids are handed out in order)", id,
		 S->naccepted);
	FZ_CHECK(S->naccepted < FS_MAX_IDS, "harness: too many ids");
	S->ids[id].id = id;
	S->ids[id].state = FS_LIVE;
	S->ids[id].honest = honest;
	S->naccepted++;
}

static int fs_state(const struct fs *S, uint32_t id)
{
	return id < S->naccepted ? S->ids[id].state : FS_NONE;
}

/* Read messages of a hostile client until the end of the stream;
 * returns false if it did not come in time. */
static bool fs_drain_to_eof(int sock)
{
	int64_t deadline = fi_now() + FS_WAIT_NS, v;
	int fd, rc;

	for (;;) {
		int64_t left = deadline - fi_now();

		rc = portal_ivshmem_recv_msg(sock, &v, &fd, left > 0 ? left : 0);
		if (fd >= 0 && rc == 0)
			close(fd);
		if (rc == PORTAL_EPEERDEAD || rc == -ECONNRESET)
			return true;
		if (rc == -ETIMEDOUT)
			return false;
		/* PORTAL_EPROTO: dropped in the middle of a message (the server had
		 * sent part of it); read on to the end. */
		FZ_CHECK(rc == 0 || rc == PORTAL_EPROTO, "hostile reading to the end: %d", rc);
	}
}

static void fs_hostile_connect(struct fs *S, bool whole)
{
	struct sockaddr_un sa;
	unsigned slot;
	int64_t v;
	int fd, rc, sock;

	for (slot = 0; slot < FS_MAX_HOSTILE && S->hos[slot].sock >= 0; slot++)
		;
	if (slot == FS_MAX_HOSTILE || S->naccepted == FS_MAX_IDS)
		return;
	fs_settle(S);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FZ_CHECK(sock >= 0, "socket: %d", errno);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, fs_path, strlen(fs_path) + 1);
	FZ_CHECK(connect(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %d", errno);
	rc = portal_ivshmem_recv_msg(sock, &v, &fd, FS_WAIT_NS);
	FZ_TRACE("hostile connects: %d\n", rc);
	if (rc == PORTAL_EPEERDEAD) {
		fs_joined(S, false, 0, false);
		close(sock);
		return;
	}
	FZ_CHECK(rc == 0 && fd < 0 && v == 0, "version message: rc %d fd %d value %lld", rc, fd,
		 (long long)v);
	rc = portal_ivshmem_recv_msg(sock, &v, &fd, FS_WAIT_NS);
	FZ_CHECK(rc == 0 && fd < 0 && v >= 0 && v <= PORTAL_IVSHMEM_MAX_PEER_ID,
		 "id message: rc %d fd %d value %lld", rc, fd, (long long)v);
	fs_joined(S, true, (uint32_t)v, false);
	S->hos[slot].sock = sock;
	S->hos[slot].id = (uint32_t)v;
	if (!whole)
		return;
	/* The rest of the set-up: -1 + shm, every live peer's vectors (in
	 * joining order, which is id order here), then ours. */
	rc = portal_ivshmem_recv_msg(sock, &v, &fd, FS_WAIT_NS);
	FZ_CHECK(rc == 0 && fd >= 0 && v == -1, "shm message: rc %d fd %d value %lld", rc, fd,
		 (long long)v);
	FZ_CHECK(fi_same_file(fd, S->shm), "the shm fd is not the server's memory");
	close(fd);
	{
		uint32_t me = S->hos[slot].id, prev = 0, cur = UINT32_MAX;
		unsigned nv = 0;
		bool any = false;

		for (;;) {
			rc = portal_ivshmem_recv_msg(sock, &v, &fd, FS_WAIT_NS);
			FZ_CHECK(rc == 0 && fd >= 0 && v >= 0 && v <= PORTAL_IVSHMEM_MAX_PEER_ID,
				 "set-up vector: rc %d fd %d value %lld", rc, fd, (long long)v);
			close(fd);
			if (nv == 0) {
				/* the next peer: ascending (joining order), and every
				 * live peer between the last one and it was listed */
				cur = (uint32_t)v;
				FZ_CHECK(!any || cur > prev || cur == me, "set-up order: %u after %u",
					 cur, prev);
				for (uint32_t i = any ? prev + 1 : 0; i < cur && cur != me; i++)
					FZ_CHECK(fs_state(S, i) != FS_LIVE, "set-up skipped live peer %u", i);
				FZ_CHECK(cur == me || fs_state(S, cur) == FS_LIVE,
					 "set-up lists peer %u, which is gone", cur);
			}
			FZ_CHECK((uint32_t)v == cur, "set-up: %lld among peer %u's vectors",
				 (long long)v, cur);
			if (++nv < S->cfg.vectors)
				continue;
			nv = 0;
			if (cur == me)
				break;
			prev = cur;
			any = true;
		}
		for (uint32_t i = any ? prev + 1 : 0; i < S->naccepted; i++)
			FZ_CHECK(i == me || fs_state(S, i) != FS_LIVE, "set-up skipped live peer %u", i);
	}
}

static void fs_check_table(struct fs *S, struct fs_honest *h, bool exact)
{
	uint32_t ids[FS_MAX_IDS];
	size_t n = portal_ivshmem_client_peers(h->c, ids, FS_MAX_IDS);

	FZ_CHECK(n <= FS_MAX_IDS, "%zu peers", n);
	for (size_t i = 0; i < n; i++) {
		int st = fs_state(S, ids[i]);

		FZ_CHECK(ids[i] != h->id, "own id in the peer table");
		FZ_CHECK(st != FS_NONE, "peer %u was never accepted", ids[i]);
		if (exact)
			FZ_CHECK(st == FS_LIVE, "peer %u is gone", ids[i]);
	}
}

/* Does H's table hold exactly the live peers (but H), each with all of
 * H's vectors? */
static bool fs_table_settled(struct fs *S, struct fs_honest *h)
{
	uint32_t ids[FS_MAX_IDS];
	size_t n = portal_ivshmem_client_peers(h->c, ids, FS_MAX_IDS), k = 0;

	for (unsigned i = 0; i < S->naccepted; i++) {
		if (S->ids[i].state != FS_LIVE || i == h->id)
			continue;
		if (k >= n || ids[k] != i)
			return false;
		for (unsigned v = 0; v < h->nv; v++)
			if (portal_ivshmem_client_eventfd(h->c, i, v) < 0)
				return false;
		k++;
	}
	return k == n;
}

/* Process everything there (timeout 0); returns how many events. The
 * caller settles the loop first, so what is there is determined. */
static unsigned fs_process(struct fs *S, struct fs_honest *h)
{
	unsigned events = 0;

	for (;;) {
		struct portal_ivshmem_event ev;
		int rc = portal_ivshmem_client_process(h->c, &ev, 0);

		FZ_CHECK(rc == 0 || rc == 1, "honest client %u: process %d (%s)", h->id, rc,
			 portal_strerror(rc));
		if (rc == 0)
			break;
		events++;
		FZ_TRACE("  client %u: event %d peer %u vector %u\n", h->id, ev.kind, ev.peer,
			 ev.vector);
		FZ_CHECK(ev.kind == PORTAL_IVSHMEM_EV_OWN_VECTOR ? ev.peer == h->id &&
				 ev.vector >= h->nv && ev.vector < S->cfg.vectors
							  : ev.peer != h->id &&
				 fs_state(S, ev.peer) != FS_NONE,
			 "client %u: event %d peer %u vector %u", h->id, ev.kind, ev.peer,
			 ev.vector);
		if (ev.kind == PORTAL_IVSHMEM_EV_PEER_VECTOR)
			FZ_CHECK(ev.vector < S->cfg.vectors, "vector %u", ev.vector);
	}
	fs_check_table(S, h, false);
	return events;
}

static void fs_honest_connect(struct fs *S, unsigned nv)
{
	portal_ivshmem_client_t *c = NULL;
	unsigned slot;
	int rc;

	for (slot = 0; slot < FS_MAX_HONEST && S->hon[slot].c; slot++)
		;
	if (slot == FS_MAX_HONEST || S->naccepted == FS_MAX_IDS)
		return;
	fs_settle(S); /* a full server has seen every close before this */
	rc = portal_ivshmem_client_connect(fs_path, nv, FS_WAIT_NS, &c);
	FZ_TRACE("honest connects (%u vectors): %d\n", nv, rc);
	FZ_CHECK(rc == 0 || rc == -ECONNREFUSED, "honest connect: %d (%s)", rc,
		 portal_strerror(rc));
	fs_joined(S, rc == 0, rc == 0 ? portal_ivshmem_client_id(c) : 0, true);
	if (rc)
		return;
	S->hon[slot].c = c;
	S->hon[slot].id = portal_ivshmem_client_id(c);
	S->hon[slot].nv = nv;
	FZ_CHECK(portal_ivshmem_client_shm_size(c) == 4096, "shm size");
	FZ_CHECK(fi_same_file(portal_ivshmem_client_shm_fd(c), S->shm), "shm fd");
	/* Its set-up listed every live peer and no dead one. */
	for (unsigned i = 0; i < S->naccepted; i++)
		if (S->ids[i].state == FS_LIVE && i != S->hon[slot].id)
			FZ_CHECK(portal_ivshmem_client_eventfd(c, i, 0) >= 0,
				 "set-up of %u missed live peer %u", S->hon[slot].id, i);
	fs_check_table(S, &S->hon[slot], false);
}

static struct fs_hostile *fs_pick_hostile(struct fs *S)
{
	unsigned k = fz_u8(S->in), n = 0;

	for (unsigned i = 0; i < FS_MAX_HOSTILE; i++)
		n += S->hos[i].sock >= 0;
	if (!n)
		return NULL;
	k %= n;
	for (unsigned i = 0; i < FS_MAX_HOSTILE; i++)
		if (S->hos[i].sock >= 0 && k-- == 0)
			return &S->hos[i];
	return NULL;
}

static struct fs_honest *fs_pick_honest(struct fs *S)
{
	unsigned k = fz_u8(S->in), n = 0;

	for (unsigned i = 0; i < FS_MAX_HONEST; i++)
		n += S->hon[i].c != NULL;
	if (!n)
		return NULL;
	k %= n;
	for (unsigned i = 0; i < FS_MAX_HONEST; i++)
		if (S->hon[i].c && k-- == 0)
			return &S->hon[i];
	return NULL;
}

/* A hostile client that misbehaved must be dropped: its stream ends. */
static void fs_must_drop(struct fs *S, struct fs_hostile *x, const char *what)
{
	FZ_CHECK(fs_drain_to_eof(x->sock), "hostile %u %s and was not dropped", x->id, what);
	close(x->sock);
	x->sock = -1;
	S->ids[x->id].state = FS_DEAD;
}

static void fs_send(struct fs *S, struct fs_hostile *x)
{
	unsigned len = 1 + fz_u8(S->in) % 300, nfds = 0;
	uint8_t f = fz_u8(S->in), *b = malloc(len);
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 3)];
	} u;
	struct msghdr m;
	struct iovec iov;
	int fds[3];
	ssize_t k;

	fz_bytes(S->in, b, len);
	memset(&m, 0, sizeof(m));
	memset(&u, 0, sizeof(u));
	iov.iov_base = b;
	iov.iov_len = len;
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	nfds = f % 4;
	if (nfds) {
		struct cmsghdr *c;

		for (unsigned i = 0; i < nfds; i++) {
			fds[i] = f & 0x10 ? eventfd(0, EFD_CLOEXEC) : open("/dev/null", O_RDONLY | O_CLOEXEC);
			FZ_CHECK(fds[i] >= 0, "fd: %d", errno);
		}
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	k = sendmsg(x->sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
	FZ_TRACE("hostile %u sends %u bytes, %u fds: %zd\n", x->id, len, nfds, k);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	free(b);
	if (k > 0) {
		fs_must_drop(S, x, "sent bytes");
	} else {
		/* it was dropped already? then the send fails */
		FZ_CHECK(0, "hostile send: %zd errno %d", k, errno);
	}
}

static void fs_read(struct fs_hostile *x)
{
	int64_t v;
	int fd, rc;

	while ((rc = portal_ivshmem_recv_msg(x->sock, &v, &fd, 0)) == 0) {
		FZ_CHECK(v >= -1 && v <= PORTAL_IVSHMEM_MAX_PEER_ID, "hostile %u got %lld", x->id,
			 (long long)v);
		if (fd >= 0)
			close(fd);
	}
	FZ_CHECK(rc == -ETIMEDOUT, "a live client's stream: %d", rc);
}

static void fs_ring(struct fs *S, struct fs_honest *a, struct fs_honest *b, unsigned v)
{
	uint64_t val = 0;
	int fd = portal_ivshmem_client_eventfd(a->c, b->id, v), rc, own;

	if (a == b || v >= a->nv)
		return;
	FZ_CHECK(fd >= 0 || fd == -ENOENT, "eventfd: %d", fd);
	if (fd < 0)
		return;
	rc = portal_ivshmem_client_ring(a->c, b->id, v);
	FZ_CHECK(rc == 0, "ring: %d", rc);
	if (v >= b->nv)
		return;
	own = portal_ivshmem_client_eventfd(b->c, b->id, v);
	FZ_CHECK(own >= 0, "own eventfd %u: %d", v, own);
	FZ_CHECK(read(own, &val, sizeof(val)) == 8 && val == 1, "%u rang %u on %u: counter %llu",
		 a->id, b->id, v, (unsigned long long)val);
	(void)S;
}

static void fs_run(struct fz *in)
{
	struct fs *S = calloc(1, sizeof(*S));
	uint8_t cfg = fz_u8(in);
	int rc;

	FZ_CHECK(S, "harness: out of memory");
	S->in = in;
	S->cfg.vectors = 1 + cfg % 3;
	S->cfg.max_peers = 1 + (cfg >> 2) % 6;
	S->cfg.verbosity = fz_trace_on > 1 ? IVS_LOG_DEBUG : IVS_LOG_ALWAYS - 1;
	ivs_set_verbosity(S->cfg.verbosity);
	for (unsigned i = 0; i < FS_MAX_HOSTILE; i++)
		S->hos[i].sock = -1;
	FZ_TRACE("server mode: %u vectors, max %u peers\n", S->cfg.vectors, S->cfg.max_peers);

	S->lfd = fs_listen;
	S->shm = fs_shm;
	S->sigr = fs_sigr;
	S->sigw = fs_sigw;

	/* The loop, on its own stack; it runs when the harness waits. */
	fs_cur = S;
	ASAN_UNPOISON_MEMORY_REGION(fs_stack, FS_STACK_SIZE);
	FZ_CHECK(getcontext(&fs_loop_ctx) == 0, "getcontext: %d", errno);
	fs_loop_ctx.uc_stack.ss_sp = fs_stack;
	fs_loop_ctx.uc_stack.ss_size = FS_STACK_SIZE;
	fs_loop_ctx.uc_link = NULL;
	makecontext(&fs_loop_ctx, fs_loop_main, 0);
	fs_step(S); /* to its first wait */

	for (unsigned steps = 0; fz_more(in) && steps < 256; steps++) {
		unsigned op = fz_u8(in) % FZIS_NOPS;
		struct fs_hostile *x;
		struct fs_honest *h, *h2;

		switch (op) {
		case FZIS_HONEST:
			fs_honest_connect(S, 1 + fz_u8(in) % S->cfg.vectors);
			break;
		case FZIS_HOSTILE:
			fs_hostile_connect(S, fz_u8(in) & 1);
			break;
		case FZIS_SEND:
			if ((x = fs_pick_hostile(S)))
				fs_send(S, x);
			break;
		case FZIS_SHUT:
			if ((x = fs_pick_hostile(S))) {
				FZ_TRACE("hostile %u half-closes\n", x->id);
				FZ_CHECK(shutdown(x->sock, SHUT_WR) == 0, "shutdown: %d", errno);
				fs_must_drop(S, x, "half-closed");
			}
			break;
		case FZIS_DROP:
			if ((x = fs_pick_hostile(S))) {
				FZ_TRACE("hostile %u closes\n", x->id);
				close(x->sock);
				x->sock = -1;
				S->ids[x->id].state = FS_DYING;
			}
			break;
		case FZIS_READ:
			if ((x = fs_pick_hostile(S))) {
				fs_settle(S);
				fs_read(x);
			}
			break;
		case FZIS_PROCESS:
			if ((h = fs_pick_honest(S))) {
				fs_settle(S);
				(void)fs_process(S, h);
			}
			break;
		case FZIS_LEAVE:
			if ((h = fs_pick_honest(S))) {
				FZ_TRACE("honest %u closes\n", h->id);
				portal_ivshmem_client_close(h->c);
				h->c = NULL;
				S->ids[h->id].state = FS_DYING;
			}
			break;
		case FZIS_STATUS:
			fs_signal(S, SIGUSR1);
			break;
		case FZIS_RING:
			h = fs_pick_honest(S);
			h2 = fs_pick_honest(S);
			if (h && h2)
				fs_ring(S, h, h2, fz_u8(in) % S->cfg.vectors);
			break;
		}
	}

	/* Settle: those that closed are gone for good; every honest table
	 * converges to exactly the live peers. Converged means: the loop is
	 * idle and no honest client has anything left to read (reading can
	 * let the loop send what a full socket held back: settle again). */
	{
		int64_t deadline = fi_now() + FS_WAIT_NS;
		unsigned events;

		do {
			FZ_CHECK(fi_now() < deadline, "the honest clients never stopped reading");
			fs_settle(S);
			events = 0;
			for (unsigned i = 0; i < FS_MAX_HONEST; i++)
				if (S->hon[i].c)
					events += fs_process(S, &S->hon[i]);
		} while (events);
	}
	for (unsigned i = 0; i < FS_MAX_HONEST; i++)
		if (S->hon[i].c) {
			FZ_CHECK(fs_table_settled(S, &S->hon[i]),
				 "client %u: peer table is not the live peers once all is read",
				 S->hon[i].id);
			fs_check_table(S, &S->hon[i], true);
		}
	for (unsigned i = 0; i < FS_MAX_HONEST; i++)
		for (unsigned j = 0; j < FS_MAX_HONEST; j++)
			if (S->hon[i].c && S->hon[j].c)
				for (unsigned v = 0; v < S->cfg.vectors; v++)
					fs_ring(S, &S->hon[i], &S->hon[j], v);
	for (unsigned i = 0; i < FS_MAX_HOSTILE; i++)
		if (S->hos[i].sock >= 0)
			fs_read(&S->hos[i]);

	/* Stop: the loop returns as soon as it has read the record (it does
	 * not wait for anything first), and every client sees the end. */
	fs_signal(S, SIGTERM);
	fs_step(S);
	FZ_CHECK(S->stopped, "the server did not stop on SIGTERM");
	FZ_CHECK(S->run_rc == 0, "ivs_run: %d", S->run_rc);
	for (unsigned i = 0; i < FS_MAX_HONEST; i++) {
		if (!S->hon[i].c)
			continue;
		for (;;) {
			rc = portal_ivshmem_client_process(S->hon[i].c, NULL, FS_WAIT_NS);
			if (rc != 1)
				break;
		}
		FZ_CHECK(rc == PORTAL_EPEERDEAD, "after shutdown: %d", rc);
		portal_ivshmem_client_close(S->hon[i].c);
	}
	for (unsigned i = 0; i < FS_MAX_HOSTILE; i++) {
		if (S->hos[i].sock < 0)
			continue;
		FZ_CHECK(fs_drain_to_eof(S->hos[i].sock), "hostile %u: no end after shutdown",
			 S->hos[i].id);
		close(S->hos[i].sock);
	}
	/* Nothing left for the next input: every connection was accepted
	 * (each connect waited for its answer), every record read. */
	rc = accept4(S->lfd, NULL, NULL, SOCK_CLOEXEC);
	FZ_CHECK(rc < 0 && errno == EAGAIN, "a connection the server never accepted: %d %d",
		 rc, errno);
	FZ_CHECK(fi_pipe_bytes(S->sigr) == 0, "signal records the server never read");
	fs_cur = NULL;
	free(S);
}

/* ------------------------------------------------------------------ */

static void fi_cleanup(void)
{
	close(fi_listen);
	close(fs_listen);
	unlink(fi_path);
	unlink(fs_path);
	rmdir(fi_dir);
}

static int fi_listen_at(const char *path, int flags)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);

	FZ_CHECK(fd >= 0, "socket: %d", errno);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	FZ_CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %d", errno);
	FZ_CHECK(listen(fd, 64) == 0, "listen: %d", errno);
	return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fz_init();
	/* Timed waits of this thread (connect's FI_SHORT_WAIT_NS) end when
	 * asked, not up to the default 50 us of timer slack later. */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	snprintf(fi_dir, sizeof(fi_dir), "/tmp/portal-fuzz-ivs-XXXXXX");
	FZ_CHECK(mkdtemp(fi_dir), "mkdtemp: %d", errno);
	snprintf(fi_path, sizeof(fi_path), "%s/c", fi_dir);
	snprintf(fs_path, sizeof(fs_path), "%s/s", fi_dir);
	atexit(fi_cleanup);
	fi_proc_fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	FZ_CHECK(fi_proc_fd >= 0, "open /proc/self/fd: %d", errno);
	fi_listen = fi_listen_at(fi_path, 0);
	fs_listen = fi_listen_at(fs_path, SOCK_NONBLOCK);
	fs_shm = memfd_create("fs-shm", MFD_CLOEXEC);
	FZ_CHECK(fs_shm >= 0 && ftruncate(fs_shm, 4096) == 0, "memfd: %d", errno);
	{
		int p[2];

		/* non-blocking writes: a full pipe fails fs_signal()'s check
		 * rather than hanging the harness */
		FZ_CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe: %d", errno);
		FZ_CHECK(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0, "fcntl: %d", errno);
		fs_sigr = p[0];
		fs_sigw = p[1];
	}
	/* server mode's loop stack, with a guard page below it */
	fs_stack = mmap(NULL, FS_STACK_SIZE + 4096, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	FZ_CHECK(fs_stack != MAP_FAILED, "mmap: %d", errno);
	FZ_CHECK(mprotect(fs_stack, 4096, PROT_NONE) == 0, "mprotect: %d", errno);
	fs_stack += 4096;
#ifdef FS_ASAN
	fs_swapcontext = (int (*)(ucontext_t *, const ucontext_t *))dlsym(RTLD_NEXT, "swapcontext");
#endif
	if (!fs_swapcontext)
		fs_swapcontext = swapcontext;
	{
		struct rlimit rl;

		FZ_CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit: %d", errno);
		fi_fd_limit = rl.rlim_cur > INT_MAX ? INT_MAX : (int)rl.rlim_cur;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t mode = fz_u8(&in);
	int after;

	if (mode & FZI_MODE_SERVER) {
		fi_baseline = fi_count_fds(false);
		fs_run(&in);
	} else {
		fi_baseline = fi_count_fds(true);
		fi_scan_m = -1;
		fi_run(&in);
	}
	after = fi_count_fds(false);
	FZ_CHECK(after == fi_baseline, "%d fds open after the input, %d before", after,
		 fi_baseline);
	return 0;
}
