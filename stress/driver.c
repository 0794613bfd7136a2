/* SPDX-License-Identifier: MIT */
/* driver.c - see driver.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stress/driver.h"

uint64_t driver_env_count(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return def;
	if (*end == 'k' || *end == 'K')
		v *= 1000ull;
	else if (*end == 'm' || *end == 'M')
		v *= 1000000ull;
	else if (*end == 'g' || *end == 'G')
		v *= 1000000000ull;
	return v ? (uint64_t)v : def;
}

int driver_setup(struct driver_run *run, const char *tag, uint64_t size, uint32_t npeers,
		 uint64_t count, const char **skip_why)
{
	struct portal_region_opts opts = { 0 };
	struct stat st;
	int rc;

	memset(run, 0, sizeof(*run));
	*skip_why = NULL;
	run->bindir = getenv("PORTAL_TEST_BINDIR");
	if (!run->bindir || !*run->bindir) {
		*skip_why = "PORTAL_TEST_BINDIR is not set (run through ctest)";
		return -ENOENT;
	}
	if (stat("/dev/shm", &st) != 0 || !S_ISDIR(st.st_mode)) {
		*skip_why = "no /dev/shm on this machine";
		return -ENOENT;
	}
	if (npeers == 0 || npeers > STRESS_MAX_PEERS)
		return -EINVAL;
	snprintf(run->uri, sizeof(run->uri), "shm:portal-%s-%ld", tag, (long)getpid());
	portal_region_destroy(run->uri); /* a leftover of a crashed run */
	opts.size = size;
	opts.part_count = npeers + 1;
	opts.ident = "stress driver";
	opts.flags = PORTAL_REGION_F_EXCL;
	rc = portal_region_create(run->uri, &opts, &run->reg);
	if (rc) {
		if (rc == -EACCES || rc == -EPERM || rc == -ENOSYS)
			*skip_why = "cannot create POSIX shared memory here";
		return rc;
	}
	run->ctl = driver_alloc_user(run, STRESS_CTL_NAME, sizeof(struct stress_ctl));
	if (!run->ctl) {
		driver_teardown(run);
		return -ENOSPC;
	}
	run->ctl->npeers = npeers;
	run->ctl->count = count;
	run->ctl->magic = STRESS_CTL_MAGIC;
	run->npeers = npeers;
	return 0;
}

void *driver_alloc_user(struct driver_run *run, const char *name, uint64_t size)
{
	struct portal_object_info info;

	if (portal_region_alloc(run->reg, name, PORTAL_OBJ_USER, size, 0, 0, NULL, &info))
		return NULL;
	return info.addr;
}

int driver_spawn(struct driver_run *run, const char *program, const char *what,
		 const char *const *argv, const int *keep_fds)
{
	const char *args[DRIVER_MAX_ARGS + 2];
	char path[4096];
	struct driver_proc *pr;
	unsigned n = 0;
	pid_t pid, parent;

	if (run->nproc >= STRESS_MAX_PEERS)
		return -ENOSPC;
	snprintf(path, sizeof(path), "%s/%s", run->bindir, program);
	if (access(path, X_OK) != 0)
		return -errno;
	args[n++] = path;
	while (argv && argv[n - 1] && n <= DRIVER_MAX_ARGS) {
		args[n] = argv[n - 1];
		n++;
	}
	args[n] = NULL;
	fflush(NULL);
	parent = getpid();
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Die with the driver (a ctest timeout kills only it). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		for (const int *fd = keep_fds; fd && *fd >= 0; fd++) {
			int fl = fcntl(*fd, F_GETFD);

			if (fl >= 0)
				fcntl(*fd, F_SETFD, fl & ~FD_CLOEXEC);
		}
		execv(path, (char *const *)args);
		fprintf(stderr, "driver: exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	pr = &run->proc[run->nproc++];
	memset(pr, 0, sizeof(*pr));
	pr->pid = pid;
	snprintf(pr->what, sizeof(pr->what), "%s", what);
	if (run->t0 == 0)
		run->t0 = stress_now();
	return 0;
}

static void describe(const struct driver_proc *pr, char *buf, size_t cap)
{
	if (!pr->exited)
		snprintf(buf, cap, "still running (killed)");
	else if (WIFEXITED(pr->status))
		snprintf(buf, cap, "exit %d%s", WEXITSTATUS(pr->status),
			 WEXITSTATUS(pr->status) == STRESS_EXIT_TIMEOUT   ? " (timeout/stall)"
			 : WEXITSTATUS(pr->status) == STRESS_EXIT_ABORTED ? " (aborted: another failed)"
			 : WEXITSTATUS(pr->status) == STRESS_EXIT_SETUP   ? " (setup failed)"
			 : WEXITSTATUS(pr->status) == 127                 ? " (exec failed)"
									  : "");
	else if (WIFSIGNALED(pr->status))
		snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(pr->status),
			 strsignal(WTERMSIG(pr->status)));
	else
		snprintf(buf, cap, "status %#x", pr->status);
}

bool driver_wait(struct driver_run *run, double timeout)
{
	double deadline = run->t0 + timeout, grace = 0;
	unsigned left = run->nproc;
	bool ok = true, killed = false;
	char why[96];

	while (left) {
		bool reaped = false;

		for (unsigned i = 0; i < run->nproc; i++) {
			struct driver_proc *pr = &run->proc[i];
			pid_t r;

			if (pr->exited)
				continue;
			r = waitpid(pr->pid, &pr->status, WNOHANG);
			if (r == 0)
				continue;
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				pr->status = -1;
			pr->exited = true;
			pr->seconds = stress_now() - run->t0;
			left--;
			reaped = true;
			if (!(WIFEXITED(pr->status) && WEXITSTATUS(pr->status) == 0) && grace == 0) {
				/* Tell the others to stop; give them a moment. */
				if (run->ctl)
					atomic_store_explicit(&run->ctl->abort, 1,
							      memory_order_relaxed);
				grace = stress_now() + 10;
				if (grace < deadline)
					deadline = grace;
			}
		}
		if (!left)
			break;
		if (stress_now() > deadline) {
			for (unsigned i = 0; i < run->nproc; i++)
				if (!run->proc[i].exited)
					kill(run->proc[i].pid, SIGKILL);
			killed = true;
			for (unsigned i = 0; i < run->nproc; i++) {
				struct driver_proc *pr = &run->proc[i];
				int st;

				if (!pr->exited && waitpid(pr->pid, &st, 0) == pr->pid)
					pr->seconds = stress_now() - run->t0;
			}
			break;
		}
		if (!reaped)
			stress_sleep_us(5000);
	}
	for (unsigned i = 0; i < run->nproc; i++) {
		struct driver_proc *pr = &run->proc[i];

		describe(pr, why, sizeof(why));
		if (!pr->exited || !WIFEXITED(pr->status) || WEXITSTATUS(pr->status) != 0)
			ok = false;
		printf("driver: %-14s pid %-7ld %-40s after %.2fs\n", pr->what, (long)pr->pid, why,
		       pr->seconds);
	}
	if (killed)
		printf("driver: deadline of %.0fs passed, survivors killed\n", timeout);
	return ok;
}

void driver_teardown(struct driver_run *run)
{
	if (run->reg) {
		portal_region_detach(run->reg);
		run->reg = NULL;
		run->ctl = NULL;
		portal_region_destroy(run->uri);
	}
}
