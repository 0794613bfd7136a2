/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <signal.h>

#include "common/thread_internal.h"

int portal_helper_thread(pthread_t *tid, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	sigset_t all, old;
	size_t stack = 128u * 1024u; /* the helpers only sleep, poll and write */
	int rc = pthread_attr_init(&attr);

	if (rc)
		return rc;
	if (stack < (size_t)PTHREAD_STACK_MIN)
		stack = (size_t)PTHREAD_STACK_MIN;
	(void)pthread_attr_setstacksize(&attr, stack);
	/* A helper must never run the application's signal handlers: it
	 * starts with every signal blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(tid, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return rc;
}
