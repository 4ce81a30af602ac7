// SPDX-License-Identifier: MIT
/*
 * bench_log.c - ns per record of the producer hot path (mring_step,
 * mring_log, mring_log_weighted) with a drainer draining concurrently in
 * a separate process.
 *
 * Usage: bench_log [--reps N] [--records N] [--quick] [--nap-us N]
 *
 * Every run creates a fresh segment "bench-<pid>-<n>" (in $MRING_DIR or
 * /dev/shm, MRING_CFG_REPLACE, capacity 1 << 20), forks a drainer
 * (MRING_DRAIN, mring_read with a 256-event buffer) pinned to another CPU,
 * waits until it is attached, then times the whole producer loop with
 * CLOCK_MONOTONIC.  The drainer checks the stream (seq strictly increasing
 * and contiguous, values strictly increasing, LOST accounting) and reports
 * its counts through a MAP_SHARED page.  Each figure is the median over
 * the repetitions, with min and max.
 *
 * Cases (each in MRING_FULL_DROP and MRING_FULL_WAIT):
 *   a0  mring_step() only
 *   a   burst: per step mring_step() then 16 mring_log() on 16 ON_STEP
 *       metrics; shown per record (17 per step) and per mring_log with the
 *       median a0 step cost of the same mode subtracted
 *   b   tight loop of mring_log() on one ON_STEP metric
 *   c   mring_log_weighted() on one ON_STEP|ON_EPOCH metric
 *   d   mring_log() on one ON_EPOCH metric (no ring record)
 *
 * The drainer busy-polls (pause) when mring_read() returns 0, the worst
 * case for cache-line sharing with the producer; --nap-us N makes it sleep
 * N microseconds instead, like a drainer that batches its work.
 *
 * Values logged are a global call counter (0, 1, 2, ...), so the drainer
 * can check order and, in WAIT mode, that nothing is missing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mring.h>

#define CAPACITY	(UINT64_C(1) << 20)
#define BURST		16
#define READ_BATCH	256
#define MAX_REPS	101
#define DRAIN_TIMEOUT_S	120

enum { C_STEP, C_BURST, C_LOG, C_WEIGHTED, C_EPOCH, NCASES };

static const char *const case_tag[NCASES] = { "a0", "a", "b", "c", "d" };
static const char *const case_desc[NCASES] = {
	"mring_step only",
	"burst step+16 log, per record",
	"tight mring_log, 1 ON_STEP",
	"log_weighted, ON_STEP|ON_EPOCH",
	"mring_log, ON_EPOCH only",
};

/* What one run measured and what its drainer saw. */
struct result {
	double ns;		/* wall time of the producer loop */
	uint64_t calls;		/* timed calls (steps + logs) */
	uint64_t steps;		/* mring_step calls among them */
	uint64_t appends;	/* calls that append a ring record */
	uint64_t log_drops;	/* mring_log* calls that returned -ENOBUFS */
	uint64_t log_errors;	/* mring_log* calls that returned another error */
	uint64_t ring_logs;	/* mring_log* calls on an ON_STEP metric */
};

/* The drainer's report, in a MAP_SHARED page. */
struct shared {
	_Atomic int ready;		/* 1 attached, < 0 failed */
	_Atomic int producer_done;	/* set after mring_writer_close */
	int err;			/* first error, -errno */
	int closed;			/* mring_status_read().closed at the end */
	uint64_t events;		/* every event returned */
	uint64_t values;		/* MRING_EV_VALUE */
	uint64_t steps;			/* MRING_EV_STEP */
	uint64_t lost_events;		/* MRING_EV_LOST */
	uint64_t lost_total;		/* sum of their values */
	uint64_t other;			/* any other kind */
	uint64_t seq_errors;		/* seq not strictly increasing */
	uint64_t seq_gaps;		/* seq increasing but not contiguous */
	uint64_t order_errors;		/* value or step not strictly increasing */
	uint64_t value_gap;		/* counter values skipped (lost) */
	uint64_t value_end;		/* last counter value seen + 1 */
	uint64_t bad_metric;		/* VALUE with an unexpected metric id */
	uint64_t end_pos;		/* seq of the last event + 1 */
	uint64_t st_written;		/* status at the end */
	uint64_t st_dropped;
	uint64_t reads;			/* mring_read calls returning > 0 */
};

struct opts {
	int reps;
	uint64_t records;
	long nap_us;		/* drainer sleep when the ring is empty; 0: spin */
};

static long drain_nap_us;

static int cpu_prod = -1, cpu_drain = -1;
static unsigned seg_counter;

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		fprintf(stderr, "bench_log: sched_setaffinity(cpu %d): %s (not pinned)\n",
			cpu, strerror(errno));
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* ---- machine ------------------------------------------------------------ */

static void cpu_model(char *buf, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(buf, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':');

		if (!p || (strncmp(line, "model name", 10) && strncmp(line, "Model", 5) &&
			   strncmp(line, "cpu model", 9)))
			continue;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		p[strcspn(p, "\n")] = '\0';
		snprintf(buf, len, "%s", p);
		break;
	}
	fclose(f);
}

static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (!f)
		return;
	if (fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}

/* Pick the producer and drainer CPUs among those we may run on. */
static void choose_cpus(int *allowed_out)
{
	cpu_set_t set;
	int i, n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0) {
		*allowed_out = 0;
		return;
	}
	for (i = 0; i < CPU_SETSIZE; i++) {
		if (!CPU_ISSET(i, &set))
			continue;
		if (n == 0)
			cpu_prod = i;
		else if (n == 1)
			cpu_drain = i;
		n++;
	}
	*allowed_out = n;
	if (n < 2)
		cpu_prod = cpu_drain = -1;	/* one CPU: do not pin at all */
}

static void print_machine(const struct opts *o)
{
	char model[256], sib[64] = "", path[128], cs[64];
	struct utsname u;
	int allowed;

	cpu_model(model, sizeof(model));
	choose_cpus(&allowed);
	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "?");
	read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource",
		  cs, sizeof(cs));
	printf("mring bench_log: %d reps x %llu records, capacity %llu, read batch %d, "
	       "drainer idle: %s%.0ld%s\n", o->reps, (unsigned long long)o->records,
	       (unsigned long long)CAPACITY, READ_BATCH,
	       o->nap_us ? "sleep " : "busy-poll", o->nap_us, o->nap_us ? " us" : "");
	printf("cpu: %s; nproc %ld online, %d allowed; kernel %s; clocksource %s\n",
	       model, sysconf(_SC_NPROCESSORS_ONLN), allowed, u.release,
	       cs[0] ? cs : "?");
	if (cpu_prod >= 0) {
		snprintf(path, sizeof(path),
			 "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list",
			 cpu_prod);
		read_line(path, sib, sizeof(sib));
		printf("pinned: producer cpu %d, drainer cpu %d%s%s%s\n", cpu_prod,
		       cpu_drain, sib[0] ? " (producer cpu siblings: " : "", sib,
		       sib[0] ? ")" : "");
	} else {
		printf("pinned: no (fewer than 2 CPUs allowed); drainer yields when idle\n");
	}
}

/* ---- drainer (child process) -------------------------------------------- */

static void drain(const char *seg, struct shared *sh, int nmetrics)
{
	struct mring_event *ev = calloc(READ_BATCH, sizeof(*ev));
	struct mring_reader *r = NULL;
	struct mring_status st;
	uint64_t next_seq = 0, next_val = 0, last_step = 0;
	bool have_step = false;
	int ret, i, done;

	pin(cpu_drain);
	if (!ev) {
		atomic_store(&sh->ready, -ENOMEM);
		_exit(1);
	}
	ret = mring_reader_open(seg, MRING_DRAIN, &r);
	if (ret < 0) {
		sh->err = ret;
		atomic_store(&sh->ready, ret);
		_exit(1);
	}
	atomic_store(&sh->ready, 1);
	for (;;) {
		/* loaded before the read: once the producer has closed,
		 * everything it wrote is visible to this read */
		done = atomic_load(&sh->producer_done);
		ret = mring_read(r, ev, READ_BATCH);
		if (ret < 0) {
			sh->err = ret;
			break;
		}
		if (ret == 0) {
			if (done)
				break;
			if (drain_nap_us > 0) {
				struct timespec ts = { drain_nap_us / 1000000,
						       drain_nap_us % 1000000 * 1000 };

				nanosleep(&ts, NULL);
			} else if (cpu_drain < 0) {
				sched_yield();
			} else {
				cpu_relax();
			}
			continue;
		}
		sh->reads++;
		for (i = 0; i < ret; i++) {
			const struct mring_event *e = &ev[i];

			if (e->seq < next_seq)
				sh->seq_errors++;
			else if (e->seq > next_seq && e->seq != next_seq + 2)	/* a CTX pair */
				sh->seq_gaps++;
			next_seq = e->seq + (e->kind == MRING_EV_STEP ? 2 : 1);	/* slots */
			sh->events++;
			switch (e->kind) {
			case MRING_EV_VALUE: {
				uint64_t v = (uint64_t)e->value;

				sh->values++;
				if (e->metric < 0 || e->metric >= nmetrics)
					sh->bad_metric++;
				if ((double)v != e->value || v < next_val)
					sh->order_errors++;
				else
					sh->value_gap += v - next_val;
				next_val = v + 1;
				break;
			}
			case MRING_EV_STEP:
				sh->steps++;
				if (have_step && e->step <= last_step)
					sh->order_errors++;
				last_step = e->step;
				have_step = true;
				break;
			case MRING_EV_LOST:
				sh->lost_events++;
				sh->lost_total += (uint64_t)e->value;
				break;
			default:
				sh->other++;
				break;
			}
		}
	}
	sh->end_pos = next_seq;
	sh->value_end = next_val;
	if (mring_status_read(r, &st) == 0) {
		sh->closed = st.closed;
		sh->st_written = st.written;
		sh->st_dropped = st.dropped;
	}
	mring_reader_close(r);
	free(ev);
	_exit(sh->err ? 1 : 0);
}

/* ---- producer loops (timed) ----------------------------------------------- */

/* Each loop returns the number of -ENOBUFS returns; other errors in *err. */

static uint64_t loop_step(struct mring_writer *w, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		mring_step(w, i);
	return 0;
}

static uint64_t loop_burst(struct mring_writer *w, const int *id, uint64_t steps,
			   uint64_t *err)
{
	uint64_t s, v = 0, drops = 0, bad = 0;
	int j, ret;

	for (s = 0; s < steps; s++) {
		mring_step(w, s);
		for (j = 0; j < BURST; j++) {
			ret = mring_log(w, id[j], (double)v++);
			drops += ret == -ENOBUFS;
			bad += ret < 0 && ret != -ENOBUFS;
		}
	}
	*err = bad;
	return drops;
}

static uint64_t loop_log(struct mring_writer *w, int id, uint64_t n, uint64_t *err)
{
	uint64_t i, drops = 0, bad = 0;
	int ret;

	for (i = 0; i < n; i++) {
		ret = mring_log(w, id, (double)i);
		drops += ret == -ENOBUFS;
		bad += ret < 0 && ret != -ENOBUFS;
	}
	*err = bad;
	return drops;
}

static uint64_t loop_weighted(struct mring_writer *w, int id, uint64_t n,
			      uint64_t *err)
{
	uint64_t i, drops = 0, bad = 0;
	int ret;

	for (i = 0; i < n; i++) {
		ret = mring_log_weighted(w, id, (double)i, 32.0);
		drops += ret == -ENOBUFS;
		bad += ret < 0 && ret != -ENOBUFS;
	}
	*err = bad;
	return drops;
}

/* ---- one run ---------------------------------------------------------------- */

static void seg_path(const char *seg, char *buf, size_t len)
{
	const char *dir = getenv("MRING_DIR");

	snprintf(buf, len, "%s/%s", dir && *dir ? dir : "/dev/shm", seg);
}

static int wait_child(pid_t pid, int timeout_s, int *status)
{
	double deadline = now_ns() + timeout_s * 1e9;
	struct timespec ts = { 0, 1000000 };
	pid_t p;

	for (;;) {
		p = waitpid(pid, status, WNOHANG);
		if (p == pid)
			return 0;
		if (p < 0 && errno != EINTR)
			return -errno;
		if (now_ns() > deadline)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
	}
}

static int run_one(int c, int on_full, const struct opts *o, struct shared *sh,
		   struct result *res)
{
	struct mring_config cfg = {
		.capacity = CAPACITY, .on_full = on_full, .flags = MRING_CFG_REPLACE,
	};
	struct mring_writer *w;
	char seg[64], path[4200];
	int id[BURST], nmetrics = 1, ret, j, status;
	uint64_t n = o->records, bad = 0;
	double t0, t1;
	pid_t pid;

	snprintf(seg, sizeof(seg), "bench-%d-%u", (int)getpid(), seg_counter++);
	seg_path(seg, path, sizeof(path));
	ret = mring_writer_open(seg, &cfg, &w);
	if (ret < 0) {
		fprintf(stderr, "bench_log: mring_writer_open(%s): %s\n", path,
			mring_strerror(ret));
		return ret;
	}
	switch (c) {
	case C_BURST:
		nmetrics = BURST;
		for (j = 0; j < BURST; j++) {
			char name[32];

			snprintf(name, sizeof(name), "m%02d", j);
			id[j] = mring_metric(w, name, MRING_ON_STEP);
		}
		break;
	case C_LOG:
		id[0] = mring_metric(w, "loss", MRING_ON_STEP);
		break;
	case C_WEIGHTED:
		id[0] = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
		break;
	case C_EPOCH:
		id[0] = mring_metric(w, "loss", MRING_ON_EPOCH);
		break;
	default:
		nmetrics = 0;
		break;
	}
	for (j = 0; j < nmetrics; j++) {
		if (id[j] < 0) {
			fprintf(stderr, "bench_log: mring_metric: %s\n",
				mring_strerror(id[j]));
			mring_writer_close(w);
			unlink(path);
			return id[j];
		}
	}

	memset(sh, 0, sizeof(*sh));
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		mring_writer_close(w);
		unlink(path);
		return ret;
	}
	if (pid == 0)
		drain(seg, sh, nmetrics);	/* never returns */

	/* WAIT mode only waits for an attached drainer: start after it is */
	while ((ret = atomic_load(&sh->ready)) == 0) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			ret = -ECHILD;
			break;
		}
		sched_yield();
	}
	if (ret < 0) {
		fprintf(stderr, "bench_log: drainer failed to attach: %s\n",
			mring_strerror(ret));
		mring_writer_close(w);
		atomic_store(&sh->producer_done, 1);
		wait_child(pid, 5, &status);
		unlink(path);
		return ret;
	}

	memset(res, 0, sizeof(*res));
	switch (c) {
	case C_STEP:
		t0 = now_ns();
		loop_step(w, n);
		t1 = now_ns();
		res->calls = res->steps = res->appends = n;
		break;
	case C_BURST: {
		uint64_t steps = n / (BURST + 1);

		t0 = now_ns();
		res->log_drops = loop_burst(w, id, steps, &bad);
		t1 = now_ns();
		res->steps = steps;
		res->calls = res->appends = steps * (BURST + 1);
		res->ring_logs = steps * BURST;
		break;
	}
	case C_LOG:
		t0 = now_ns();
		res->log_drops = loop_log(w, id[0], n, &bad);
		t1 = now_ns();
		res->calls = res->appends = res->ring_logs = n;
		break;
	case C_WEIGHTED:
		t0 = now_ns();
		res->log_drops = loop_weighted(w, id[0], n, &bad);
		t1 = now_ns();
		res->calls = res->appends = res->ring_logs = n;
		break;
	default:
		t0 = now_ns();
		res->log_drops = loop_log(w, id[0], n, &bad);
		t1 = now_ns();
		res->calls = n;
		res->appends = 0;
		break;
	}
	res->ns = t1 - t0;
	res->log_errors = bad;

	ret = mring_writer_close(w);
	if (ret < 0)
		fprintf(stderr, "bench_log: mring_writer_close: %s\n", mring_strerror(ret));
	atomic_store(&sh->producer_done, 1);
	ret = wait_child(pid, DRAIN_TIMEOUT_S, &status);
	if (ret == -ETIMEDOUT) {
		fprintf(stderr, "bench_log: drainer %d did not finish in %d s, killing it\n",
			(int)pid, DRAIN_TIMEOUT_S);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		sh->err = -ETIMEDOUT;
	} else if (ret == 0 && (!WIFEXITED(status) || WEXITSTATUS(status))) {
		if (!sh->err)
			sh->err = -ECHILD;
	}
	if (unlink(path) < 0)
		fprintf(stderr, "bench_log: unlink %s: %s\n", path, strerror(errno));
	return 0;
}

/* ---- checking and reporting ------------------------------------------------ */

struct cell {
	double ns[MAX_REPS];		/* ns per call, per rep */
	double log_ns[MAX_REPS];	/* burst: ns per mring_log, step subtracted */
	uint64_t lost[MAX_REPS];	/* records lost, per rep */
	double batch[MAX_REPS];		/* events per non-empty mring_read */
	uint64_t appends;
	uint64_t steps, calls;
	double total_ns[MAX_REPS];
	int nrep;
	int fails;
	char why[160];
};

static struct cell cells[2][NCASES];	/* [wait][case] */

/* Does the drainer's report agree with what the producer did? */
static int check(const struct result *res, const struct shared *sh, int on_full,
		 char *why, size_t len)
{
	uint64_t delivered = sh->values + sh->steps;

	why[0] = '\0';
	if (sh->err)
		snprintf(why, len, "drainer error %s", mring_strerror(sh->err));
	else if (res->log_errors)
		snprintf(why, len, "%llu log errors", (unsigned long long)res->log_errors);
	else if (sh->seq_errors || sh->seq_gaps)
		snprintf(why, len, "seq: %llu not increasing, %llu gaps",
			 (unsigned long long)sh->seq_errors,
			 (unsigned long long)sh->seq_gaps);
	else if (sh->order_errors || sh->bad_metric || sh->other)
		snprintf(why, len, "order errors %llu, bad metric %llu, odd kinds %llu",
			 (unsigned long long)sh->order_errors,
			 (unsigned long long)sh->bad_metric,
			 (unsigned long long)sh->other);
	else if (delivered + sh->lost_total != res->appends)
		snprintf(why, len, "read %llu + lost %llu != appended %llu",
			 (unsigned long long)delivered,
			 (unsigned long long)sh->lost_total,
			 (unsigned long long)res->appends);
	else if (sh->values + res->log_drops != res->appends - res->steps)
		snprintf(why, len, "value drops: producer %llu, stream %llu",
			 (unsigned long long)res->log_drops,
			 (unsigned long long)(res->appends - res->steps - sh->values));
	else if (sh->value_end > res->ring_logs ||
		 sh->value_gap + (res->ring_logs - sh->value_end) != res->log_drops)
		snprintf(why, len, "value counter gaps %llu (+%llu at the end) != drops %llu",
			 (unsigned long long)sh->value_gap,
			 (unsigned long long)(res->ring_logs - sh->value_end),
			 (unsigned long long)res->log_drops);
	else if (!sh->closed || sh->st_written != sh->end_pos)
		snprintf(why, len, "status: closed %d written %llu drained to %llu",
			 sh->closed, (unsigned long long)sh->st_written,
			 (unsigned long long)sh->end_pos);
	else if (sh->st_dropped != sh->lost_total)
		snprintf(why, len, "status dropped %llu != LOST total %llu",
			 (unsigned long long)sh->st_dropped,
			 (unsigned long long)sh->lost_total);
	else if (on_full == MRING_FULL_WAIT && (sh->lost_total || delivered != res->appends))
		snprintf(why, len, "WAIT lost %llu records",
			 (unsigned long long)sh->lost_total);
	return why[0] ? -1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void stats3(const double *in, int n, double *med, double *mn, double *mx)
{
	double v[MAX_REPS];

	memcpy(v, in, (size_t)n * sizeof(*v));
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	*mn = v[0];
	*mx = v[n - 1];
	*med = n & 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t median_u64(const uint64_t *in, int n)
{
	uint64_t v[MAX_REPS];

	memcpy(v, in, (size_t)n * sizeof(*v));
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

static void row(const char *tag, const char *desc, const double *ns, int n,
		const struct cell *cl, int wait, bool first)
{
	double med, mn, mx, bmed, bmn, bmx;
	char lost[48], chk[200];

	stats3(ns, n, &med, &mn, &mx);
	stats3(cl->batch, cl->nrep, &bmed, &bmn, &bmx);
	if (!first) {
		printf("%-3s %-32s %7.2f %7.2f %7.2f\n", tag, desc, med, mn, mx);
		return;
	}
	if (!cl->appends)
		snprintf(lost, sizeof(lost), "-");
	else if (wait)
		snprintf(lost, sizeof(lost), "0");
	else {
		uint64_t m = median_u64(cl->lost, cl->nrep);

		snprintf(lost, sizeof(lost), "%llu (%.1f%%)", (unsigned long long)m,
			 100.0 * (double)m / (double)cl->appends);
	}
	if (cl->fails)
		snprintf(chk, sizeof(chk), "FAIL %d/%d: %s", cl->fails, cl->nrep, cl->why);
	else if (wait)
		snprintf(chk, sizeof(chk), "ok, read==logged (%llu)",
			 (unsigned long long)cl->appends);
	else
		snprintf(chk, sizeof(chk), "ok, read+lost==logged");
	printf("%-3s %-32s %7.2f %7.2f %7.2f %8.1f %11llu  %-18s %6.1f  %s\n", tag,
	       desc, med, mn, mx, 1e3 / med, (unsigned long long)cl->appends, lost,
	       bmed, chk);
}

static void report(int reps)
{
	int wait, c;

	printf("\nns per call: median, min, max over %d reps; Mcall/s from the median;\n"
	       "records: ring records appended per rep; dropped: median LOST total;\n"
	       "batch: median events per non-empty mring_read (256 max: drainer behind)\n",
	       reps);
	for (wait = 0; wait < 2; wait++) {
		printf("\n%s mode\n", wait ? "WAIT (lossless)" : "DROP");
		printf("%-3s %-32s %7s %7s %7s %8s %11s  %-18s %6s  %s\n", "", "case",
		       "median", "min", "max", "Mcall/s", "records", "dropped", "batch",
		       "check");
		for (c = 0; c < NCASES; c++) {
			struct cell *cl = &cells[wait][c];

			row(case_tag[c], case_desc[c], cl->ns, cl->nrep, cl, wait, true);
			if (c == C_BURST)
				row("", "  per mring_log (a - a0 median)", cl->log_ns,
				    cl->nrep, cl, wait, false);
		}
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_log [--reps N] [--records N] [--quick] [--nap-us N]\n"
		"  --reps N     repetitions per case and mode (default 7, max %d)\n"
		"  --records N  records (calls) per repetition (default 16777216)\n"
		"  --quick      smoke run: 3 reps x 2 Mi records\n"
		"  --nap-us N   drainer sleeps N us when the ring is empty (default 0:\n"
		"               busy-poll)\n", MAX_REPS);
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = { .reps = 7, .records = UINT64_C(1) << 24 };
	static const int modes[2] = { MRING_FULL_DROP, MRING_FULL_WAIT };
	struct shared *sh;
	struct result res;
	double t_start = now_ns();
	int i, rep, wait, c, fails = 0;

	for (i = 1; i < argc; i++) {
		char *end;

		if (!strcmp(argv[i], "--quick")) {
			o.reps = 3;
			o.records = UINT64_C(1) << 21;
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			long v = strtol(argv[++i], &end, 0);

			if (*end || v < 1 || v > MAX_REPS)
				usage();
			o.reps = (int)v;
		} else if (!strcmp(argv[i], "--records") && i + 1 < argc) {
			unsigned long long v = strtoull(argv[++i], &end, 0);

			if (*end || v < BURST + 1 || v > (UINT64_C(1) << 52))
				usage();
			o.records = v;
		} else if (!strcmp(argv[i], "--nap-us") && i + 1 < argc) {
			long v = strtol(argv[++i], &end, 0);

			if (*end || v < 0 || v > 1000000)
				usage();
			o.nap_us = v;
		} else {
			usage();
		}
	}
	drain_nap_us = o.nap_us;

	print_machine(&o);
	pin(cpu_prod);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		  -1, 0);
	if (sh == MAP_FAILED) {
		perror("bench_log: mmap");
		return 1;
	}

	/* reps outermost: drift (thermal, neighbours) spreads over all cases */
	for (rep = 0; rep < o.reps; rep++) {
		for (wait = 0; wait < 2; wait++) {
			for (c = 0; c < NCASES; c++) {
				struct cell *cl = &cells[wait][c];
				char why[160];

				if (run_one(c, modes[wait], &o, sh, &res) < 0)
					return 1;
				cl->ns[cl->nrep] = res.ns / (double)res.calls;
				cl->total_ns[cl->nrep] = res.ns;
				cl->lost[cl->nrep] = sh->lost_total;
				cl->batch[cl->nrep] = sh->reads ?
					(double)sh->events / (double)sh->reads : 0;
				cl->appends = res.appends;
				cl->steps = res.steps;
				cl->calls = res.calls;
				if (check(&res, sh, modes[wait], why, sizeof(why)) < 0) {
					if (!cl->fails)
						snprintf(cl->why, sizeof(cl->why), "%s", why);
					cl->fails++;
					fails++;
					fprintf(stderr, "bench_log: rep %d %s %s: %s\n", rep,
						case_tag[c], wait ? "WAIT" : "DROP", why);
				}
				cl->nrep++;
			}
		}
		fprintf(stderr, "\rrep %d/%d done", rep + 1, o.reps);
	}
	fprintf(stderr, "\n");

	/* burst: subtract the median cost of a step in the same mode */
	for (wait = 0; wait < 2; wait++) {
		struct cell *a = &cells[wait][C_BURST];
		double med, mn, mx;

		stats3(cells[wait][C_STEP].ns, cells[wait][C_STEP].nrep, &med, &mn, &mx);
		for (rep = 0; rep < a->nrep; rep++)
			a->log_ns[rep] = (a->total_ns[rep] - (double)a->steps * med) /
					 (double)(a->calls - a->steps);
	}
	report(o.reps);
	printf("\ntotal %.1f s; %s\n", (now_ns() - t_start) / 1e9,
	       fails ? "CHECK FAILURES (see above)" : "all checks passed");
	munmap(sh, sizeof(*sh));
	return fails ? 1 : 0;
}
