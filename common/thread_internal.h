/* SPDX-License-Identifier: MIT */
#ifndef PORTAL_THREAD_INTERNAL_H
#define PORTAL_THREAD_INTERNAL_H

#include <pthread.h>

/*
 * Start a library helper thread (doorbell fd watchers, the region heartbeat):
 * a 128 KiB stack and every signal blocked, so it never runs the
 * application's signal handlers. Returns 0 or a pthread error number.
 */
int portal_helper_thread(pthread_t *tid, void *(*fn)(void *), void *arg);

#endif
