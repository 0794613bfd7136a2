/* SPDX-License-Identifier: MIT */
/*
 * qemu_test.c - portal.ivshmem.qemu: QEMU itself as a client of
 * portal-ivshmem-server. No guest kernel: -S keeps the CPU stopped, and the
 * ivshmem-doorbell device does its whole server set-up while QEMU starts
 * (it reads version, id and shm synchronously, then the vectors in its main
 * loop, which runs with the CPU stopped).
 *
 *   qemu-system-x86_64 -accel tcg -nographic -nodefaults -machine q35 -m 128
 *     -chardev socket,path=SOCK,id=ivs
 *     -device ivshmem-doorbell,chardev=ivs,vectors=2 -S
 *
 * Checked: a Portal client already on the server sees QEMU join with both
 * vectors; the server logs the join with QEMU's pid; QEMU stays up (it exits
 * with an error when a set-up is malformed) and sends nothing; it mapped the
 * server's memory (the shm file is in its /proc/PID/maps); it listens on
 * the eventfds it was given (a ring from the Portal client is consumed);
 * killing it (SIGKILL, and SIGTERM for a second QEMU) is announced.
 *
 * Without qemu-system-x86_64 (PATH, or PORTAL_QEMU) the test prints
 * "skipped: ..." and exits 77. TCG always (KVM does not work on these
 * machines; it would not change what is tested: no guest code runs).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ivshmem-server/ivs_test.h"
#include "portal/doorbell.h"

static char qemu_bin[512];
static struct ivs_srv srv;

static bool find_qemu(void)
{
	const char *env = getenv("PORTAL_QEMU"), *path = getenv("PATH");
	char *copy, *dir, *save = NULL;
	bool found = false;

	if (env && *env) {
		snprintf(qemu_bin, sizeof(qemu_bin), "%s", env);
		return access(qemu_bin, X_OK) == 0;
	}
	if (!path)
		path = "/usr/bin:/bin";
	copy = strdup(path);
	if (!copy)
		return false;
	for (dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(qemu_bin, sizeof(qemu_bin), "%s/qemu-system-x86_64", dir);
		if (access(qemu_bin, X_OK) == 0) {
			found = true;
			break;
		}
	}
	free(copy);
	return found;
}

static pid_t start_qemu(const char *log)
{
	char chardev[200];
	pid_t pid;
	int fd;

	snprintf(chardev, sizeof(chardev), "socket,path=%s,id=ivs", srv.sock);
	pid = fork();
	if (pid != 0)
		return pid;
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		dup2(fd, STDIN_FILENO);
	execl(qemu_bin, qemu_bin, "-accel", "tcg", "-nographic", "-nodefaults", "-machine", "q35",
	      "-m", "128", "-chardev", chardev, "-device", "ivshmem-doorbell,chardev=ivs,vectors=2",
	      "-S", (char *)NULL);
	_exit(127);
}

static void print_file(const char *path)
{
	char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return;
	fprintf(stderr, "---- %s ----\n", path);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (write(STDERR_FILENO, buf, (size_t)n) < 0)
			break;
	close(fd);
}

static bool maps_contain(pid_t pid, const char *needle)
{
	char path[64], line[1024];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* Wait for the next server message at C; fail on anything but KIND/PEER. */
static uint32_t expect_event(portal_ivshmem_client_t *c, uint32_t kind, int64_t timeout,
			     const char *qlog, uint32_t *peer)
{
	struct portal_ivshmem_event ev;
	int rc = portal_ivshmem_client_process(c, &ev, timeout);

	if (rc != 1 || ev.kind != kind || (peer && *peer != UINT32_MAX && ev.peer != *peer)) {
		ivs_log_print(&srv);
		print_file(qlog);
		fail_msg("expected event %u, got rc %d kind %u peer %u", kind, rc,
			 rc == 1 ? ev.kind : 0, rc == 1 ? ev.peer : 0);
	}
	if (peer)
		*peer = ev.peer;
	return ev.vector;
}

/* Ring QEMU's VECTOR and check that QEMU consumed the count (it reads the
 * eventfds it received for its own id). */
static void ring_consumed(portal_ivshmem_client_t *c, uint32_t q, uint32_t vector)
{
	int fd = portal_ivshmem_client_eventfd(c, q, vector);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int64_t end = ivs_now() + 10 * IVS_SEC;

	assert_true(fd >= 0);
	assert_int_equal(portal_ivshmem_client_ring(c, q, vector), 0);
	while (poll(&p, 1, 0) == 1 && ivs_now() < end)
		ivs_sleep(IVS_MS);
	if (poll(&p, 1, 0) != 0)
		fail_msg("QEMU did not consume a ring on its vector %u", vector);
}

static void run_one_qemu(portal_ivshmem_client_t *c, uint32_t want_id, int sig)
{
	char qlog[160], line[96];
	uint32_t q = UINT32_MAX;
	pid_t pid;
	int status;

	snprintf(qlog, sizeof(qlog), "%s/qemu-%u.log", srv.dir, (unsigned)want_id);
	pid = start_qemu(qlog);
	assert_true(pid > 0);

	/* QEMU's join, message by message: its id, vectors 0 and 1 */
	assert_int_equal(expect_event(c, PORTAL_IVSHMEM_EV_PEER_VECTOR, 60 * IVS_SEC, qlog, &q), 0);
	assert_int_equal(q, want_id);
	assert_int_equal(expect_event(c, PORTAL_IVSHMEM_EV_PEER_VECTOR, 5 * IVS_SEC, qlog, &q), 1);
	snprintf(line, sizeof(line), "peer %u joined (pid %d, ", (unsigned)q, (int)pid);
	assert_true(ivs_log_wait(&srv, line, 1, 5 * IVS_SEC));

	/* it accepted the set-up and keeps quiet */
	ivs_sleep(IVS_SEC);
	if (waitpid(pid, &status, WNOHANG) != 0) {
		ivs_log_print(&srv);
		print_file(qlog);
		fail_msg("QEMU exited after the set-up");
	}
	assert_int_equal(portal_ivshmem_client_process(c, NULL, 200 * IVS_MS), 0);
	assert_int_equal(ivs_log_count(&srv, "protocol violation"), 0);
	assert_true(maps_contain(pid, srv.shm));
	ring_consumed(c, q, 0);
	ring_consumed(c, q, 1);
	print_message("    QEMU pid %d joined as peer %u (2 vectors), mapped %s, consumed rings "
		      "on both vectors; accel tcg\n", (int)pid, (unsigned)q, srv.shm);

	/* killed: announced */
	kill(pid, sig);
	assert_int_equal(ivs_wait_pid(pid, 20 * IVS_SEC, &status), 0);
	expect_event(c, PORTAL_IVSHMEM_EV_PEER_LEFT, 10 * IVS_SEC, qlog, &q);
	snprintf(line, sizeof(line), "peer %u left: ", (unsigned)q);
	assert_true(ivs_log_wait(&srv, line, 1, 5 * IVS_SEC));
	assert_int_equal(portal_ivshmem_client_eventfd(c, q, 0), -ENOENT);
}

static void test_qemu_client(void **state)
{
	static const char *args[8];
	portal_ivshmem_client_t *c = NULL;

	(void)state;
	assert_int_equal(ivs_srv_init(&srv), 0);
	args[0] = "-n";
	args[1] = "2";
	args[2] = "-m";
	args[3] = srv.shm;
	args[4] = "-l";
	args[5] = "1m";
	args[6] = NULL;
	if (ivs_srv_start(&srv, args) != 0) {
		ivs_log_print(&srv);
		fail_msg("the server did not start");
	}
	assert_int_equal(portal_ivshmem_client_connect(srv.sock, 2, 5 * IVS_SEC, &c), 0);
	assert_int_equal(portal_ivshmem_client_id(c), 0);

	run_one_qemu(c, 1, SIGKILL);
	run_one_qemu(c, 2, SIGTERM);

	portal_ivshmem_client_close(c);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
	ivs_srv_cleanup(&srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qemu_client),
	};

	(void)ivs_bindir();
	if (!find_qemu())
		ivs_skip("qemu-system-x86_64 not found (install qemu-system-x86, or set PORTAL_QEMU)");
	alarm(170);
	return cmocka_run_group_tests_name("portal.ivshmem.qemu", tests, NULL, NULL);
}
