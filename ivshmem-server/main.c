/* SPDX-License-Identifier: MIT */
/*
 * portal-ivshmem-server - an ivshmem server compatible with QEMU's
 * ivshmem-doorbell device (docs/specs/ivshmem-spec.rst in QEMU), for QEMU
 * guests and Portal host processes (portal_ivshmem_client_connect). See
 * ivshmem-server/README.md.
 *
 * main.c: options, the shared memory, the listening socket, signals, the
 * pid file, daemonizing; server.c runs the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "portal/doorbell.h"
#include "ivshmem-server/server.h"

#define DEFAULT_SOCKET    "/tmp/portal-ivshmem.sock"
#define DEFAULT_SIZE      (UINT64_C(4) << 20)
#define DEFAULT_VECTORS   1
#define DEFAULT_MAX_PEERS 64
#define LISTEN_BACKLOG    64

struct options {
	char socket_path[PATH_MAX];
	const char *shm_path;
	const char *shm_name;
	uint64_t size;            /* 0: not given */
	unsigned vectors;
	unsigned max_peers;
	char pid_file[PATH_MAX];  /* "" = none */
	bool foreground;
	int verbosity;
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: portal-ivshmem-server [options]\n"
"\n"
"An ivshmem server for QEMU's ivshmem-doorbell device and Portal host processes.\n"
"\n"
"  -S, --socket PATH      Unix socket to listen on (default " DEFAULT_SOCKET ")\n"
"  -m, --shm-path PATH    shared memory in this file (created if missing), so a host\n"
"                         process can map it with Portal's file: backend\n"
"  -M, --shm-name NAME    shared memory in POSIX shm object NAME (/dev/shm/NAME)\n"
"                         (default for both: an anonymous, sealed memfd)\n"
"  -l, --size SIZE        shared memory size, a power of two, k/m/g suffixes\n"
"                         (default 4m; an existing file keeps its size if omitted)\n"
"  -n, --vectors N        interrupt vectors (eventfds) per peer, 1..%d (default %d);\n"
"                         QEMU's ivshmem-doorbell vectors= must be at least N\n"
"  -N, --max-peers N      most peers at once, 1..65536 (default %d); more are refused\n"
"  -p, --pid-file PATH    write the pid here once listening; removed on exit\n"
"  -F, --foreground       stay in the foreground (default: daemonize once listening)\n"
"  -v, --verbose          also log every message sent to a peer\n"
"  -q, --quiet            log errors only\n"
"  -h, --help             this text\n"
"\n"
"Logs go to stderr, one line per event. SIGINT/SIGTERM: close every peer,\n"
"remove the socket and the pid file, exit 0. SIGHUP/SIGUSR1: log a status line.\n",
		PORTAL_IVSHMEM_MAX_VECTORS, DEFAULT_VECTORS, DEFAULT_MAX_PEERS);
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!*s || *s == '-')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case '\0':           break;
	case 'k': case 'K':  shift = 10; end++; break;
	case 'm': case 'M':  shift = 20; end++; break;
	case 'g': case 'G':  shift = 30; end++; break;
	default:             return -1;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* PATH made absolute (the daemon changes directory to /). */
static int absolute(const char *path, char *out, size_t len)
{
	char cwd[PATH_MAX];
	int n;

	if (path[0] == '/')
		n = snprintf(out, len, "%s", path);
	else if (getcwd(cwd, sizeof(cwd)))
		n = snprintf(out, len, "%s/%s", cwd, path);
	else
		return -1;
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "socket",     required_argument, NULL, 'S' },
		{ "shm-path",   required_argument, NULL, 'm' },
		{ "shm-name",   required_argument, NULL, 'M' },
		{ "size",       required_argument, NULL, 'l' },
		{ "vectors",    required_argument, NULL, 'n' },
		{ "max-peers",  required_argument, NULL, 'N' },
		{ "pid-file",   required_argument, NULL, 'p' },
		{ "foreground", no_argument,       NULL, 'F' },
		{ "verbose",    no_argument,       NULL, 'v' },
		{ "quiet",      no_argument,       NULL, 'q' },
		{ "help",       no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = DEFAULT_SOCKET, *pid = NULL;
	unsigned long long v;
	int c;

	memset(o, 0, sizeof(*o));
	o->vectors = DEFAULT_VECTORS;
	o->max_peers = DEFAULT_MAX_PEERS;
	o->verbosity = IVS_LOG_INFO;
	while ((c = getopt_long(argc, argv, "S:m:M:l:n:N:p:Fvqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'S': sock = optarg; break;
		case 'm': o->shm_path = optarg; break;
		case 'M': o->shm_name = optarg; break;
		case 'l':
			if (parse_size(optarg, &o->size) < 0 || !pow2(o->size)) {
				fprintf(stderr, "portal-ivshmem-server: --size %s: not a power of two "
					"(QEMU maps the memory as a PCI BAR)\n", optarg);
				return -1;
			}
			break;
		case 'n':
			if (parse_uint(optarg, PORTAL_IVSHMEM_MAX_VECTORS, &v) < 0 || v == 0) {
				fprintf(stderr, "portal-ivshmem-server: --vectors %s: want 1..%d\n",
					optarg, PORTAL_IVSHMEM_MAX_VECTORS);
				return -1;
			}
			o->vectors = (unsigned)v;
			break;
		case 'N':
			if (parse_uint(optarg, PORTAL_IVSHMEM_MAX_PEER_ID + 1, &v) < 0 || v == 0) {
				fprintf(stderr, "portal-ivshmem-server: --max-peers %s: want 1..65536\n",
					optarg);
				return -1;
			}
			o->max_peers = (unsigned)v;
			break;
		case 'p': pid = optarg; break;
		case 'F': o->foreground = true; break;
		case 'v': o->verbosity = IVS_LOG_DEBUG; break;
		case 'q': o->verbosity = IVS_LOG_ERROR; break;
		case 'h': usage(stdout); exit(0);
		default:  usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "portal-ivshmem-server: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (o->shm_path && o->shm_name) {
		fprintf(stderr, "portal-ivshmem-server: --shm-path and --shm-name exclude each other\n");
		return -1;
	}
	if (absolute(sock, o->socket_path, sizeof(o->socket_path)) < 0 ||
	    strlen(o->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "portal-ivshmem-server: socket path too long: %s\n", sock);
		return -1;
	}
	if (pid && absolute(pid, o->pid_file, sizeof(o->pid_file)) < 0) {
		fprintf(stderr, "portal-ivshmem-server: pid file path too long: %s\n", pid);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Shared memory                                                       */
/* ------------------------------------------------------------------ */

static int open_shm(struct options *o, uint64_t *size_out)
{
	struct stat st;
	uint64_t size = o->size ? o->size : DEFAULT_SIZE;
	int fd;

	if (!o->shm_path && !o->shm_name) {
		/* Sealed: no client can shrink it under the others (SIGBUS)
		 * or grow it. */
		fd = memfd_create("portal-ivshmem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0) {
			ivs_log(IVS_LOG_ERROR, "memfd_create: %s", strerror(errno));
			return -1;
		}
		if (ftruncate(fd, (off_t)size) < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
			ivs_log(IVS_LOG_ERROR, "sizing the memfd to %llu bytes: %s",
				(unsigned long long)size, strerror(errno));
			close(fd);
			return -1;
		}
		*size_out = size;
		return fd;
	}

	if (o->shm_path)
		fd = open(o->shm_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	else
		fd = shm_open(o->shm_name, O_RDWR | O_CREAT, 0600);
	if (fd < 0) {
		ivs_log(IVS_LOG_ERROR, "cannot open %s: %s", o->shm_path ? o->shm_path : o->shm_name,
			strerror(errno));
		return -1;
	}
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (fstat(fd, &st) < 0) {
		ivs_log(IVS_LOG_ERROR, "fstat: %s", strerror(errno));
		close(fd);
		return -1;
	}
	if (st.st_size == 0) {
		if (ftruncate(fd, (off_t)size) < 0) {
			ivs_log(IVS_LOG_ERROR, "sizing %s to %llu bytes: %s",
				o->shm_path ? o->shm_path : o->shm_name, (unsigned long long)size,
				strerror(errno));
			close(fd);
			return -1;
		}
	} else if (o->size && (uint64_t)st.st_size != o->size) {
		ivs_log(IVS_LOG_ERROR, "%s is %lld bytes but --size says %llu; give the same size, "
			"or omit --size to keep the file's", o->shm_path ? o->shm_path : o->shm_name,
			(long long)st.st_size, (unsigned long long)o->size);
		close(fd);
		return -1;
	} else {
		size = (uint64_t)st.st_size;
		if (!pow2(size)) {
			ivs_log(IVS_LOG_ERROR, "%s is %llu bytes, not a power of two (QEMU maps it "
				"as a PCI BAR)", o->shm_path ? o->shm_path : o->shm_name,
				(unsigned long long)size);
			close(fd);
			return -1;
		}
	}
	*size_out = size;
	return fd;
}

/* ------------------------------------------------------------------ */
/* Socket, pid file                                                    */
/* ------------------------------------------------------------------ */

static int listen_on(const char *path, ino_t *ino)
{
	struct sockaddr_un sa;
	struct stat st;
	int s, t;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			ivs_log(IVS_LOG_ERROR, "%s exists and is not a socket", path);
			return -1;
		}
		/* Somebody listening, or a stale file left by a crash? */
		t = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (t >= 0 && connect(t, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(t);
			ivs_log(IVS_LOG_ERROR, "a server is already listening on %s", path);
			return -1;
		}
		if (t >= 0)
			close(t);
		ivs_log(IVS_LOG_INFO, "removing stale socket %s", path);
		unlink(path);
	}
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		ivs_log(IVS_LOG_ERROR, "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, LISTEN_BACKLOG) < 0) {
		ivs_log(IVS_LOG_ERROR, "cannot listen on %s: %s", path, strerror(errno));
		close(s);
		return -1;
	}
	if (stat(path, &st) == 0)
		*ino = st.st_ino;
	return s;
}

/* Remove PATH only if it is still the socket we bound (a newer server may
 * have replaced it). */
static void remove_socket(const char *path, ino_t ino)
{
	struct stat st;

	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == ino)
		unlink(path);
}

/* Written to PATH.tmp and renamed, so a reader never sees it half done. */
static int write_pid_file(const char *path)
{
	char tmp[PATH_MAX + 8], buf[32];
	int fd, n;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ivs_log(IVS_LOG_ERROR, "cannot write pid file %s: %s", tmp, strerror(errno));
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, (size_t)n) != n || close(fd) < 0 || rename(tmp, path) < 0) {
		ivs_log(IVS_LOG_ERROR, "cannot write pid file %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static void remove_pid_file(const char *path)
{
	char buf[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		if (atoi(buf) == (int)getpid())
			unlink(path);
	}
}

/* Raise the soft fd limit to the hard one; warn if the peers may not fit. */
static void fd_budget(const struct options *o)
{
	struct rlimit rl;
	unsigned long long need = (unsigned long long)o->max_peers * (o->vectors + 1) + 32;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		ivs_log(IVS_LOG_INFO, "warning: %u peers x %u vectors need about %llu fds, the limit "
			"is %llu: connections beyond it will be refused", o->max_peers, o->vectors,
			need, (unsigned long long)rl.rlim_cur);
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct options o;
	struct ivs_config cfg;
	sigset_t sigs;
	uint64_t size = 0;
	ino_t ino = 0;
	int shm_fd, listen_fd, sig_fd, rc, ready[2] = { -1, -1 };

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	ivs_set_verbosity(o.verbosity);
	signal(SIGPIPE, SIG_IGN);
	fd_budget(&o);

	/* Signals come through a signalfd in the loop: block them first, so
	 * none is lost between here and the first poll(). */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0)
		return 1;
	sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sig_fd < 0) {
		ivs_log(IVS_LOG_ERROR, "signalfd: %s", strerror(errno));
		return 1;
	}

	shm_fd = open_shm(&o, &size);
	if (shm_fd < 0)
		return 1;
	listen_fd = listen_on(o.socket_path, &ino);
	if (listen_fd < 0)
		return 1;

	if (!o.foreground) {
		pid_t pid;
		char byte;

		if (pipe2(ready, O_CLOEXEC) < 0) {
			ivs_log(IVS_LOG_ERROR, "pipe: %s", strerror(errno));
			remove_socket(o.socket_path, ino);
			return 1;
		}
		pid = fork();
		if (pid < 0) {
			ivs_log(IVS_LOG_ERROR, "fork: %s", strerror(errno));
			remove_socket(o.socket_path, ino);
			return 1;
		}
		if (pid > 0) {
			/* Parent: exit once the daemon says it is ready (0), or
			 * with 1 if it died first. */
			close(ready[1]);
			rc = read(ready[0], &byte, 1) == 1 ? 0 : 1;
			_exit(rc);
		}
		close(ready[0]);
		setsid();
		if (chdir("/") < 0) { /* harmless: every path is absolute */ }
		{
			int nul = open("/dev/null", O_RDWR | O_CLOEXEC);

			if (nul >= 0) {
				dup2(nul, STDIN_FILENO);
				dup2(nul, STDOUT_FILENO);
				close(nul);
			}
		}
	}
	ivs_log(IVS_LOG_INFO, "listening on %s: %s%s, %llu bytes, %u vector%s, at most %u peers",
		o.socket_path, o.shm_path ? "file " : o.shm_name ? "shm " : "memfd",
		o.shm_path ? o.shm_path : o.shm_name ? o.shm_name : "",
		(unsigned long long)size, o.vectors, o.vectors == 1 ? "" : "s", o.max_peers);
	/* The pid file last: once it exists, the server listens (and said so). */
	if (o.pid_file[0] && write_pid_file(o.pid_file) < 0) {
		remove_socket(o.socket_path, ino);
		return 1;
	}
	if (ready[1] >= 0) {
		if (write(ready[1], "", 1) < 0) { /* the parent is gone: go on */ }
		close(ready[1]);
	}

	cfg.vectors = o.vectors;
	cfg.max_peers = o.max_peers;
	cfg.verbosity = o.verbosity;
	rc = ivs_run(&cfg, listen_fd, shm_fd, sig_fd);

	close(listen_fd);
	remove_socket(o.socket_path, ino);
	if (o.pid_file[0])
		remove_pid_file(o.pid_file);
	close(shm_fd);
	close(sig_fd);
	ivs_log(IVS_LOG_INFO, "stopped");
	return rc < 0 ? 1 : 0;
}
