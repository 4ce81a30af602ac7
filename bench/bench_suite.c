// SPDX-License-Identifier: MIT
/*
 * bench_suite.c - the benchmark suite behind bench/run.sh (issue 5).
 *
 * Usage: bench_suite [--quick] [--reps N]
 *
 * Prints one tab-separated line per figure:
 *   ROW <key> <case> <median> <min> <max> <unit> <ratio> <target> <status> <note>
 * and "INFO <text>" lines; bench/run.sh merges them with the callgrind
 * figures into one table.  Every figure is the median over --reps
 * repetitions (min and max are the spread); the repetitions are the
 * outermost loop, so drift spreads over every case.  Every ratio is
 * computed per repetition from two figures measured in that repetition,
 * then summarised the same way.
 *
 * Sections:
 *  1  producer hot path, a drainer process (MRING_DRAIN, busy-polling
 *     mring_read into a no-op sink) pinned to the other CPU
 *  2  peers doing the same work (per step: one wall-clock read, then 16
 *     records of metric id, step, epoch, value, wall time), each with its
 *     own consumer where it has one; ratio = peer ns / mring ns
 *     (built with MRING_BENCH_LTTNG and/or MRING_BENCH_URCU, see
 *     CMakeLists.txt option MRING_BENCH_PEERS)
 *  3  reader side: raw drain rate, observer mring_stats_read, latency
 *     from mring_log to an observer's mring_read
 *  4  memory: default segment size, producer RSS over 10^8 records
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mring.h>

#ifdef MRING_BENCH_LTTNG
#include "bench_tp.h"
#endif
#ifdef MRING_BENCH_URCU
#define _LGPL_SOURCE		/* inline wfcqueue fast paths */
#include <urcu/wfcqueue.h>
#endif

#define BURST		16
#define READ_BATCH	256
#define MAX_REPS	31
#define MAX_LAT		50000
#define SEG_CAPACITY	(UINT64_C(1) << 20)	/* = the default */

/* ---- small helpers -------------------------------------------------------- */

static int cpu_prod = -1, cpu_cons = -1;
static unsigned seg_counter;
static long drain_nap_us;	/* drainer: sleep this long when the ring is empty (0: spin) */

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int64_t wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		fprintf(stderr, "bench_suite: pin cpu %d: %s\n", cpu, strerror(errno));
}

static void relax(void)
{
	if (cpu_cons < 0)
		sched_yield();
	else
		__builtin_ia32_pause();
}

static void choose_cpus(void)
{
	cpu_set_t set;
	int i, n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return;
	for (i = 0; i < CPU_SETSIZE; i++) {
		if (!CPU_ISSET(i, &set))
			continue;
		if (n == 0)
			cpu_prod = i;
		else if (n == 1)
			cpu_cons = i;
		n++;
	}
	if (n < 2)
		cpu_prod = cpu_cons = -1;
}

/* Busy and total jiffies of all CPUs since boot. */
static void cpu_jiffies(unsigned long long *busy, unsigned long long *total)
{
	unsigned long long v[10] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	int i;

	*busy = *total = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
		for (i = 0; i < 8; i++)
			*total += v[i];
		*busy = *total - v[3] - v[4];
	}
	fclose(f);
}

/*
 * Wait (at most 15 s) until the machine is quiet: less than 10% of one
 * CPU busy over 100 ms while we sleep.  Run before each block of
 * measurements, so that e.g. lttng-consumerd still flushing the previous
 * peer's trace does not run on the drainer's CPU during mring's figures.
 */
static double quiesce_s;

static void quiesce(void)
{
	unsigned long long b0, t0, b1, t1;
	long hz = sysconf(_SC_CLK_TCK);
	double start = now_ns();
	int i;

	for (i = 0; i < 150; i++) {
		cpu_jiffies(&b0, &t0);
		usleep(100000);
		cpu_jiffies(&b1, &t1);
		if (t1 > t0 && (double)(b1 - b0) < 0.1 * 0.1 * (double)hz)
			break;
	}
	quiesce_s += (now_ns() - start) / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_suite: %s: %s\n", what, mring_strerror(err));
	exit(1);
}

static void seg_name(char *seg, size_t len, char *path, size_t plen)
{
	const char *dir = getenv("MRING_DIR");

	snprintf(seg, len, "mbench-%d-%u", (int)getpid(), seg_counter++);
	snprintf(path, plen, "%s/%s", dir && *dir ? dir : "/dev/shm", seg);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double quantile(double *v, size_t n, double q)	/* sorts v */
{
	size_t i;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	if (q == 0.5)
		return n & 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* ---- result rows ----------------------------------------------------------- */

struct fig {
	const char *key, *name, *unit, *target;
	double v[MAX_REPS];
	double ratio[MAX_REPS];
	int n, nratio;
	int better_low;		/* target: 1 value <= goal, 0 value >= goal */
	double goal;		/* NaN: no target */
	int goal_on_ratio;
	char note[200];
};

#define MAX_FIGS 48
static struct fig figs[MAX_FIGS];
static int nfigs;

static struct fig *fig(const char *key, const char *name, const char *unit)
{
	int i;

	for (i = 0; i < nfigs; i++)
		if (!strcmp(figs[i].key, key))
			return &figs[i];
	if (nfigs == MAX_FIGS) {
		fprintf(stderr, "bench_suite: too many figures\n");
		exit(1);
	}
	figs[nfigs] = (struct fig){ .key = key, .name = name, .unit = unit,
				    .target = "-", .goal = -1 };
	return &figs[nfigs++];
}

static void add(struct fig *f, double v)
{
	if (f->n < MAX_REPS)
		f->v[f->n++] = v;
}

static void add_ratio(struct fig *f, double r)
{
	if (f->nratio < MAX_REPS)
		f->ratio[f->nratio++] = r;
}

static void target(struct fig *f, const char *text, double goal, int better_low,
		   int on_ratio)
{
	f->target = text;
	f->goal = goal;
	f->better_low = better_low;
	f->goal_on_ratio = on_ratio;
}

static void print_rows(void)
{
	int i;

	for (i = 0; i < nfigs; i++) {
		struct fig *f = &figs[i];
		double tmp[MAX_REPS], med, mn, mx, rmed = 0, rmn = 0, rmx = 0, check;
		char ratio[80] = "-", status[32] = "-";

		if (!f->n)
			continue;
		memcpy(tmp, f->v, sizeof(double) * (size_t)f->n);
		med = quantile(tmp, (size_t)f->n, 0.5);
		mn = tmp[0];
		mx = tmp[f->n - 1];
		if (f->nratio) {
			memcpy(tmp, f->ratio, sizeof(double) * (size_t)f->nratio);
			rmed = quantile(tmp, (size_t)f->nratio, 0.5);
			rmn = tmp[0];
			rmx = tmp[f->nratio - 1];
			snprintf(ratio, sizeof(ratio), "%.1fx [%.1f-%.1f]", rmed, rmn, rmx);
		}
		if (f->goal >= 0) {
			check = f->goal_on_ratio ? rmed : med;
			snprintf(status, sizeof(status), "%s",
				 (f->better_low ? check <= f->goal : check >= f->goal) ?
				 "met" : "MISSED");
		}
		printf("ROW\t%s\t%s\t%.6g\t%.6g\t%.6g\t%s\t%s\t%s\t%s\t%s\n", f->key,
		       f->name, med, mn, mx, f->unit, ratio, f->target, status,
		       f->note[0] ? f->note : "-");
	}
}

/* ---- shared page with the child processes ------------------------------- */

struct shared {
	_Atomic int ready;
	_Atomic int done;
	int err;
	uint64_t events, values, steps, lost_total, seq_gaps;
	double sink;
	uint64_t bytes;
	uint64_t nlat;
	double lat[MAX_LAT];
	long rss_kb[2][3];	/* before/after: VmRSS, RssAnon, RssShmem */
	_Atomic uint64_t updates;	/* flat-out producer: updates so far */
	uint64_t seg_bytes;
};

static struct shared *sh;

static int wait_ready(pid_t pid)
{
	int ret, status;

	while ((ret = atomic_load(&sh->ready)) == 0) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return -ECHILD;
		sched_yield();
	}
	return ret;
}

static void reap(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) == pid && (!WIFEXITED(status) || WEXITSTATUS(status)))
		if (!sh->err)
			sh->err = -ECHILD;
}

/* Drainer / observer child: mring_read into a no-op sink until done. */
static void reader_child(const char *seg, unsigned mode, int latency)
{
	static struct mring_event ev[READ_BATCH];
	struct mring_reader *r;
	uint64_t next = 0;
	double sink = 0;
	int ret, i, done;

	pin(cpu_cons);
	ret = mring_reader_open(seg, mode, &r);
	if (ret < 0) {
		sh->err = ret;
		atomic_store(&sh->ready, ret);
		_exit(1);
	}
	atomic_store(&sh->ready, 1);
	for (;;) {
		done = atomic_load(&sh->done);
		ret = mring_read(r, ev, READ_BATCH);
		if (ret < 0) {
			sh->err = ret;
			break;
		}
		if (ret == 0) {
			if (done)
				break;
			if (drain_nap_us && !latency)
				usleep((useconds_t)drain_nap_us);
			else
				relax();
			continue;
		}
		if (latency) {
			double t = now_ns();

			for (i = 0; i < ret; i++)
				if (ev[i].kind == MRING_EV_VALUE && sh->nlat < MAX_LAT)
					sh->lat[sh->nlat++] = t - ev[i].value;
		}
		for (i = 0; i < ret; i++) {
			/* a CTX pair (two slots, no event) may sit between
			 * records: after a LOST, or every half ring without steps */
			if (ev[i].seq != next && ev[i].seq != next + 2)
				sh->seq_gaps++;
			next = ev[i].seq + (ev[i].kind == MRING_EV_STEP ? 2 : 1);	/* slots */
			sink += ev[i].value;
			switch (ev[i].kind) {
			case MRING_EV_VALUE: sh->values++; break;
			case MRING_EV_STEP: sh->steps++; break;
			case MRING_EV_LOST: sh->lost_total += (uint64_t)ev[i].value; break;
			}
		}
		sh->events += (uint64_t)ret;
	}
	sh->sink = sink;
	mring_reader_close(r);
	_exit(sh->err ? 1 : 0);
}

/* ---- section 1: hot path with a drainer ------------------------------------ */

enum { K_BURST, K_LOG, K_STEP, K_WEIGHTED };

struct mres {
	double ns;
	uint64_t appends;	/* records the producer tried to append */
	uint64_t steps;		/* of them STEP records (two ring slots each) */
	uint64_t drops;		/* mring_log -ENOBUFS */
	uint64_t delivered;	/* VALUE + STEP events drained */
	uint64_t lost;		/* LOST totals drained */
	int ok;
};

static void mring_run(int kind, int on_full, uint64_t n, struct mres *res)
{
	struct mring_config cfg = { .capacity = SEG_CAPACITY, .on_full = on_full,
				    .flags = MRING_CFG_REPLACE };
	struct mring_writer *w;
	char seg[64], path[4200];
	int id[BURST], j, ret;
	uint64_t i, s, v = 0, drops = 0, bad = 0;
	double t0, t1;
	pid_t pid;

	seg_name(seg, sizeof(seg), path, sizeof(path));
	ret = mring_writer_open(seg, &cfg, &w);
	if (ret < 0)
		die("mring_writer_open", ret);
	for (j = 0; j < BURST; j++) {
		char name[16];

		snprintf(name, sizeof(name), "m%02d", j);
		id[j] = mring_metric(w, name, kind == K_WEIGHTED && j == 0 ?
				     MRING_ON_STEP | MRING_ON_EPOCH : MRING_ON_STEP);
		if (id[j] < 0)
			die("mring_metric", id[j]);
	}
	memset(sh, 0, offsetof(struct shared, lat));
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		reader_child(seg, MRING_DRAIN, 0);
	if (pid < 0 || wait_ready(pid) < 0)
		die("drainer", pid < 0 ? -errno : sh->err);

	switch (kind) {
	case K_BURST:
		t0 = now_ns();
		for (s = 0; s < n; s++) {	/* n steps */
			mring_step(w, s);
			for (j = 0; j < BURST; j++) {
				ret = mring_log(w, id[j], (double)v++);
				drops += ret == -ENOBUFS;
				bad += ret < 0 && ret != -ENOBUFS;
			}
		}
		t1 = now_ns();
		res->appends = n * (BURST + 1);
		res->steps = n;
		break;
	case K_LOG:
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			ret = mring_log(w, id[0], (double)i);
			drops += ret == -ENOBUFS;
			bad += ret < 0 && ret != -ENOBUFS;
		}
		t1 = now_ns();
		res->appends = n;
		res->steps = 0;
		break;
	case K_STEP:
		t0 = now_ns();
		for (i = 0; i < n; i++)
			mring_step(w, i);
		t1 = now_ns();
		res->appends = n;
		res->steps = n;
		break;
	default:
		t0 = now_ns();
		for (i = 0; i < n; i++) {
			ret = mring_log_weighted(w, id[0], (double)i, 32.0);
			drops += ret == -ENOBUFS;
			bad += ret < 0 && ret != -ENOBUFS;
		}
		t1 = now_ns();
		res->appends = n;
		res->steps = 0;
		break;
	}
	res->ns = t1 - t0;
	res->drops = drops;
	ret = mring_writer_close(w);
	atomic_store(&sh->done, 1);
	reap(pid);
	unlink(path);
	res->delivered = sh->values + sh->steps;
	res->lost = sh->lost_total;
	/* LOST counts ring slots: a STEP takes two */
	res->ok = ret == 0 && !bad && !sh->err && !sh->seq_gaps &&
		  sh->values + 2 * sh->steps + res->lost == res->appends + res->steps &&
		  (on_full != MRING_FULL_WAIT || res->lost == 0);
	if (!res->ok)
		fprintf(stderr, "bench_suite: check failed: kind %d mode %d: err %d bad %llu "
			"gaps %llu delivered %llu lost %llu appended %llu\n", kind, on_full,
			sh->err, (unsigned long long)bad, (unsigned long long)sh->seq_gaps,
			(unsigned long long)res->delivered, (unsigned long long)res->lost,
			(unsigned long long)res->appends);
}

static int check_fails;
static double drop_pct[4][MAX_REPS];	/* per kind, DROP mode */

/* One repetition of section 1; returns mring's ns per logged value in bursts. */
static double section1(int rep, uint64_t nrec, uint64_t nsustain)
{
	struct mres r;
	double burst;
	struct fig *f;

	mring_run(K_BURST, MRING_FULL_DROP, nrec / (BURST + 1), &r);
	check_fails += !r.ok;
	burst = r.ns / (double)(nrec / (BURST + 1) * BURST);
	add(fig("1.01", "mring_log, bursts (step+16 logs), per value", "ns"), burst);
	add(fig("1.02", "  same, per ring record (17/step)", "ns"),
	    r.ns / (double)r.appends);
	drop_pct[K_BURST][rep] = 100.0 * (double)r.lost / (double)r.appends;

	mring_run(K_LOG, MRING_FULL_DROP, nrec, &r);
	check_fails += !r.ok;
	add(fig("1.03", "mring_log, tight loop, 1 ON_STEP metric", "ns"), r.ns / (double)nrec);
	drop_pct[K_LOG][rep] = 100.0 * (double)r.lost / (double)r.appends;

	mring_run(K_STEP, MRING_FULL_DROP, nrec / 4, &r);
	check_fails += !r.ok;
	add(fig("1.04", "mring_step (vDSO clock_gettime + record)", "ns"),
	    r.ns / (double)(nrec / 4));
	drop_pct[K_STEP][rep] = 100.0 * (double)r.lost / (double)r.appends;

	mring_run(K_WEIGHTED, MRING_FULL_DROP, nrec, &r);
	check_fails += !r.ok;
	add(fig("1.05", "mring_log_weighted, ON_STEP|ON_EPOCH", "ns"), r.ns / (double)nrec);
	drop_pct[K_WEIGHTED][rep] = 100.0 * (double)r.lost / (double)r.appends;

	mring_run(K_BURST, MRING_FULL_WAIT, nsustain / (BURST + 1), &r);
	check_fails += !r.ok;
	f = fig("1.10", "sustained, WAIT (lossless), bursts", "M rec/s");
	add(f, (double)r.delivered / r.ns * 1e3);
	target(f, ">= 100 M rec/s", 100, 0, 0);
	snprintf(f->note, sizeof(f->note), "%s", r.ok && !r.lost ?
		 "drained == appended, 0 lost (every rep)" : "LOSS OR CHECK FAILURE");

	drain_nap_us = 50;
	mring_run(K_BURST, MRING_FULL_WAIT, nsustain / (BURST + 1), &r);
	drain_nap_us = 0;
	check_fails += !r.ok;
	f = fig("1.10n", "  same, drainer naps 50 us when empty", "M rec/s");
	add(f, (double)r.delivered / r.ns * 1e3);
	target(f, ">= 100 M rec/s", 100, 0, 0);
	snprintf(f->note, sizeof(f->note), "%s", r.ok && !r.lost ?
		 "drained == appended, 0 lost" : "LOSS OR CHECK FAILURE");

	mring_run(K_BURST, MRING_FULL_DROP, nsustain / (BURST + 1), &r);
	check_fails += !r.ok;
	f = fig("1.11", "sustained, DROP, bursts (attempted)", "M rec/s");
	add(f, (double)r.appends / r.ns * 1e3);
	add(fig("1.12", "  DROP: records dropped (of attempted)", "%"),
	    100.0 * (double)r.lost / (double)r.appends);
	add(fig("1.13", "  DROP: delivered records/s", "M rec/s"),
	    (double)r.delivered / r.ns * 1e3);
	return burst;
}

/* ---- section 2: peers ------------------------------------------------------ */

struct prec {			/* the same fields as an mring record */
	int32_t metric;
	uint32_t epoch;
	uint64_t step;
	double value;
	int64_t wall_ns;
};

static void peer_row(const char *key, const char *name, double ns, double mring_ns,
		     const char *note)
{
	struct fig *f = fig(key, name, "ns");

	add(f, ns);
	add_ratio(f, ns / mring_ns);
	if (note && !f->note[0])
		snprintf(f->note, sizeof(f->note), "%s", note);
}

#ifdef MRING_BENCH_LTTNG
static int lttng_active;

static double peer_lttng(uint64_t steps)
{
	uint64_t s, v = 0;
	int64_t wall;
	double t0, t1;
	int j;

	t0 = now_ns();
	for (s = 0; s < steps; s++) {
		wall = wall_now();
		for (j = 0; j < BURST; j++)
			tracepoint(mring_bench, record, j, s, 0, (double)v++, wall);
	}
	t1 = now_ns();
	return (t1 - t0) / (double)(steps * BURST);
}
#endif

static double peer_fprintf(uint64_t steps)
{
	const char *dir = getenv("TMPDIR");
	char path[4200];
	uint64_t s, v = 0;
	int64_t wall;
	double t0, t1;
	FILE *f;
	int j;

	snprintf(path, sizeof(path), "%s/mring-bench-%d.txt", dir && *dir ? dir : "/tmp",
		 (int)getpid());
	f = fopen(path, "w");
	if (!f) {
		perror("bench_suite: fopen");
		exit(1);
	}
	t0 = now_ns();
	for (s = 0; s < steps; s++) {
		wall = wall_now();
		for (j = 0; j < BURST; j++)
			fprintf(f, "%d %" PRIu64 " %u %.17g %" PRId64 "\n", j, s, 0u,
				(double)v++, wall);
	}
	fclose(f);
	t1 = now_ns();
	unlink(path);
	return (t1 - t0) / (double)(steps * BURST);
}

static double peer_pipe(uint64_t steps)
{
	struct prec rec;
	uint64_t s, v = 0;
	double t0, t1;
	int fd[2], j;
	pid_t pid;

	if (pipe(fd) < 0) {
		perror("bench_suite: pipe");
		exit(1);
	}
	memset(sh, 0, offsetof(struct shared, lat));
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		static char buf[65536];
		ssize_t n;

		pin(cpu_cons);
		close(fd[1]);
		while ((n = read(fd[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
			if (n > 0)
				sh->bytes += (uint64_t)n;
		_exit(0);
	}
	close(fd[0]);
	t0 = now_ns();
	for (s = 0; s < steps; s++) {
		rec.wall_ns = wall_now();
		rec.step = s;
		rec.epoch = 0;
		for (j = 0; j < BURST; j++) {
			rec.metric = j;
			rec.value = (double)v++;
			if (write(fd[1], &rec, sizeof(rec)) != (ssize_t)sizeof(rec)) {
				perror("bench_suite: write");
				exit(1);
			}
		}
	}
	t1 = now_ns();
	close(fd[1]);
	reap(pid);
	if (sh->bytes != steps * BURST * sizeof(rec)) {
		fprintf(stderr, "bench_suite: pipe reader got %llu bytes\n",
			(unsigned long long)sh->bytes);
		check_fails++;
	}
	return (t1 - t0) / (double)(steps * BURST);
}

/* Queue nodes, preallocated and prefaulted: the queues' cost, not malloc's. */
struct qnode {
#ifdef MRING_BENCH_URCU
	struct cds_wfcq_node wnode;
#endif
	struct qnode *next;
	struct prec r;
};

static struct qnode *pool;
static uint64_t pool_n;
static _Atomic uint64_t q_consumed;
static double q_sink;

static pthread_mutex_t mq_lock = PTHREAD_MUTEX_INITIALIZER;
static struct qnode *mq_head, *mq_tail;

static void *mutex_consumer(void *arg)
{
	uint64_t n = 0, want = *(uint64_t *)arg;
	double sink = 0;
	struct qnode *l;

	pin(cpu_cons);
	while (n < want) {
		pthread_mutex_lock(&mq_lock);
		l = mq_head;
		mq_head = mq_tail = NULL;
		pthread_mutex_unlock(&mq_lock);
		if (!l) {
			relax();
			continue;
		}
		for (; l; l = l->next, n++)
			sink += l->r.value;
	}
	q_sink = sink;
	atomic_store(&q_consumed, n);
	return NULL;
}

static double peer_mutexq(uint64_t steps)
{
	uint64_t s, v = 0, want = steps * BURST;
	struct qnode *q;
	pthread_t th;
	double t0, t1;
	int64_t wall;
	int j;

	mq_head = mq_tail = NULL;
	atomic_store(&q_consumed, 0);
	pthread_create(&th, NULL, mutex_consumer, &want);
	t0 = now_ns();
	for (s = 0; s < steps; s++) {
		wall = wall_now();
		for (j = 0; j < BURST; j++) {
			q = &pool[v];
			q->r = (struct prec){ j, 0, s, (double)v, wall };
			q->next = NULL;
			v++;
			pthread_mutex_lock(&mq_lock);
			if (mq_tail)
				mq_tail->next = q;
			else
				mq_head = q;
			mq_tail = q;
			pthread_mutex_unlock(&mq_lock);
		}
	}
	t1 = now_ns();
	pthread_join(th, NULL);
	if (atomic_load(&q_consumed) != want)
		check_fails++;
	return (t1 - t0) / (double)want;
}

#ifdef MRING_BENCH_URCU
static struct cds_wfcq_head wq_head;
static struct cds_wfcq_tail wq_tail;

static void *wfcq_consumer(void *arg)
{
	uint64_t n = 0, want = *(uint64_t *)arg;
	struct cds_wfcq_node *x;
	double sink = 0;

	pin(cpu_cons);
	while (n < want) {
		x = cds_wfcq_dequeue_blocking(&wq_head, &wq_tail);
		if (!x) {
			relax();
			continue;
		}
		sink += caa_container_of(x, struct qnode, wnode)->r.value;
		n++;
	}
	q_sink = sink;
	atomic_store(&q_consumed, n);
	return NULL;
}

static double peer_wfcq(uint64_t steps)
{
	uint64_t s, v = 0, want = steps * BURST;
	struct qnode *q;
	pthread_t th;
	double t0, t1;
	int64_t wall;
	int j;

	cds_wfcq_init(&wq_head, &wq_tail);
	atomic_store(&q_consumed, 0);
	pthread_create(&th, NULL, wfcq_consumer, &want);
	t0 = now_ns();
	for (s = 0; s < steps; s++) {
		wall = wall_now();
		for (j = 0; j < BURST; j++) {
			q = &pool[v];
			q->r = (struct prec){ j, 0, s, (double)v, wall };
			v++;
			cds_wfcq_node_init(&q->wnode);
			cds_wfcq_enqueue(&wq_head, &wq_tail, &q->wnode);
		}
	}
	t1 = now_ns();
	pthread_join(th, NULL);
	if (atomic_load(&q_consumed) != want)
		check_fails++;
	return (t1 - t0) / (double)want;
}
#endif

/*
 * The floor: a minimal single-producer ring in shared memory, with a
 * consumer process busy-polling on the other CPU, as a hand-written
 * logger would be.  Records are struct prec (32 bytes: the fields of an
 * mring record, step and wall time included); head and tail each have
 * their own 128 bytes; the producer publishes head (release) after every
 * record, or once per burst of BURST (@per_burst: the consumer then sees
 * a step's records together, as a batching logger would publish them),
 * and reloads tail only when its cached copy says full; the
 * consumer reads everything below the head it loaded, then publishes
 * tail.  No crash safety, no loss accounting, no statistics, no
 * observers: what mring costs beyond this is what those cost.
 */
#define SPSC_CAP	(UINT64_C(1) << 16)

struct spsc {
	_Atomic uint64_t head __attribute__((aligned(128)));
	_Atomic uint64_t tail __attribute__((aligned(128)));
	struct prec ring[SPSC_CAP] __attribute__((aligned(128)));
};

static void spsc_consumer(struct spsc *q, uint64_t n)
{
	uint64_t pos = 0, head, count = 0;
	double sum = 0;

	pin(cpu_cons);
	atomic_store(&sh->ready, 1);
	while (pos < n) {
		/* acquire: pairs with the producer's release store of head */
		head = atomic_load_explicit(&q->head, memory_order_acquire);
		if (head == pos) {
			relax();
			continue;
		}
		for (; pos < head; pos++) {
			sum += q->ring[pos & (SPSC_CAP - 1)].value;
			count++;
		}
		/* release: the slots below pos were read; pairs with the
		 * producer's acquire load of tail */
		atomic_store_explicit(&q->tail, pos, memory_order_release);
	}
	sh->values = count;
	sh->sink = sum;
	_exit(0);
}

static double peer_spsc(uint64_t steps, int per_burst)
{
	uint64_t n = steps * BURST, head = 0, tail = 0, s, v = 0;
	struct spsc *q = mmap(NULL, sizeof(*q), PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	double t0, t1;
	pid_t pid;
	int j;

	if (q == MAP_FAILED) {
		perror("bench_suite: mmap");
		exit(1);
	}
	memset(sh, 0, offsetof(struct shared, lat));
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		spsc_consumer(q, n);
	if (pid < 0 || wait_ready(pid) < 0)
		die("spsc consumer", pid < 0 ? -errno : -ECHILD);
	t0 = now_ns();
	for (s = 0; s < steps; s++) {
		int64_t wall = wall_now();

		for (j = 0; j < BURST; j++) {
			struct prec *r;

			while (head - tail >= SPSC_CAP) {
				/* acquire: pairs with the consumer's release store of tail */
				tail = atomic_load_explicit(&q->tail, memory_order_acquire);
				if (head - tail >= SPSC_CAP)
					relax();
			}
			r = &q->ring[head & (SPSC_CAP - 1)];
			r->metric = j;
			r->epoch = 0;
			r->step = s;
			r->value = (double)v++;
			r->wall_ns = wall;
			head++;
			/* release: the records are complete; pairs with the
			 * consumer's acquire load of head */
			if (!per_burst)
				atomic_store_explicit(&q->head, head, memory_order_release);
		}
		if (per_burst)
			atomic_store_explicit(&q->head, head, memory_order_release);
	}
	t1 = now_ns();
	reap(pid);
	if (sh->values != n || sh->sink != (double)n * (double)(n - 1) / 2) {
		fprintf(stderr, "bench_suite: spsc consumer got %llu records\n",
			(unsigned long long)sh->values);
		check_fails++;
	}
	munmap(q, sizeof(*q));
	return (t1 - t0) / (double)n;
}

static void section2(double mring_ns, double mring_ns_nap, uint64_t nval)
{
	uint64_t steps = nval / BURST;

#ifdef MRING_BENCH_LTTNG
	double lt = peer_lttng(steps);

	peer_row("2.01", "LTTng-UST tracepoint, active session", lt,
		 mring_ns, lttng_active ? "event enabled in a session (see lttng line below)" :
		 "EVENT NOT ENABLED: no session, figure is the disabled tracepoint");
	target(fig("2.01", NULL, NULL), ">= 30x (ratio)", 30, 0, 1);
	peer_row("2.01n", "  same tracepoint, ratio vs napping-drainer mring", lt,
		 mring_ns_nap, "same LTTng figures; ratio to row 2.00n");
	target(fig("2.01n", NULL, NULL), ">= 30x (ratio)", 30, 0, 1);
#else
	(void)mring_ns_nap;
#endif
	peer_row("2.06", "minimal SPSC shm ring, busy-polling consumer", peer_spsc(steps, 0),
		 mring_ns, "32-byte records, head published per record");
	peer_row("2.06b", "  same, head published once per burst of 16", peer_spsc(steps, 1),
		 mring_ns, "the floor; goal: mring (2.00) within 1.5x of it");
	target(fig("2.06b", NULL, NULL), ">= 0.67x (mring <= 1.5x it)", 1.0 / 1.5, 0, 1);
	peer_row("2.02", "fprintf text line, buffered file", peer_fprintf(steps / 2),
		 mring_ns, "%.17g value; file in $TMPDIR or /tmp; fclose timed");
	peer_row("2.03", "write(2) 1 record/call, pipe to a process", peer_pipe(steps / 8),
		 mring_ns, "32-byte record; reader process reads 64 KiB at a time");
#ifdef MRING_BENCH_URCU
	peer_row("2.04", "liburcu cds_wfcq + consumer thread", peer_wfcq(steps),
		 mring_ns, "preallocated nodes; consumer: cds_wfcq_dequeue_blocking");
#endif
	peer_row("2.05", "mutex-protected queue + consumer thread", peer_mutexq(steps),
		 mring_ns, "preallocated nodes; consumer takes the whole list per lock");
}

/* ---- section 3: reader side ------------------------------------------------ */

static void drain_rate(uint64_t cap)
{
	struct mring_config cfg = { .capacity = cap, .flags = MRING_CFG_REPLACE };
	static struct mring_event ev[READ_BATCH];
	struct mring_writer *w;
	struct mring_reader *r;
	char seg[64], path[4200];
	/* no steps: the producer adds a CTX pair (2 slots) every half ring */
	uint64_t i, n = cap - 8, got = 0;
	double t0, t1, sink = 0;
	int id, ret, k;

	seg_name(seg, sizeof(seg), path, sizeof(path));
	if ((ret = mring_writer_open(seg, &cfg, &w)) < 0)
		die("mring_writer_open", ret);
	id = mring_metric(w, "loss", MRING_ON_STEP);
	for (i = 0; i < n; i++)
		if ((ret = mring_log(w, id, (double)i)) < 0)
			die("fill", ret);
	mring_writer_close(w);
	if ((ret = mring_reader_open(seg, MRING_DRAIN, &r)) < 0)
		die("mring_reader_open", ret);
	t0 = now_ns();
	while ((ret = mring_read(r, ev, READ_BATCH)) > 0) {
		for (k = 0; k < ret; k++)
			sink += ev[k].value;
		got += (uint64_t)ret;
	}
	t1 = now_ns();
	mring_reader_close(r);
	unlink(path);
	if (ret < 0 || got != n) {
		fprintf(stderr, "bench_suite: drain got %llu of %llu (%d)\n",
			(unsigned long long)got, (unsigned long long)n, ret);
		check_fails++;
	}
	q_sink += sink;
	add(fig("3.01", "drain: mring_read -> no-op sink", "M ev/s"), (double)got / (t1 - t0) * 1e3);
}

static void stats_read_cost(uint64_t n)
{
	struct mring_writer *w;
	struct mring_reader *r;
	struct mring_stats st = { 0 };
	char seg[64], path[4200];
	uint64_t i, again = 0;
	double t0, t1, sink = 0;
	int id, ret;

	seg_name(seg, sizeof(seg), path, sizeof(path));
	if ((ret = mring_writer_open(seg, NULL, &w)) < 0)
		die("mring_writer_open", ret);
	id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	for (i = 0; i < 1000; i++)
		mring_log(w, id, (double)i);
	if ((ret = mring_reader_open(seg, MRING_OBSERVE, &r)) < 0)
		die("mring_reader_open", ret);
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		ret = mring_stats_read(r, id, &st);
		again += ret == -EAGAIN;
		sink += st.value;
	}
	t1 = now_ns();
	q_sink += sink;
	mring_reader_close(r);
	mring_writer_close(w);
	unlink(path);
	add(fig("3.02", "observer mring_stats_read (producer idle)", "ns"), (t1 - t0) / (double)n);
	if (again)
		check_fails++;
}

/* A producer updating one metric flat out until told to stop. */
static void flat_out_child(const char *seg, pid_t parent)
{
	struct mring_writer *w;
	uint64_t i;
	int id, ret;

	/* dies with the suite, even killed or interrupted: it never stops
	 * on its own */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	pin(cpu_cons);		/* the reader is the parent, on cpu_prod */
	ret = mring_writer_open(seg, NULL, &w);
	if (ret < 0 || (id = mring_metric(w, "loss", MRING_ON_EPOCH)) < 0) {
		sh->err = ret < 0 ? ret : -EINVAL;
		atomic_store(&sh->ready, -1);
		_exit(1);
	}
	atomic_store(&sh->ready, 1);
	for (i = 1; !atomic_load_explicit(&sh->done, memory_order_relaxed); i++) {
		mring_log_weighted(w, id, 1.0, 2.0);
		if (!(i & 1023))
			atomic_store_explicit(&sh->updates, i, memory_order_relaxed);
	}
	_exit(mring_writer_close(w) != 0);
}

/* Producer updates per ns over @ns of nothing but waiting. */
static double producer_rate(double ns)
{
	uint64_t u0 = atomic_load(&sh->updates);
	double t0 = now_ns();

	while (now_ns() - t0 < ns)
		relax();
	return (double)(atomic_load(&sh->updates) - u0) / (now_ns() - t0);
}

/* Stop the flat-out producer and remove its segment. */
static void flat_out_stop(pid_t pid, const char *path)
{
	atomic_store(&sh->done, 1);
	reap(pid);
	unlink(path);
}

/*
 * An observer reading a metric the producer updates flat out: what a read
 * costs, how many are answered (the rest are -EAGAIN after 10,000
 * attempts), and how much the reads slow the producer.  At most @n reads
 * and about 2 s: where nearly every attempt collides, a read takes 10,000.
 */
static void stats_read_contended(uint64_t n)
{
	struct mring_reader *r;
	struct mring_stats st = { 0 };
	char seg[64], path[4200];
	uint64_t i, answered = 0, u0;
	double t0, t1, alone, during, sink = 0;
	int ret;
	pid_t pid, self = getpid();

	seg_name(seg, sizeof(seg), path, sizeof(path));
	memset(sh, 0, offsetof(struct shared, lat));
	atomic_store(&sh->updates, 0);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		flat_out_child(seg, self);
	if (pid < 0 || wait_ready(pid) < 0)
		die("flat-out producer", pid < 0 ? -errno : sh->err);
	if ((ret = mring_reader_open(seg, MRING_OBSERVE, &r)) < 0) {
		flat_out_stop(pid, path);
		die("mring_reader_open", ret);
	}
	alone = producer_rate(50e6);
	u0 = atomic_load(&sh->updates);
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		ret = mring_stats_read(r, 0, &st);
		if (ret == 0) {
			answered++;
			sink += st.value;
		} else if (ret != -EAGAIN) {
			check_fails++;
		}
		if (!(i & 1023) && now_ns() - t0 > 2e9) {
			i++;
			break;
		}
	}
	t1 = now_ns();
	during = (double)(atomic_load(&sh->updates) - u0) / (t1 - t0);
	mring_reader_close(r);
	flat_out_stop(pid, path);
	if (sh->err)
		check_fails++;
	q_sink += sink;
	add(fig("3.02b", "observer mring_stats_read, producer updating flat out", "ns"),
	    (t1 - t0) / (double)i);
	add(fig("3.02c", "  reads answered (not -EAGAIN)", "%"),
	    100.0 * (double)answered / (double)i);
	add(fig("3.02d", "  producer updates lost per read", "updates"),
	    (alone - during) * (t1 - t0) / (double)i);
}

static void latency(uint64_t n)
{
	struct mring_writer *w;
	char seg[64], path[4200];
	uint64_t i;
	double t, p50, p99;
	int id, ret;
	pid_t pid;

	seg_name(seg, sizeof(seg), path, sizeof(path));
	if ((ret = mring_writer_open(seg, NULL, &w)) < 0)
		die("mring_writer_open", ret);
	id = mring_metric(w, "loss", MRING_ON_STEP);
	memset(sh, 0, offsetof(struct shared, lat));
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		reader_child(seg, MRING_OBSERVE, 1);
	if (pid < 0 || wait_ready(pid) < 0)
		die("observer", pid < 0 ? -errno : sh->err);
	for (i = 0; i < n; i++) {
		t = now_ns();
		while (now_ns() - t < 20000)	/* one log every 20 us */
			;
		mring_log(w, id, now_ns());
	}
	/* let the observer see the last one before it is told to stop */
	t = now_ns();
	while (__atomic_load_n(&sh->values, __ATOMIC_RELAXED) < n && now_ns() - t < 1e9)
		sched_yield();
	atomic_store(&sh->done, 1);
	reap(pid);
	mring_writer_close(w);
	unlink(path);
	if (sh->nlat != n || sh->err)
		check_fails++;
	p50 = quantile(sh->lat, sh->nlat, 0.5);
	p99 = quantile(sh->lat, sh->nlat, 0.99);
	add(fig("3.03", "mring_log -> observer mring_read, median", "ns"), p50);
	add(fig("3.04", "mring_log -> observer mring_read, p99", "ns"), p99);
}

/* ---- section 4: memory ------------------------------------------------------ */

static void rss(long out[3])
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");

	out[0] = out[1] = out[2] = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "VmRSS: %ld", &out[0]);
		sscanf(line, "RssAnon: %ld", &out[1]);
		sscanf(line, "RssShmem: %ld", &out[2]);
	}
	fclose(f);
}

/*
 * Runs in a fresh process (bench_suite --memory-child N, exec'd, so its
 * RSS holds nothing of the harness): default config, 16 ON_STEP metrics,
 * a drainer, N records in bursts; prints the figures on stdout.
 */
static int memory_child(uint64_t nrec)
{
	struct mring_writer *w;
	char seg[64], path[4200];
	struct stat st;
	int id[BURST], j, ret;
	uint64_t s, v = 0, seg_bytes = 0;
	long before[3], after[3];
	pid_t dpid;

	pin(cpu_prod);
	seg_name(seg, sizeof(seg), path, sizeof(path));
	if ((ret = mring_writer_open(seg, NULL, &w)) < 0)
		die("mring_writer_open", ret);
	if (stat(path, &st) == 0)
		seg_bytes = (uint64_t)st.st_size;
	for (j = 0; j < BURST; j++) {
		char name[16];

		snprintf(name, sizeof(name), "m%02d", j);
		id[j] = mring_metric(w, name, MRING_ON_STEP);
	}
	fflush(NULL);
	dpid = fork();
	if (dpid == 0)
		reader_child(seg, MRING_DRAIN, 0);
	if (dpid < 0 || wait_ready(dpid) < 0)
		die("drainer", -ECHILD);
	for (s = 0; s < 1000; s++) {	/* warm: every code path taken once */
		mring_step(w, s);
		for (j = 0; j < BURST; j++)
			mring_log(w, id[j], (double)v++);
	}
	rss(before);
	for (; v < nrec; s++) {
		mring_step(w, s);
		for (j = 0; j < BURST; j++)
			mring_log(w, id[j], (double)v++);
	}
	rss(after);
	mring_writer_close(w);
	atomic_store(&sh->done, 1);
	waitpid(dpid, NULL, 0);
	unlink(path);
	printf("MEM %llu %llu %ld %ld %ld %ld %ld %ld\n", (unsigned long long)seg_bytes,
	       (unsigned long long)(s * (BURST + 1)), before[0], before[1], before[2],
	       after[0], after[1], after[2]);
	return 0;
}

static void memory(uint64_t nrec)
{
	char cmd[4400], exe[4096], line[512];
	unsigned long long seg_bytes = 0, recs = 0;
	long b[3] = { -1, -1, -1 }, a[3] = { -1, -1, -1 };
	ssize_t n;
	FILE *p;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0) {
		check_fails++;
		return;
	}
	exe[n] = '\0';
	snprintf(cmd, sizeof(cmd), "'%s' --memory-child %llu", exe, (unsigned long long)nrec);
	fflush(NULL);
	p = popen(cmd, "r");
	if (!p) {
		check_fails++;
		return;
	}
	while (fgets(line, sizeof(line), p))
		sscanf(line, "MEM %llu %llu %ld %ld %ld %ld %ld %ld", &seg_bytes, &recs,
		       &b[0], &b[1], &b[2], &a[0], &a[1], &a[2]);
	if (pclose(p) != 0 || b[0] < 0 || a[0] < 0) {
		check_fails++;
		return;
	}
	add(fig("4.01", "segment size, default config (file)", "MiB"),
	    (double)seg_bytes / 1048576.0);
	add(fig("4.02", "producer VmRSS before", "KiB"), (double)b[0]);
	add(fig("4.03", "producer VmRSS after 10^8 records", "KiB"), (double)a[0]);
	add(fig("4.04", "  growth VmRSS (after - before)", "KiB"), (double)(a[0] - b[0]));
	add(fig("4.05", "  growth RssAnon (after - before)", "KiB"), (double)(a[1] - b[1]));
	target(fig("4.04", NULL, NULL), "no growth (0)", 0, 1, 0);
	target(fig("4.05", NULL, NULL), "no growth (0)", 0, 1, 0);
	snprintf(fig("4.02", NULL, NULL)->note, sizeof(figs[0].note),
		 "fresh process; RssAnon %ld KiB, RssShmem %ld KiB (segment prefaulted)",
		 b[1], b[2]);
	snprintf(fig("4.03", NULL, NULL)->note, sizeof(figs[0].note),
		 "%llu records (step+16 logs), drainer running; RssShmem %ld KiB", recs, a[2]);
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
	int reps = 7, quick = 0, memory_only = 0, no_memory = 0, rep, i;
	uint64_t nrec = UINT64_C(1) << 24, nsustain = UINT64_C(1) << 25, npeer = 1 << 20;
	uint64_t nlat = 20000, nstats = 2000000, mem_rec = 100000000;
	double t_start = now_ns(), mring_ns, mring_ns_nap;
	struct fig *f;

	if (argc == 3 && !strcmp(argv[1], "--memory-child")) {
		choose_cpus();
		sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (sh == MAP_FAILED)
			return 1;
		memset(sh, 0, offsetof(struct shared, lat));
		return memory_child(strtoull(argv[2], NULL, 0));
	}
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else if (!strcmp(argv[i], "--memory-only")) {
			memory_only = 1;
		} else if (!strcmp(argv[i], "--no-memory")) {
			no_memory = 1;
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
			if (reps < 1 || reps > MAX_REPS)
				reps = 7;
		} else {
			fprintf(stderr, "usage: bench_suite [--quick] [--reps N] [--memory-only | --no-memory]\n");
			return 2;
		}
	}
	if (quick) {
		reps = reps == 7 ? 3 : reps;
		nrec >>= 3;
		nsustain >>= 3;
		npeer >>= 2;
		nlat = 5000;
		nstats >>= 2;
	}
	choose_cpus();
	pin(cpu_prod);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("bench_suite: mmap");
		return 1;
	}
	pool_n = npeer;
	pool = calloc(pool_n, sizeof(*pool));
	if (!pool) {
		perror("bench_suite: calloc");
		return 1;
	}
	memset(pool, 1, pool_n * sizeof(*pool));	/* prefault */
#ifdef MRING_BENCH_LTTNG
	for (i = 0; i < 100 && !tracepoint_enabled(mring_bench, record); i++)
		usleep(10000);
	lttng_active = tracepoint_enabled(mring_bench, record) != 0;
#endif
	printf("INFO\tbench_suite: %d reps; producer cpu %d, consumer cpu %d; "
	       "%llu records per hot-path run, %llu per sustained run, %llu values per peer run\n",
	       reps, cpu_prod, cpu_cons, (unsigned long long)nrec,
	       (unsigned long long)nsustain, (unsigned long long)npeer);
	printf("INFO\tpeers built: lttng-ust %s, liburcu %s\n",
#ifdef MRING_BENCH_LTTNG
	       lttng_active ? "yes (event enabled)" : "yes (EVENT NOT ENABLED)",
#else
	       "no",
#endif
#ifdef MRING_BENCH_URCU
	       "yes"
#else
	       "no"
#endif
	);
	fflush(stdout);

	for (rep = 0; rep < reps; rep++) {
		if (memory_only) {
			memory(mem_rec);
			continue;
		}
		quiesce();
		mring_ns = section1(rep, nrec, nsustain);
		/* the mring figure every peer ratio of this rep is taken against:
		 * measured right before the peers, same workload */
		{
			struct mres r;
			uint64_t steps = npeer / BURST;

			mring_run(K_BURST, MRING_FULL_DROP, steps * 8, &r);
			check_fails += !r.ok;
			mring_ns = r.ns / (double)(steps * 8 * BURST);
			add(fig("2.00", "mring_log bursts (ratio reference), spinning drainer", "ns"), mring_ns);
			drain_nap_us = 50;
			mring_run(K_BURST, MRING_FULL_DROP, steps * 8, &r);
			drain_nap_us = 0;
			check_fails += !r.ok;
			mring_ns_nap = r.ns / (double)(steps * 8 * BURST);
			add(fig("2.00n", "mring_log bursts, drainer naps 50 us when empty", "ns"), mring_ns_nap);
			snprintf(fig("2.00n", NULL, NULL)->note, sizeof(figs[0].note),
				 "DROP; dropped %.2f%% this rep", 100.0 * (double)r.lost / (double)r.appends);
		}
		section2(mring_ns, mring_ns_nap, npeer);
		quiesce();
		drain_rate(UINT64_C(1) << (quick ? 20 : 22));
		stats_read_cost(nstats);
		stats_read_contended(nstats / 2);
		latency(nlat);
		if (!no_memory && rep < (quick ? 1 : 3))
			memory(mem_rec);
		fprintf(stderr, "\rbench_suite: rep %d/%d done", rep + 1, reps);
	}
	fprintf(stderr, "\n");

	/* notes that need every rep */
	if (!memory_only) {
		static const char *keys[4] = { "1.01", "1.03", "1.04", "1.05" };
		int k;

		for (k = 0; k < 4; k++) {
			double tmp[MAX_REPS];

			double med;

			memcpy(tmp, drop_pct[k], sizeof(double) * (size_t)reps);
			med = quantile(tmp, (size_t)reps, 0.5);
			snprintf(fig(keys[k], NULL, NULL)->note, sizeof(figs[0].note),
				 "DROP mode; dropped median %.2f%% [%.2f-%.2f]",
				 med, tmp[0], tmp[reps - 1]);
		}
	}
	if (!memory_only) {
		f = fig("3.01", NULL, NULL);
		snprintf(f->note, sizeof(f->note), "raw mring_read, batch %d, prefilled ring; "
			 "into the sinks: rows 3.05-3.07", READ_BATCH);
		snprintf(fig("3.03", NULL, NULL)->note, sizeof(figs[0].note),
			 "per-rep median; 1 log / 20 us, observer busy-polls on the other cpu");
		snprintf(fig("3.04", NULL, NULL)->note, sizeof(figs[0].note), "per-rep p99");
	}
	print_rows();
	printf("INFO\tbench_suite: %.1f s (%.1f s waiting for a quiet machine), %s\n",
	       (now_ns() - t_start) / 1e9, quiesce_s,
	       check_fails ? "CHECK FAILURES (see stderr)" : "all checks passed");
	if (q_sink == 12345.678)
		printf("INFO\tsink\n");
	munmap(sh, sizeof(*sh));
	return check_fails ? 1 : 0;
}
