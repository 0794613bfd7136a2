/* SPDX-License-Identifier: MIT */
/*
 * server.h - the ivshmem server's core: one thread, one poll() loop, no
 * blocking call on a client socket. main.c parses options, sets up the
 * shared memory, the socket, signals and the pid file, then runs it.
 */
#ifndef PORTAL_IVSHMEM_SERVER_H
#define PORTAL_IVSHMEM_SERVER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum ivs_log_level {
	IVS_LOG_ALWAYS = -1, /* asked for (status on SIGUSR1/SIGHUP) */
	IVS_LOG_ERROR = 0, /* -q: errors only */
	IVS_LOG_INFO  = 1, /* default: one line per join, leave, refusal */
	IVS_LOG_DEBUG = 2, /* -v: every message sent */
};

struct ivs_config {
	unsigned vectors;    /* eventfds per peer, 1..PORTAL_IVSHMEM_MAX_VECTORS */
	unsigned max_peers;  /* 1..65536 */
	int verbosity;       /* enum ivs_log_level */
};

struct ivs_server;

/* One line to stderr: time, program, message. */
void ivs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ivs_set_verbosity(int level);

/*
 * Run the server on LISTEN_FD (a listening Unix stream socket) with the
 * shared memory SHM_FD, until SIGNAL_FD (a signalfd for SIGINT, SIGTERM,
 * SIGHUP, SIGUSR1) reports SIGINT or SIGTERM. Closes every client on the
 * way out; the caller closes the fds it passed and removes the socket file.
 * Returns 0 after a signal, or a negative errno if the loop itself failed.
 */
int ivs_run(const struct ivs_config *cfg, int listen_fd, int shm_fd, int signal_fd);

#endif
