// SPDX-License-Identifier: MIT
/*
 * bench_drain.c - a WAIT-mode producer against the real `mring drain`
 * (issue 11), driven by bench/drain.sh.
 *
 * Usage: bench_drain --mring [LABEL=]PATH [--mring [LABEL=]PATH ...]
 *                    [--reps N] [--quick] [--dir DIR] [--shm DIR]
 *                    [--only flat|sink|latency] [--no-pin] [--sink-events N]
 *
 * Every tool given with --mring is measured in the same run; the
 * repetitions are the outer loop and the tools alternate inside it, so
 * drift of the machine spreads over all of them.  Three cases:
 *
 *  flat     Producer events/s with `mring drain --wait --follow --jsonl
 *           FILE SEG` (default options otherwise) attached.  The drain is
 *           started first; the producer creates the segment (WAIT mode),
 *           registers 16 ON_STEP metrics, waits until mring_status_read()
 *           says a drainer is attached, then logs flat out: mring_step + 16
 *           mring_log per step (17 ring records = 17 events per step), until
 *           it has written the target number of events or the time limit
 *           has passed, whichever comes first (both tested after every step;
 *           a producer waiting at the limit stops right after it is let go,
 *           so a slow drain's run covers whole commit cycles); then it
 *           closes the segment.
 *           Reported: producer events/s and steps/s (from its first record
 *           to its last), the drain's wall time from the producer's first
 *           record until the drain exited with every row in the file, and
 *           the producer's `dropped` counter.  A run counts (valid=1) only if
 *           dropped == 0, no mring_log failed, the drain exited 0, its
 *           summary counts exactly the records written and 0 lost, and the
 *           file holds as many lines as the drain reported rows, the last
 *           one at the last step.
 *  sink     The sink's own rate: a closed segment holding N events (default
 *           20 M, as many as the 2^20-ring flat run writes) of the
 *           same shape (written in DROP mode into a ring large enough that
 *           nothing drops) is drained by `mring drain --jsonl FILE SEG`
 *           with no producer running; events / wall time of the drain
 *           process (exec to exit, final fsync included).
 *  latency  One step per 1 ms (absolute sleeps), WAIT mode, default ring:
 *           mring_step(s), then one mring_log of metric "lat"; `mring drain
 *           --wait --follow --jsonl FILE SEG` with default options.  A
 *           thread of this process polls the file's size every 100 us and
 *           notes when the line of each step appears.  Two figures per step
 *           s: from the mring_log call of step s, and from the end of step
 *           s (the mring_step(s + 1) call: the drain may hold a step's row
 *           until the step ends), to the poll that first saw the row's
 *           complete line.  The poll period adds 0 to 100 us.
 *
 * Values are float32 numbers widened to double, as a training loop logs
 * them (mostly 17 significant digits in the shortest round-trip form).
 * Producer and drain are pinned to two different CPUs (the first two this
 * process may use) unless --no-pin; the latency poller runs on the
 * producer's CPU.  Segments go into --shm (default /dev/shm), output files
 * into --dir (default $TMPDIR or /tmp); both are removed after each run.
 *
 * Output (stdout): "RUN ..." lines, one per run with every figure; then
 * one table of medians over the repetitions; then "LABEL.key value" lines
 * with the same medians.  Exit status 1 if a run was invalid.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mring.h>

#define NVAL		16	/* values per step */
#define EV_PER_STEP	(NVAL + 1)
#define SLOTS_PER_STEP	(NVAL + 2)	/* a STEP takes two ring slots */
#define TAB_N		4096
#define MAX_TOOLS	4
#define MAX_REPS	15
#define NCAPS		3

static const uint64_t caps[NCAPS] = { UINT64_C(1) << 20, 4096, 1024 };

static double tab[TAB_N];
static int cpu_prod = -1, cpu_drain = -1;
static const char *out_dir = "/tmp";
static const char *shm_dir = "/dev/shm";
static unsigned run_counter;
static int invalid_runs;

/* knobs (--quick shrinks them) */
static uint64_t flat_events_big = 20000000;	/* 2^20 ring */
static double flat_max_s_big = 5.0;
static uint64_t flat_events_small = 10000000;	/* 4096 and 1024 rings */
static double flat_max_s_small = 3.0;
static uint64_t sink_events = 20000000;	/* = flat_events_big: like for like */
static uint64_t lat_steps = 2000;
static long lat_period_us = 1000;
static long lat_poll_us = 100;
static double drain_timeout_s = 60.0;

struct tool {
	const char *label;
	const char *path;
};
static struct tool tools[MAX_TOOLS];
static int ntools;

/* ---- helpers ------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		fprintf(stderr, "bench_drain: pin cpu %d: %s\n", cpu, strerror(errno));
}

static void choose_cpus(void)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return;
	for (int i = 0; i < CPU_SETSIZE && n < 2; i++) {
		if (!CPU_ISSET(i, &set))
			continue;
		if (n++ == 0)
			cpu_prod = i;
		else
			cpu_drain = i;
	}
	if (n < 2)
		cpu_prod = cpu_drain = -1;	/* one CPU: pinning would only serialize */
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_drain: %s: %s\n", what, err < 0 ? mring_strerror(err) : strerror(err));
	exit(2);
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* nearest-rank quantile of v[0..n) (sorts v) */
static double quantile(double *v, size_t n, double q)
{
	size_t i;

	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	i = (size_t)ceil(q * (double)n);
	if (i > 0)
		i--;
	if (i >= n)
		i = n - 1;
	return v[i];
}

static double median_of(const double *v, int n)
{
	double t[MAX_REPS];
	int m = 0;

	for (int i = 0; i < n; i++)
		if (!isnan(v[i]))
			t[m++] = v[i];
	if (m == 0)
		return NAN;
	qsort(t, (size_t)m, sizeof(t[0]), cmp_double);
	return m % 2 ? t[m / 2] : (t[m / 2 - 1] + t[m / 2]) / 2;
}

static void make_table(void)
{
	/* losses and rates as a float32 model computes them, widened */
	for (int i = 0; i < TAB_N; i++)
		tab[i] = (double)(float)(2.5 * exp(-i / 700.0) + 0.01 * sin(i * 0.37));
}

static void paths(char *seg, size_t slen, char *out, size_t olen, char *err, size_t elen)
{
	unsigned n = ++run_counter;

	snprintf(seg, slen, "%s/bench_drain-%d-%u", shm_dir, (int)getpid(), n);
	snprintf(out, olen, "%s/bench_drain-%d-%u.jsonl", out_dir, (int)getpid(), n);
	snprintf(err, elen, "%s/bench_drain-%d-%u.err", out_dir, (int)getpid(), n);
	unlink(seg);
	unlink(out);
}

static void cleanup(const char *seg, const char *out, const char *err)
{
	char state[4200];

	snprintf(state, sizeof(state), "%s.mring-state", out);
	unlink(seg);
	unlink(out);
	unlink(state);
	unlink(err);
}

/* Start `tool drain ARGS...` pinned to the drain CPU, stderr into errpath. */
static pid_t spawn_drain(const char *tool, const char *errpath, const char *const *args)
{
	const char *argv[16];
	int n = 0;
	pid_t pid;

	argv[n++] = tool;
	argv[n++] = "drain";
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		die("fork", errno);
	if (pid == 0) {
		int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int nul = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (fd >= 0)
			dup2(fd, 2);
		if (nul >= 0)
			dup2(nul, 1);
		pin(cpu_drain);
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/*
 * Wait for the drain to exit (polling every 100 us, so that its exit time
 * is known to 0.1 ms); kill it after the timeout.  Returns its exit status
 * (128+N for signal N, -1 on timeout) and the time it was seen gone.
 */
static int wait_drain(pid_t pid, double timeout_s, double *t_exit)
{
	double deadline = now_s() + timeout_s;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid) {
			*t_exit = now_s();
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		if (r < 0 && errno != EINTR)
			die("waitpid", errno);
		if (now_s() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			*t_exit = now_s();
			return -1;
		}
		sleep_us(100);
	}
}

/* "mring drain: E events, R rows, L lost, 1 segment" from its stderr */
struct summary {
	long long events, rows, lost;
	int ok;
	char first_err[200];
};

static void read_summary(const char *errpath, struct summary *s)
{
	FILE *f = fopen(errpath, "r");
	char line[512];

	memset(s, 0, sizeof(*s));
	s->events = s->rows = s->lost = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "mring drain: %lld events, %lld rows, %lld lost",
			   &s->events, &s->rows, &s->lost) == 3)
			s->ok = 1;
		else if (!s->first_err[0]) {
			line[strcspn(line, "\n")] = 0;
			line[sizeof(s->first_err) - 1] = 0;
			memcpy(s->first_err, line, strlen(line) + 1);
		}
	}
	fclose(f);
}

/* Lines in a file, and the "step" of its last line (-1 if none). */
static long long count_lines(const char *path, long long *last_step, long long *bytes)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	long long lines = 0;
	const char *p, *end, *q;

	*last_step = -1;
	*bytes = -1;
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -1;
	}
	*bytes = st.st_size;
	if (st.st_size == 0) {
		close(fd);
		return 0;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	end = p + st.st_size;
	for (q = p; (q = memchr(q, '\n', (size_t)(end - q))); q++)
		lines++;
	/* last line: search back for "step": */
	q = end - 1;
	if (*q == '\n')
		q--;
	while (q > p && q[-1] != '\n')
		q--;
	{
		const char *k = memmem(q, (size_t)(end - q), "\"step\": ", 8);

		if (k)
			*last_step = strtoll(k + 8, NULL, 10);
	}
	munmap((void *)p, (size_t)st.st_size);
	return lines;
}

static struct mring_writer *open_producer(const char *seg, uint64_t cap, int on_full,
					  int nmetrics, int *ids, const char *prefix)
{
	struct mring_config cfg = { .capacity = cap, .on_full = on_full,
				    .run = "bench_drain", .flags = MRING_CFG_REPLACE };
	struct mring_writer *w;
	char name[32];
	int ret = mring_writer_open(seg, &cfg, &w);

	if (ret < 0)
		die(seg, ret);
	for (int i = 0; i < nmetrics; i++) {
		snprintf(name, sizeof(name), nmetrics > 1 ? "%s%02d" : "%s", prefix, i);
		ids[i] = mring_metric(w, name, MRING_ON_STEP);
		if (ids[i] < 0)
			die("mring_metric", ids[i]);
	}
	return w;
}

/* Until a drainer holds the segment (the drain polls for it every 50 ms). */
static int wait_drainer(struct mring_reader *obs, pid_t drain, double timeout_s)
{
	double deadline = now_s() + timeout_s;
	struct mring_status st;
	int wst;

	for (;;) {
		if (mring_status_read(obs, &st) == 0 && st.drainer)
			return 0;
		if (waitpid(drain, &wst, WNOHANG) == drain) {
			fprintf(stderr, "bench_drain: the drain exited before attaching\n");
			return -1;
		}
		if (now_s() > deadline) {
			fprintf(stderr, "bench_drain: no drainer attached after %.0f s\n", timeout_s);
			kill(drain, SIGKILL);
			waitpid(drain, &wst, 0);
			return -1;
		}
		sleep_us(200);
	}
}

/* ---- case 1: flat out with the drain attached ----------------------------- */

static volatile sig_atomic_t time_up;

static void on_alarm(int sig)
{
	(void)sig;
	time_up = 1;
}

static void arm_timer(double s)	/* 0: disarm */
{
	struct itimerval it = { { 0, 0 }, { (time_t)s, (suseconds_t)((s - floor(s)) * 1e6) } };

	if (setitimer(ITIMER_REAL, &it, NULL) < 0)
		die("setitimer", errno);
}

struct flat_res {
	double ev_s, steps_s, prod_s, drain_s, drain_ev_s, tail_ms;
	uint64_t written, dropped;
	int valid;
};

static void run_flat(const struct tool *t, uint64_t cap, uint64_t target, double max_s,
		     int rep, struct flat_res *res)
{
	char seg[4096], out[4096], err[4096];
	const char *args[] = { "--wait", "--follow", "--jsonl", out, seg, NULL };
	int ids[NVAL], log_fail = 0, rc, stopped_by_time = 0;
	struct mring_reader *obs;
	struct mring_writer *w;
	struct mring_status st;
	struct summary sm;
	long long lines, last_step, bytes;
	double t0, t1, t_exit;
	uint64_t s = 0;
	pid_t pid;

	memset(res, 0, sizeof(*res));
	paths(seg, sizeof(seg), out, sizeof(out), err, sizeof(err));
	pid = spawn_drain(t->path, err, args);	/* first: it waits for the segment */
	w = open_producer(seg, cap, MRING_FULL_WAIT, NVAL, ids, "m");
	if ((rc = mring_reader_open(seg, MRING_OBSERVE, &obs)) < 0)
		die("observer", rc);
	if (wait_drainer(obs, pid, 20.0) < 0) {
		invalid_runs++;
		mring_writer_close(w);
		mring_reader_close(obs);
		cleanup(seg, out, err);
		return;
	}

	/*
	 * The time limit is a flag set by SIGALRM, tested after every step: a
	 * producer that is waiting for the drain when time is up stops right
	 * after it is let go, so a run covers whole wait cycles and the ring's
	 * free first fill is not counted as rate.
	 */
	time_up = 0;
	t0 = now_s();
	arm_timer(max_s);
	for (;;) {
		const double *v = &tab[(s * NVAL) % TAB_N];

		mring_step(w, s);
		for (int i = 0; i < NVAL; i++)
			log_fail |= mring_log(w, ids[i], v[i]);
		s++;
		if (s * EV_PER_STEP >= target)
			break;
		if (time_up) {
			stopped_by_time = 1;
			break;
		}
	}
	t1 = now_s();
	arm_timer(0);
	mring_status_read(obs, &st);
	mring_writer_close(w);
	rc = wait_drain(pid, drain_timeout_s, &t_exit);
	mring_reader_close(obs);

	read_summary(err, &sm);
	lines = count_lines(out, &last_step, &bytes);
	res->written = s * EV_PER_STEP;	/* events (the ring holds s more slots: STEPs) */
	res->dropped = st.dropped;
	res->prod_s = t1 - t0;
	res->ev_s = (double)(s * EV_PER_STEP) / res->prod_s;
	res->steps_s = (double)s / res->prod_s;
	res->drain_s = t_exit - t0;
	res->drain_ev_s = (double)(s * EV_PER_STEP) / res->drain_s;
	res->tail_ms = (t_exit - t1) * 1e3;
	res->valid = st.dropped == 0 && !log_fail && rc == 0 && sm.ok &&
		     st.written == s * SLOTS_PER_STEP && (uint64_t)sm.events == s * EV_PER_STEP &&
		     sm.lost == 0 && lines == sm.rows && last_step == (long long)(s - 1);
	if (!res->valid)
		invalid_runs++;
	printf("RUN tool=%s case=flat cap=%" PRIu64 " rep=%d steps=%" PRIu64 " events=%" PRIu64
	       " stopped_by=%s prod_s=%.3f ev_s=%.0f steps_s=%.1f drain_s=%.3f drain_ev_s=%.0f"
	       " tail_ms=%.1f written=%" PRIu64 " dropped=%" PRIu64 " log_fail=%d drain_rc=%d"
	       " drain_events=%lld drain_rows=%lld drain_lost=%lld file_lines=%lld"
	       " file_bytes=%lld last_step=%lld valid=%d%s%s\n",
	       t->label, cap, rep, s, s * EV_PER_STEP, stopped_by_time ? "time" : "count",
	       res->prod_s, res->ev_s, res->steps_s, res->drain_s, res->drain_ev_s,
	       res->tail_ms, st.written, st.dropped, log_fail ? 1 : 0, rc, sm.events,
	       sm.rows, sm.lost, lines, bytes, last_step, res->valid,
	       sm.first_err[0] ? " drain_stderr=" : "", sm.first_err);
	fflush(stdout);
	cleanup(seg, out, err);
}

/* ---- case 2: the sink's own rate ---------------------------------------- */

struct sink_res {
	double ev_s, drain_s;
	int valid;
};

static void run_sink(const struct tool *t, uint64_t nev, int rep, struct sink_res *res)
{
	char seg[4096], out[4096], err[4096];
	const char *args[] = { "--jsonl", out, seg, NULL };
	int ids[NVAL], log_fail = 0, rc;
	uint64_t cap = 1024, steps = nev / EV_PER_STEP, written;
	struct mring_reader *obs;
	struct mring_writer *w;
	struct mring_status st;
	struct summary sm;
	long long lines, last_step, bytes;
	double t0, t_exit;
	pid_t pid;

	memset(res, 0, sizeof(*res));
	while (cap < steps * SLOTS_PER_STEP + 16)
		cap <<= 1;
	paths(seg, sizeof(seg), out, sizeof(out), err, sizeof(err));
	w = open_producer(seg, cap, MRING_FULL_DROP, NVAL, ids, "m");
	for (uint64_t s = 0; s < steps; s++) {
		const double *v = &tab[(s * NVAL) % TAB_N];

		mring_step(w, s);
		for (int i = 0; i < NVAL; i++)
			log_fail |= mring_log(w, ids[i], v[i]);
	}
	if ((rc = mring_reader_open(seg, MRING_OBSERVE, &obs)) < 0)
		die("observer", rc);
	mring_writer_close(w);
	mring_status_read(obs, &st);
	mring_reader_close(obs);
	written = steps * EV_PER_STEP;		/* events; the ring holds more slots */

	t0 = now_s();
	pid = spawn_drain(t->path, err, args);
	rc = wait_drain(pid, drain_timeout_s, &t_exit);
	read_summary(err, &sm);
	lines = count_lines(out, &last_step, &bytes);
	res->drain_s = t_exit - t0;
	res->ev_s = (double)written / res->drain_s;
	res->valid = !log_fail && st.dropped == 0 && rc == 0 && sm.ok &&
		     st.written == steps * SLOTS_PER_STEP && (uint64_t)sm.events == written &&
		     sm.lost == 0 && lines == sm.rows && last_step == (long long)(steps - 1);
	if (!res->valid)
		invalid_runs++;
	printf("RUN tool=%s case=sink rep=%d events=%" PRIu64 " ring=%" PRIu64
	       " drain_s=%.3f ev_s=%.0f drain_rc=%d drain_events=%lld drain_rows=%lld"
	       " file_lines=%lld file_bytes=%lld valid=%d%s%s\n",
	       t->label, rep, written, cap, res->drain_s, res->ev_s, rc, sm.events, sm.rows,
	       lines, bytes, res->valid, sm.first_err[0] ? " drain_stderr=" : "", sm.first_err);
	fflush(stdout);
	cleanup(seg, out, err);
}

/* ---- case 3: from mring_log to the line in the file ----------------------- */

struct lat_poller {
	const char *path;
	uint64_t nsteps;
	double *appear;		/* [nsteps + 1], 0 = not seen */
	atomic_int stop;
	long long lines, bad_lines;
};

static void *lat_poll(void *arg)
{
	struct lat_poller *p = arg;
	size_t cap = 1 << 20, have = 0;
	char *buf = malloc(cap);
	off_t off = 0;
	int fd = -1, last_round = 0;

	if (!buf)
		die("malloc", ENOMEM);
	pin(cpu_prod);
	for (;;) {
		struct stat st;
		int stopping = atomic_load(&p->stop);

		if (fd < 0)
			fd = open(p->path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > off) {
			double t = now_s();	/* the poll that saw the bytes */

			while (st.st_size > off) {
				size_t want = (size_t)(st.st_size - off);
				ssize_t n;

				if (have + want > cap) {
					while (have + want > cap)
						cap *= 2;
					buf = realloc(buf, cap);
					if (!buf)
						die("realloc", ENOMEM);
				}
				n = pread(fd, buf + have, want, off);
				if (n <= 0)
					break;
				have += (size_t)n;
				off += n;
			}
			/* every complete line */
			char *ln = buf, *nl;

			while ((nl = memchr(ln, '\n', have - (size_t)(ln - buf)))) {
				const char *k = memmem(ln, (size_t)(nl - ln), "\"step\": ", 8);
				const char *v = memmem(ln, (size_t)(nl - ln), "\"lat\": ", 7);

				p->lines++;
				if (k && v) {
					unsigned long long s = strtoull(k + 8, NULL, 10);

					if (s <= p->nsteps && p->appear[s] == 0)
						p->appear[s] = t;
				} else {
					p->bad_lines++;
				}
				ln = nl + 1;
			}
			have -= (size_t)(ln - buf);
			memmove(buf, ln, have);
		}
		if (last_round)
			break;
		if (stopping)
			last_round = 1;	/* one more read after the drain exited */
		else
			sleep_us(lat_poll_us);
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

struct lat_res {
	double q_log[4], q_end[4];	/* median, p90, p99, max, ms */
	long long missing;
	int valid;
};

static void run_latency(const struct tool *t, int rep, struct lat_res *res)
{
	char seg[4096], out[4096], err[4096];
	const char *args[] = { "--wait", "--follow", "--jsonl", out, seg, NULL };
	uint64_t n = lat_steps;
	double *t_log = calloc(n + 1, sizeof(double)), *t_end = calloc(n + 1, sizeof(double));
	double *d_log = calloc(n, sizeof(double)), *d_end = calloc(n, sizeof(double));
	struct lat_poller p = { .path = out, .nsteps = n, .appear = calloc(n + 1, sizeof(double)) };
	struct mring_reader *obs;
	struct mring_writer *w;
	struct mring_status st;
	struct summary sm;
	struct timespec next;
	pthread_t th;
	double t_exit, late_ms = 0;
	int id, rc, log_fail = 0;
	size_t nd = 0;
	pid_t pid;

	if (!t_log || !t_end || !d_log || !d_end || !p.appear)
		die("calloc", ENOMEM);
	memset(res, 0, sizeof(*res));
	paths(seg, sizeof(seg), out, sizeof(out), err, sizeof(err));
	pid = spawn_drain(t->path, err, args);
	w = open_producer(seg, 0, MRING_FULL_WAIT, 1, &id, "lat");
	if ((rc = mring_reader_open(seg, MRING_OBSERVE, &obs)) < 0)
		die("observer", rc);
	if (wait_drainer(obs, pid, 20.0) < 0) {
		invalid_runs++;
		mring_writer_close(w);
		mring_reader_close(obs);
		cleanup(seg, out, err);
		return;
	}
	if ((rc = pthread_create(&th, NULL, lat_poll, &p)) != 0)
		die("pthread_create", rc);

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (uint64_t s = 0; s <= n; s++) {
		double tw;

		next.tv_nsec += lat_period_us * 1000;
		while (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		tw = now_s();
		late_ms = fmax(late_ms, (tw - ((double)next.tv_sec + next.tv_nsec * 1e-9)) * 1e3);
		if (s > 0)
			t_end[s - 1] = tw;	/* step s - 1 ends here */
		mring_step(w, s);
		t_log[s] = now_s();
		log_fail |= mring_log(w, id, (double)s);
	}
	sleep_us(lat_period_us);
	mring_status_read(obs, &st);
	mring_writer_close(w);
	rc = wait_drain(pid, drain_timeout_s, &t_exit);
	mring_reader_close(obs);
	atomic_store(&p.stop, 1);
	pthread_join(th, NULL);
	read_summary(err, &sm);

	for (uint64_t s = 0; s < n; s++) {
		if (p.appear[s] == 0) {
			res->missing++;
			continue;
		}
		d_log[nd] = (p.appear[s] - t_log[s]) * 1e3;
		d_end[nd] = (p.appear[s] - t_end[s]) * 1e3;
		nd++;
	}
	{
		const double qs[4] = { 0.5, 0.9, 0.99, 1.0 };

		for (int i = 0; i < 4; i++) {
			res->q_log[i] = quantile(d_log, nd, qs[i]);
			res->q_end[i] = quantile(d_end, nd, qs[i]);
		}
	}
	res->valid = res->missing == 0 && st.dropped == 0 && !log_fail && rc == 0 &&
		     sm.ok && sm.lost == 0;
	if (!res->valid)
		invalid_runs++;
	printf("RUN tool=%s case=latency rep=%d steps=%" PRIu64 " period_us=%ld"
	       " from_log_ms=%.3f/%.3f/%.3f/%.3f from_step_end_ms=%.3f/%.3f/%.3f/%.3f"
	       " (median/p90/p99/max) missing=%lld lines=%lld lines_without_lat=%lld dropped=%" PRIu64
	       " drain_rc=%d drain_rows=%lld max_sleep_overshoot_ms=%.3f valid=%d%s%s\n",
	       t->label, rep, n, lat_period_us, res->q_log[0], res->q_log[1], res->q_log[2],
	       res->q_log[3], res->q_end[0], res->q_end[1], res->q_end[2], res->q_end[3],
	       res->missing, p.lines, p.bad_lines, st.dropped, rc, sm.rows, late_ms, res->valid,
	       sm.first_err[0] ? " drain_stderr=" : "", sm.first_err);
	fflush(stdout);
	cleanup(seg, out, err);
	free(t_log);
	free(t_end);
	free(d_log);
	free(d_end);
	free(p.appear);
}

/* ---- main ------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr, "usage: bench_drain --mring [LABEL=]PATH [--mring ...] [--reps N] [--quick]\n"
		"                   [--dir DIR] [--shm DIR] [--only flat|sink|latency] [--no-pin]\n"
		"                   [--sink-events N]\n");
	exit(2);
}

/* per tool, per rep */
static struct flat_res flat[MAX_TOOLS][NCAPS][MAX_REPS];
static struct sink_res sinkr[MAX_TOOLS][MAX_REPS];
static struct lat_res latr[MAX_TOOLS][MAX_REPS];

#define MED(expr) ({ double _v[MAX_REPS]; for (int _r = 0; _r < reps; _r++) _v[_r] = (expr); median_of(_v, reps); })

static int count_valid_flat(int ti, int c, int reps)
{
	int n = 0;

	for (int r = 0; r < reps; r++)
		n += flat[ti][c][r].valid;
	return n;
}

int main(int argc, char **argv)
{
	int reps = 3, pin_ok = 1, quick = 0;
	uint64_t sink_events_opt = 0;
	const char *only = NULL;
	double t_start = now_s();

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--mring") && i + 1 < argc) {
			char *v = argv[++i], *eq = strchr(v, '=');

			if (ntools == MAX_TOOLS)
				usage();
			if (eq && eq != v && v[0] != '/' && v[0] != '.') {
				*eq = 0;
				tools[ntools].label = v;
				tools[ntools].path = eq + 1;
			} else {
				static char lab[MAX_TOOLS][16];

				snprintf(lab[ntools], sizeof(lab[0]), "tool%d", ntools + 1);
				tools[ntools].label = lab[ntools];
				tools[ntools].path = v;
			}
			ntools++;
		} else if (!strcmp(a, "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
			if (reps < 1 || reps > MAX_REPS)
				usage();
		} else if (!strcmp(a, "--quick")) {
			quick = 1;
		} else if (!strcmp(a, "--dir") && i + 1 < argc) {
			out_dir = argv[++i];
		} else if (!strcmp(a, "--shm") && i + 1 < argc) {
			shm_dir = argv[++i];
		} else if (!strcmp(a, "--only") && i + 1 < argc) {
			only = argv[++i];
		} else if (!strcmp(a, "--sink-events") && i + 1 < argc) {
			sink_events_opt = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(a, "--no-pin")) {
			pin_ok = 0;
		} else {
			usage();
		}
	}
	if (ntools == 0)
		usage();
	for (int i = 0; i < ntools; i++)
		if (access(tools[i].path, X_OK) != 0)
			die(tools[i].path, errno);
	if (quick) {
		flat_events_big = 10000000;
		flat_max_s_big = 2.0;
		flat_events_small = 4000000;
		flat_max_s_small = 1.0;
		sink_events = 10000000;
		lat_steps = 500;
	}
	if (sink_events_opt)
		sink_events = sink_events_opt;
	signal(SIGPIPE, SIG_IGN);
	{
		struct sigaction sa = { .sa_handler = on_alarm };

		sigemptyset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART;
		sigaction(SIGALRM, &sa, NULL);
	}
	make_table();
	if (pin_ok)
		choose_cpus();
	pin(cpu_prod);

	int do_flat = !only || !strcmp(only, "flat");
	int do_sink = !only || !strcmp(only, "sink");
	int do_lat = !only || !strcmp(only, "latency");

	printf("INFO bench_drain: %d reps (tools alternate inside each rep); producer cpu %d, drain cpu %d%s\n",
	       reps, cpu_prod, cpu_drain, cpu_prod < 0 ? " (not pinned)" : "");
	printf("INFO segments in %s, output files in %s\n", shm_dir, out_dir);
	printf("INFO flat: per step mring_step + %d mring_log = %d events; WAIT mode; stop at %" PRIu64
	       " events or %.1f s (2^20 ring), %" PRIu64 " events or %.1f s (4096, 1024 rings)\n",
	       NVAL, EV_PER_STEP, flat_events_big, flat_max_s_big, flat_events_small, flat_max_s_small);
	for (int i = 0; i < ntools; i++)
		printf("INFO tool %s = %s\n", tools[i].label, tools[i].path);
	fflush(stdout);

	for (int r = 0; r < reps; r++) {
		for (int ti = 0; ti < ntools; ti++) {
			int tt = (ti + r) % ntools;	/* rotate which tool goes first */

			if (do_flat)
				for (int c = 0; c < NCAPS; c++)
					run_flat(&tools[tt], caps[c], c ? flat_events_small : flat_events_big,
						 c ? flat_max_s_small : flat_max_s_big, r, &flat[tt][c][r]);
			if (do_sink)
				run_sink(&tools[tt], sink_events, r, &sinkr[tt][r]);
			if (do_lat)
				run_latency(&tools[tt], r, &latr[tt][r]);
		}
	}

	/* ---- the table ---- */
	printf("\nmring drain under a WAIT-mode producer (issue 11): median of %d runs per cell\n", reps);
	printf("%-62s", "");
	for (int ti = 0; ti < ntools; ti++)
		printf(" %18s", tools[ti].label);
	printf("\n");
#define ROWF(name, fmt, expr) do {						\
		printf("  %-60s", name);					\
		for (int ti = 0; ti < ntools; ti++) {				\
			double _m = MED(expr);					\
			printf(" %18" fmt, _m);				\
		}								\
		printf("\n");							\
	} while (0)
#define ROWR(name, expr) do {						\
		printf("  %-60s", name);					\
		for (int ti = 0; ti < ntools; ti++) {				\
			double _lo = INFINITY, _hi = -INFINITY;			\
			char _b[64];						\
									\
			for (int r = 0; r < reps; r++) {			\
				_lo = fmin(_lo, (expr));			\
				_hi = fmax(_hi, (expr));			\
			}							\
			snprintf(_b, sizeof(_b), "%.0f-%.0f", _lo, _hi);	\
			printf(" %18s", _b);					\
		}								\
		printf("\n");							\
	} while (0)
	if (do_flat) {
		printf("1. producer flat out (step + 16 values), WAIT, `drain --wait --follow --jsonl` attached\n");
		for (int c = 0; c < NCAPS; c++) {
			char nm[96];
			const char *capname = c == 0 ? "2^20" : c == 1 ? "4096" : "1024";

			snprintf(nm, sizeof(nm), "ring %s: producer events/s", capname);
			ROWF(nm, ".0f", flat[ti][c][_r].ev_s);
			snprintf(nm, sizeof(nm), "ring %s:   range over the runs (min-max)", capname);
			ROWR(nm, flat[ti][c][r].ev_s);
			snprintf(nm, sizeof(nm), "ring %s: producer steps/s", capname);
			ROWF(nm, ".0f", flat[ti][c][_r].steps_s);
			snprintf(nm, sizeof(nm), "ring %s: events written (stopped at count or time limit)", capname);
			ROWF(nm, ".0f", (double)flat[ti][c][_r].written);
			snprintf(nm, sizeof(nm), "ring %s: drain wall s, first record -> exit, file complete", capname);
			ROWF(nm, ".3f", flat[ti][c][_r].drain_s);
			snprintf(nm, sizeof(nm), "ring %s: drain events/s over that time", capname);
			ROWF(nm, ".0f", flat[ti][c][_r].drain_ev_s);
			snprintf(nm, sizeof(nm), "ring %s: drain tail after producer close, ms", capname);
			ROWF(nm, ".1f", flat[ti][c][_r].tail_ms);
			snprintf(nm, sizeof(nm), "ring %s: producer dropped (max over runs; must be 0)", capname);
			printf("  %-60s", nm);
			for (int ti = 0; ti < ntools; ti++) {
				uint64_t mx = 0;

				for (int r = 0; r < reps; r++)
					mx = flat[ti][c][r].dropped > mx ? flat[ti][c][r].dropped : mx;
				printf(" %18" PRIu64, mx);
			}
			printf("\n");
			snprintf(nm, sizeof(nm), "ring %s: valid runs", capname);
			printf("  %-60s", nm);
			for (int ti = 0; ti < ntools; ti++)
				printf(" %15d/%-2d", count_valid_flat(ti, c, reps), reps);
			printf("\n");
		}
	}
	if (do_sink) {
		printf("2. the sink's own rate: `drain --jsonl` of a closed segment, %" PRIu64 " events, no producer\n",
		       sink_events / EV_PER_STEP * EV_PER_STEP);
		ROWF("drain events/s (exec to exit, final fsync included)", ".0f", sinkr[ti][_r].ev_s);
		ROWR("  range over the runs (min-max)", sinkr[ti][r].ev_s);
		ROWF("drain wall s", ".3f", sinkr[ti][_r].drain_s);
	}
	if (do_lat) {
		printf("3. mring_log of step s -> complete line of step s in the JSONL file, ms\n"
		       "   (%" PRIu64 " steps, one every %ld us, 1 value each, WAIT, default ring; file polled every %ld us;\n"
		       "    per run median/p90/p99/max over the steps, then the median of that over the runs)\n",
		       lat_steps, lat_period_us, lat_poll_us);
		ROWF("from the mring_log call of step s: median", ".3f", latr[ti][_r].q_log[0]);
		ROWF("from the mring_log call of step s: p90", ".3f", latr[ti][_r].q_log[1]);
		ROWF("from the mring_log call of step s: p99", ".3f", latr[ti][_r].q_log[2]);
		ROWF("from the mring_log call of step s: max", ".3f", latr[ti][_r].q_log[3]);
		ROWF("from the end of step s (mring_step(s+1)): median", ".3f", latr[ti][_r].q_end[0]);
		ROWF("from the end of step s (mring_step(s+1)): p90", ".3f", latr[ti][_r].q_end[1]);
		ROWF("from the end of step s (mring_step(s+1)): p99", ".3f", latr[ti][_r].q_end[2]);
		ROWF("from the end of step s (mring_step(s+1)): max", ".3f", latr[ti][_r].q_end[3]);
	}

	/* ---- key value lines ---- */
	printf("\n");
	for (int ti = 0; ti < ntools; ti++) {
		const char *L = tools[ti].label;

		if (do_flat)
			for (int c = 0; c < NCAPS; c++) {
				printf("%s.flat.cap%" PRIu64 ".producer_events_per_s %.0f\n", L, caps[c], MED(flat[ti][c][_r].ev_s));
				printf("%s.flat.cap%" PRIu64 ".producer_steps_per_s %.1f\n", L, caps[c], MED(flat[ti][c][_r].steps_s));
				printf("%s.flat.cap%" PRIu64 ".events %.0f\n", L, caps[c], MED((double)flat[ti][c][_r].written));
				printf("%s.flat.cap%" PRIu64 ".drain_wall_s %.3f\n", L, caps[c], MED(flat[ti][c][_r].drain_s));
				printf("%s.flat.cap%" PRIu64 ".drain_events_per_s %.0f\n", L, caps[c], MED(flat[ti][c][_r].drain_ev_s));
				printf("%s.flat.cap%" PRIu64 ".drain_tail_ms %.1f\n", L, caps[c], MED(flat[ti][c][_r].tail_ms));
				printf("%s.flat.cap%" PRIu64 ".valid_runs %d\n", L, caps[c], count_valid_flat(ti, c, reps));
			}
		if (do_sink) {
			printf("%s.sink.events_per_s %.0f\n", L, MED(sinkr[ti][_r].ev_s));
			printf("%s.sink.wall_s %.3f\n", L, MED(sinkr[ti][_r].drain_s));
		}
		if (do_lat) {
			static const char *qn[4] = { "median", "p90", "p99", "max" };

			for (int q = 0; q < 4; q++)
				printf("%s.latency.from_log_ms.%s %.3f\n", L, qn[q], MED(latr[ti][_r].q_log[q]));
			for (int q = 0; q < 4; q++)
				printf("%s.latency.from_step_end_ms.%s %.3f\n", L, qn[q], MED(latr[ti][_r].q_end[q]));
		}
	}
	printf("\nbench_drain: %.0f s; %s\n", now_s() - t_start,
	       invalid_runs ? "SOME RUNS INVALID (see RUN lines, valid=0)" : "every run valid");
	return invalid_runs ? 1 : 0;
}
