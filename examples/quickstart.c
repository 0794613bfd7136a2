/* SPDX-License-Identifier: MIT */
/*
 * Quickstart: a parent creates a region with one message ring, a child
 * process attaches to it by name and receives what the parent sends.
 *   cc quickstart.c $(pkg-config --cflags --libs portal) -o quickstart
 */
#include <portal/region.h>
#include <portal/ring.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define URI "shm:portal-quickstart"

static int child(void)
{
	portal_region_t *reg;
	portal_msgring_t *rx;
	char buf[256];
	int got = 0;

	/* Attach as side 1 and open the ring by name, as its consumer. */
	if (portal_region_attach(URI, NULL, &reg) || portal_msgring_open(reg, "greetings",
									 PORTAL_ROLE_CONSUMER, &rx))
		return 1;
	while (got < 3) {
		ssize_t n = portal_msgring_recv(rx, buf, sizeof(buf)); /* copies out */
		if (n == -EAGAIN)
			continue; /* busy-poll; see doorbell.h to sleep instead */
		if (n < 0)
			return 1;
		printf("child got: %.*s\n", (int)n, buf);
		got++;
	}
	portal_msgring_detach(rx);
	portal_region_detach(reg);
	fflush(stdout); /* the child leaves with _exit */
	return 0;
}

int main(void)
{
	struct portal_region_opts opts = { .size = 1 << 20 };
	struct portal_msgring_params mp = { .capacity = 1 << 16 };
	portal_region_t *reg;
	portal_msgring_t *tx;
	int status, rc;
	pid_t pid;

	portal_region_destroy(URI); /* a leftover from an earlier run */
	rc = portal_region_create(URI, &opts, &reg);
	if (rc == 0)
		rc = portal_msgring_create(reg, "greetings", &mp, /*owner side*/ 0);
	if (rc == 0)
		rc = portal_msgring_open(reg, "greetings", PORTAL_ROLE_PRODUCER, &tx);
	if (rc) {
		fprintf(stderr, "quickstart: %s\n", portal_strerror(rc));
		return 1;
	}
	pid = fork();
	if (pid == 0)
		_exit(child());
	for (int i = 0; i < 3; i++) {
		void *slot;
		char msg[64];
		int len = snprintf(msg, sizeof(msg), "hello #%d", i);

		/* Zero-copy: reserve room in the ring, write in place, commit. */
		while (portal_msgring_reserve(tx, (size_t)len, &slot) == -EAGAIN)
			;
		memcpy(slot, msg, (size_t)len);
		portal_msgring_commit(tx, (size_t)len);
	}
	waitpid(pid, &status, 0);
	portal_msgring_detach(tx);
	portal_region_detach(reg);
	portal_region_destroy(URI);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
