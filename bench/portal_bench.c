/* SPDX-License-Identifier: MIT */
/*
 * portal-bench: Portal against the hardware floor and against its peers,
 * side by side in one run. See docs/benchmarks.md for what each scenario
 * measures and how.
 *
 * Processes: this one drives (side 0, pinned to the first CPU); one child,
 * exec'd from this binary with --child, serves side 1 of every cross-process
 * system on the second CPU; in-process systems get a thread there instead;
 * the multi-producer scenario execs producers with --producer.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"
#include "portal/region.h"

const struct bsys *const bench_systems[] = {
	&bsys_portal_msgring, &bsys_portal_spsc, &bsys_portal_mpsc, &bsys_portal_mpmc,
	&bsys_iceoryx, &bsys_rte_ring, &bsys_rte_ring_mpmc, &bsys_ck_ring, &bsys_urcu_wfcq,
	&bsys_futex, &bsys_eventfd, &bsys_uds, &bsys_pipe, &bsys_nng, &bsys_zmq,
	NULL,
};

#define CTL_OBJ "ctl"

int bench_not_built(char *why, size_t whycap, const char *package)
{
	snprintf(why, whycap, "not built: package %s was not found at configure time", package);
	return -ENOTSUP;
}

static struct inst insts[MAX_INST];
static int ninst;

static const struct bsys *find_sys(const char *name)
{
	for (int i = 0; bench_systems[i]; i++)
		if (!strcmp(bench_systems[i]->name, name))
			return bench_systems[i];
	return NULL;
}

/* "IDX:NAME:SLOT:ARG" (child) or "NAME:SLOT:ARG" (producer). */
static int parse_inst(char *spec, bool with_index, struct inst *out, int *idx)
{
	char *name, *slot, *arg;

	if (with_index) {
		char *colon = strchr(spec, ':');
		if (!colon)
			return -EINVAL;
		*colon = 0;
		*idx = atoi(spec);
		spec = colon + 1;
	}
	name = spec;
	if (!(slot = strchr(name, ':')) || !(arg = strchr(slot + 1, ':')))
		return -EINVAL;
	*slot++ = 0;
	*arg++ = 0;
	memset(out, 0, sizeof(*out));
	out->sys = find_sys(name);
	if (!out->sys)
		return -ENOENT;
	out->env.slot = atoi(slot);
	snprintf(out->env.arg, sizeof(out->env.arg), "%s", arg);
	snprintf(out->label, sizeof(out->label), "%s", name);
	out->ok = true;
	return 0;
}

static struct ctl *map_ctl(const char *uri, int side, portal_region_t **reg)
{
	struct portal_region_opts o = { .side = (uint32_t)side, .ident = "portal-bench peer" };
	struct portal_object_info ci;
	int rc;

	if ((rc = portal_region_attach(uri, &o, reg)) ||
	    (rc = portal_region_lookup(*reg, CTL_OBJ, PORTAL_OBJ_USER, &ci)))
		die("attach the bench region", rc);
	return ci.addr;
}

static int child_main(const char *uri, int cpu, int nspec, char **specs)
{
	portal_region_t *reg;
	struct ctl *k;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (cpu >= 0)
		bench_pin(cpu);
	for (int i = 0; i < nspec; i++) {
		struct inst in;
		int idx = -1;
		if (parse_inst(specs[i], true, &in, &idx) || idx < 0 || idx >= MAX_INST)
			die("bad --inst", -EINVAL);
		insts[idx] = in;
		if (idx >= ninst)
			ninst = idx + 1;
	}
	for (int i = 0; i < ninst; i++)
		insts[i].env.region_uri = uri;
	k = map_ctl(uri, 1, &reg);
	peer_serve(k, insts, ninst, reg);
	portal_region_detach(reg);
	return 0;
}

static int producer_run(char *spec, const char *uri, int id, uint64_t n, int cpu)
{
	portal_region_t *reg;
	struct inst in;
	struct ctl *k;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (cpu >= 0)
		bench_pin(cpu);
	if (parse_inst(spec, false, &in, NULL))
		die("bad --producer", -EINVAL);
	in.env.region_uri = uri;
	/* Producers take region sides 2.. of the bench region. */
	k = map_ctl(uri, 2 + id, &reg);
	producer_main(&in, k, id, n, 32);
	portal_region_detach(reg);
	return 0;
}

/* One callgrind run's body: the instance's env comes from the driver's setup. */
static int loop_run(char *spec, uint64_t n)
{
	struct inst in;

	if (parse_inst(spec, false, &in, NULL))
		die("bad --instr-loop", -EINVAL);
	if (in.sys->caps & BSYS_INPROC) {
		/* In-process systems keep their state in env->priv: set up here. */
		char why[200];
		int rc = in.sys->setup ? in.sys->setup(&in.env, why, sizeof(why)) : 0;
		if (rc)
			die(why, rc);
	}
	return instr_loop(&in, n);
}

/* ---- the driver ---- */

static bool wanted(const char *list, const char *name)
{
	size_t n = strlen(name);

	if (!list)
		return true;
	for (const char *p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
			return true;
	return false;
}

static void *thread_peer(void *arg)
{
	struct inst *in = arg;

	bench_pin(in->env.producers); /* the CPU, passed in a spare field */
	in->env.producers = 0;
	peer_serve(in->peer->ctl, insts, ninst, NULL);
	return NULL;
}

static void make_insts(const struct opts *o, struct peer *proc, const char *uri)
{
	for (int i = 0; bench_systems[i]; i++) {
		const struct bsys *sys = bench_systems[i];
		bool two = (sys->caps & BSYS_BURST) && sys->max_payload >= 1024;

		if (!wanted(o->only, sys->name))
			continue;
		for (int k = 0; k < (two ? 2 : 1) && ninst < MAX_INST; k++) {
			struct inst *in = &insts[ninst++];
			int rc = 0;

			in->sys = sys;
			in->env.slot = k ? 1024 : 64;
			in->env.region_uri = uri;
			snprintf(in->label, sizeof(in->label), "%s", sys->name);
			progress("setting up %s", sys->name);
			if (sys->setup)
				rc = sys->setup(&in->env, in->why, sizeof(in->why));
			in->ok = rc == 0;
			if (!in->ok) {
				if (!in->why[0])
					snprintf(in->why, sizeof(in->why), "%s", portal_strerror(rc));
				report_skip(in->label, "setup", in->why);
				continue;
			}
			in->peer = proc;
			if (sys->caps & BSYS_INPROC) {
				struct peer *p = calloc(1, sizeof(*p));
				p->ctl = aligned_alloc(128, sizeof(struct ctl));
				memset(p->ctl, 0, sizeof(struct ctl));
				p->thread = true;
				in->peer = p;
				in->env.producers = o->cpu_b;
				if (pthread_create(&p->tid, NULL, thread_peer, in))
					die("thread", -errno);
			}
		}
	}
}

static pid_t spawn_child(const char *self, const char *uri, int cpu)
{
	char **argv = calloc((size_t)(2 * ninst + 8), sizeof(char *));
	char cpu_s[16];
	int a = 0;
	pid_t pid;

	snprintf(cpu_s, sizeof(cpu_s), "%d", cpu);
	argv[a++] = (char *)self;
	argv[a++] = "--child";
	argv[a++] = (char *)uri;
	argv[a++] = "--child-cpu";
	argv[a++] = cpu_s;
	for (int i = 0; i < ninst; i++) {
		if (!insts[i].ok || (insts[i].sys->caps & BSYS_INPROC))
			continue;
		char *spec = malloc(BENCH_ARG_MAX + 64);
		snprintf(spec, BENCH_ARG_MAX + 64, "%d:%s:%d:%s", i, insts[i].sys->name,
			 insts[i].env.slot, insts[i].env.arg);
		argv[a++] = "--inst";
		argv[a++] = spec;
	}
	pid = fork();
	if (pid == 0) {
		execv(self, argv);
		perror("exec portal-bench --child");
		_exit(127);
	}
	return pid;
}

static bool scen(const struct opts *o, const char *name)
{
	return wanted(o->scenarios, name);
}

static int drive(const struct opts *o, const char *self)
{
	struct portal_region_opts ro = { .size = 48u << 20, .part_count = 16,
					 .flags = PORTAL_REGION_F_EXCL,
					 .ident = "portal-bench driver" };
	struct portal_object_info ci;
	struct peer proc = { 0 };
	char uri[64], machine[512], topo[256], hw[160];
	portal_region_t *reg;
	struct rusage ru;
	int rc, status;

	if (bench_pin(o->cpu_a))
		fprintf(stderr, "portal-bench: cannot pin to CPU %d; running unpinned\n", o->cpu_a);
	bench_tsc_calibrate();
	scenario_init(insts, 0, o, bench_timer_overhead());
	bench_topology(o->cpu_a, o->cpu_b, topo, sizeof(topo));
	bench_hw_open(hw, sizeof(hw));
	snprintf(machine, sizeof(machine), "%s; %s", topo, hw);
	report_note("%s", hw);
	report_note("software counters: thread CPU time (clock_gettime) and context switches "
		    "(getrusage) of both sides");

	snprintf(uri, sizeof(uri), "shm:portal-bench-%d", (int)getpid());
	portal_region_destroy(uri);
	if ((rc = portal_region_create(uri, &ro, &reg)))
		die("create the bench region", rc);
	if ((rc = portal_region_alloc(reg, CTL_OBJ, PORTAL_OBJ_USER, sizeof(struct ctl), 0, 0, NULL,
				      &ci)))
		die("control object", rc);
	proc.ctl = ci.addr;
	if ((rc = scenario_bulk_setup(reg)))
		die("bulk arena", rc);

	make_insts(o, &proc, uri);
	scenario_init(insts, ninst, o, bench_timer_overhead());
	proc.pid = spawn_child(self, uri, o->cpu_b);
	if (proc.pid < 0)
		die("fork", -errno);

	if (scen(o, "rtt_busy"))
		run_rtt_busy();
	if (scen(o, "rtt_block"))
		run_rtt_block();
	if (scen(o, "stream"))
		run_stream();
	if (scen(o, "load"))
		run_load();
	if (scen(o, "mp"))
		run_mp(self, uri);
	if (scen(o, "bulk"))
		run_bulk(&proc);
	progress("done\n");

	getrusage(RUSAGE_SELF, &ru);
	send_cmd(&proc, CMD_EXIT, 0);
	wait_ack(&proc, true);
	for (int i = 0; i < ninst; i++) {
		struct inst *in = &insts[i];
		if (in->peer && in->peer->thread && in->peer != &proc) {
			send_cmd(in->peer, CMD_EXIT, 0);
			pthread_join(in->peer->tid, NULL);
		}
		if (in->conn0)
			in->sys->close(in->conn0);
	}
	waitpid(proc.pid, &status, 0);
	/* After the peer is gone: each callgrind run opens both sides itself. */
	if (o->callgrind)
		run_instructions(self);
	for (int i = 0; i < ninst; i++)
		if (insts[i].ok && insts[i].sys->teardown)
			insts[i].sys->teardown(&insts[i].env);
	report_write(o, machine);
	portal_region_detach(reg);
	portal_region_destroy(uri);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: portal-bench [--quick] [--reps N] [--cpus A,B] [--json FILE] [--out DIR]\n"
		"                    [--systems NAME,...] [--scenarios rtt_busy,rtt_block,stream,load,mp,bulk]\n"
		"                    [--callgrind]   (also count instructions per message under callgrind)\n"
		"systems:");
	for (int i = 0; bench_systems[i]; i++)
		fprintf(stderr, " %s", bench_systems[i]->name);
	fprintf(stderr, "\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "quick", no_argument, 0, 'q' }, { "reps", required_argument, 0, 'r' },
		{ "cpus", required_argument, 0, 'c' }, { "json", required_argument, 0, 'j' },
		{ "out", required_argument, 0, 'o' }, { "systems", required_argument, 0, 's' },
		{ "scenarios", required_argument, 0, 'S' }, { "help", no_argument, 0, 'h' },
		{ "child", required_argument, 0, 'C' }, { "child-cpu", required_argument, 0, 'P' },
		{ "inst", required_argument, 0, 'I' }, { "producer", required_argument, 0, 'p' },
		{ "region", required_argument, 0, 'R' }, { "id", required_argument, 0, 'i' },
		{ "count", required_argument, 0, 'n' }, { "callgrind", no_argument, 0, 'g' },
		{ "instr-loop", required_argument, 0, 'L' }, { 0, 0, 0, 0 },
	};
	struct opts o = { .reps = 5, .cpu_a = 0, .cpu_b = 1 };
	const char *child_uri = NULL, *region = NULL;
	char *producer = NULL, *loop = NULL, *specs[MAX_INST];
	int child_cpu = -1, nspec = 0, id = 0, c;
	bool reps_set = false;
	uint64_t count = 0;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'q': o.quick = true; break;
		case 'r': o.reps = atoi(optarg), reps_set = true; break;
		case 'c': if (sscanf(optarg, "%d,%d", &o.cpu_a, &o.cpu_b) != 2) usage(); break;
		case 'j': o.json = optarg; break;
		case 'o': o.outdir = optarg; break;
		case 's': o.only = optarg; break;
		case 'S': o.scenarios = optarg; break;
		case 'C': child_uri = optarg; break;
		case 'P': child_cpu = atoi(optarg); break;
		case 'I': if (nspec < MAX_INST) specs[nspec++] = optarg; break;
		case 'p': producer = optarg; break;
		case 'R': region = optarg; break;
		case 'i': id = atoi(optarg); break;
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 'g': o.callgrind = true; break;
		case 'L': loop = optarg; break;
		default: usage();
		}
	}
	if (child_uri)
		return child_main(child_uri, child_cpu, nspec, specs);
	if (producer && region)
		return producer_run(producer, region, id, count, child_cpu);
	if (loop)
		return loop_run(loop, count);
	if (o.reps < 1 || o.reps > MAX_REPS)
		usage();
	if (!o.quick && !reps_set)
		o.reps = 7;
	return drive(&o, argv[0]);
}
