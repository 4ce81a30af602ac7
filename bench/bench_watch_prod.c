// SPDX-License-Identifier: MIT
/*
 * bench_watch_prod.c - producers for bench/watch.py, the benchmark of
 * `mring watch` (docs/watch.md).  Three modes; each prints "ready" once its
 * segments exist and every value it logs is a float32 widened to double,
 * as a training loop logs them.  Segments are created with
 * MRING_CFG_REPLACE (a bare name goes into $MRING_DIR).
 *
 *   bench_watch_prod flat SEG STEPS VALUES drop|overwrite CAPACITY [CHUNKS]
 *       VALUES ON_STEP metrics "m00", "m01", ...; after "ready" it waits
 *       for a line on stdin, then logs flat out: for s in 1..STEPS
 *       mring_step(s) and one mring_log per metric, timed with
 *       CLOCK_MONOTONIC; prints
 *         result ns=LOOP_NS steps=S values=V ok=N dropped=N errors=N
 *       (ok/dropped/errors: mring_log returns 0 / -ENOBUFS / other), then
 *       closes the segment and exits.  With CHUNKS > 1 the steps are
 *       logged in that many chunks of STEPS / CHUNKS steps; each waits
 *       for a line on stdin and is followed by
 *         chunk I ns=CHUNK_NS
 *
 *   bench_watch_prod many N RUNS RATE VALUES step|stall|close CAPACITY
 *       One process holding N writers, "w-RR-KK" with run name "runRR"
 *       and rank KK (N / RUNS ranks per run), each with "loss"
 *       (ON_STEP|ON_EPOCH) and VALUES - 1 ON_STEP metrics, all at step 0
 *       with one value each.  Then
 *         step   every 1/RATE s (absolute sleeps) each writer steps and
 *                logs VALUES values (an epoch ends every 1000 steps);
 *         stall  nothing more: alive producers that stopped stepping;
 *         close  every writer is closed (clean close; the files stay).
 *       Runs until stdin reaches EOF, then closes what is still open.
 *
 *   bench_watch_prod nan SEG COUNT STEP_US GAP_MIN_MS GAP_MAX_MS SEED
 *       Metrics "loss" (ON_STEP|ON_EPOCH), "lr", "gnorm", "tok_s"
 *       (ON_STEP).  After "ready" it waits for a line on stdin, then steps
 *       every STEP_US (absolute sleeps), logging finite values; COUNT
 *       times, after a gap drawn uniformly from [GAP_MIN_MS, GAP_MAX_MS]
 *       (drand48, SEED), "loss" is NaN for one step:
 *         nan STEP REALTIME_NS
 *       REALTIME_NS is CLOCK_REALTIME read right after that mring_log
 *       returned (the record is visible to readers from then on).  The
 *       next step logs a finite loss again.  After the last one it steps
 *       on for GAP_MAX_MS, prints "done", closes and exits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mring.h>

#define MAX_VALUES	64
#define MAX_WRITERS	1024

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_watch_prod: %s: %s\n", what, mring_strerror(err));
	exit(1);
}

static int64_t clock_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t mono_ns)
{
	struct timespec ts = { mono_ns / 1000000000, mono_ns % 1000000000 };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void ready(void)
{
	printf("ready\n");
	fflush(stdout);
}

static void wait_line(void)
{
	char buf[64];

	if (!fgets(buf, sizeof(buf), stdin))
		exit(0);	/* the bench went away */
}

/* stdin at EOF (the bench closed it or died)? timeout_ms -1: wait for it */
static int stdin_eof(int timeout_ms)
{
	struct pollfd p = { .fd = 0, .events = POLLIN };
	char buf[256];

	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	return read(0, buf, sizeof(buf)) <= 0;
}

static struct mring_writer *open_seg(const char *path, int on_full, uint64_t cap,
				     const char *run, int rank)
{
	struct mring_config cfg = { .flags = MRING_CFG_REPLACE, .on_full = on_full,
				    .capacity = cap, .run = run, .rank = rank };
	struct mring_writer *w;
	int ret = mring_writer_open(path, &cfg, &w);

	if (ret < 0)
		die(path, ret);
	return w;
}

static int metric(struct mring_writer *w, const char *name, unsigned flags)
{
	int id = mring_metric(w, name, flags);

	if (id < 0)
		die(name, id);
	return id;
}

static int cmd_flat(char **argv)
{
	uint64_t steps = strtoull(argv[1], NULL, 10);
	int nvals = atoi(argv[2]);
	int on_full = !strcmp(argv[3], "overwrite") ? MRING_FULL_OVERWRITE : MRING_FULL_DROP;
	struct mring_writer *w;
	uint64_t ok = 0, dropped = 0, errors = 0, s = 1;
	uint64_t chunks = argv[5] ? strtoull(argv[5], NULL, 10) : 1;
	int ids[MAX_VALUES];
	int64_t total = 0;

	if (nvals < 1 || nvals > MAX_VALUES || chunks < 1 || chunks > steps)
		die("VALUES", -EINVAL);
	w = open_seg(argv[0], on_full, strtoull(argv[4], NULL, 10), NULL, 0);
	for (int i = 0; i < nvals; i++) {
		char name[16];

		snprintf(name, sizeof(name), "m%02d", i);
		ids[i] = metric(w, name, MRING_ON_STEP);
	}
	mring_step(w, 0);
	for (int i = 0; i < nvals; i++)
		mring_log(w, ids[i], 0.5);
	mring_flush(w);
	ready();
	for (uint64_t c = 0; c < chunks; c++) {
		uint64_t end = c + 1 == chunks ? steps : (c + 1) * (steps / chunks);
		int64_t t0, t1;

		wait_line();
		t0 = clock_ns(CLOCK_MONOTONIC);
		for (; s <= end; s++) {
			float base = (float)(s & 1023) * 0.001f;

			mring_step(w, s);
			for (int i = 0; i < nvals; i++) {
				int ret = mring_log(w, ids[i], (double)(base + (float)i));

				if (mring_likely(ret == 0))
					ok++;
				else if (ret == -ENOBUFS)
					dropped++;
				else
					errors++;
			}
		}
		t1 = clock_ns(CLOCK_MONOTONIC);
		total += t1 - t0;
		if (chunks > 1) {
			printf("chunk %" PRIu64 " ns=%" PRId64 "\n", c, t1 - t0);
			fflush(stdout);
		}
	}
	printf("result ns=%" PRId64 " steps=%" PRIu64 " values=%" PRIu64 " ok=%" PRIu64
	       " dropped=%" PRIu64 " errors=%" PRIu64 "\n", total, steps,
	       steps * (uint64_t)nvals, ok, dropped, errors);
	fflush(stdout);
	return mring_writer_close(w) != 0;
}

static int cmd_many(char **argv)
{
	int n = atoi(argv[0]), runs = atoi(argv[1]);
	double rate = atof(argv[2]);
	int nvals = atoi(argv[3]);
	const char *mode = argv[4];
	uint64_t cap = strtoull(argv[5], NULL, 10);
	static struct mring_writer *w[MAX_WRITERS];
	static int ids[MAX_WRITERS][MAX_VALUES];
	int per_run;

	if (n < 1 || n > MAX_WRITERS || runs < 1 || runs > n || nvals < 1 ||
	    nvals > MAX_VALUES || rate <= 0)
		die("arguments", -EINVAL);
	per_run = (n + runs - 1) / runs;
	for (int k = 0; k < n; k++) {
		char path[64], run[32];

		snprintf(run, sizeof(run), "run%02d", k / per_run);
		snprintf(path, sizeof(path), "w-%02d-%02d", k / per_run, k % per_run);
		w[k] = open_seg(path, MRING_FULL_OVERWRITE, cap, run, k % per_run);
		ids[k][0] = metric(w[k], "loss", MRING_ON_STEP | MRING_ON_EPOCH);
		for (int i = 1; i < nvals; i++) {
			char name[16];

			snprintf(name, sizeof(name), "v%02d", i);
			ids[k][i] = metric(w[k], name, MRING_ON_STEP);
		}
		mring_step(w[k], 0);
		for (int i = 0; i < nvals; i++)
			mring_log(w[k], ids[k][i], 1.0 + i);
		mring_flush(w[k]);
	}
	if (!strcmp(mode, "close")) {
		for (int k = 0; k < n; k++) {
			mring_writer_close(w[k]);
			w[k] = NULL;
		}
	}
	ready();
	if (!strcmp(mode, "step")) {
		int64_t period = (int64_t)(1e9 / rate), next = clock_ns(CLOCK_MONOTONIC);

		for (uint64_t s = 1; !stdin_eof(0); s++) {
			next += period;
			sleep_until(next);
			for (int k = 0; k < n; k++) {
				float base = 2.0f + (float)(s % 997) * 0.001f;

				mring_step(w[k], s);
				for (int i = 0; i < nvals; i++)
					mring_log(w[k], ids[k][i], (double)(base + (float)i));
				if (s % 1000 == 0)
					mring_epoch_end(w[k]);
			}
		}
	} else {
		while (!stdin_eof(-1))
			;
	}
	for (int k = 0; k < n; k++)
		if (w[k])
			mring_writer_close(w[k]);
	return 0;
}

static int cmd_nan(char **argv)
{
	int count = atoi(argv[1]);
	int64_t step_ns = atoll(argv[2]) * 1000;
	double gap_min = atof(argv[3]) * 1e6, gap_max = atof(argv[4]) * 1e6;
	struct mring_writer *w;
	int ids[4];
	int64_t next, fire;
	int fired = 0;

	srand48(atol(argv[5]));
	w = open_seg(argv[0], MRING_FULL_OVERWRITE, 0, NULL, 0);
	ids[0] = metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	ids[1] = metric(w, "lr", MRING_ON_STEP);
	ids[2] = metric(w, "gnorm", MRING_ON_STEP);
	ids[3] = metric(w, "tok_s", MRING_ON_STEP);
	mring_step(w, 0);
	for (int i = 0; i < 4; i++)
		mring_log(w, ids[i], 1.0);
	mring_flush(w);
	ready();
	wait_line();
	next = clock_ns(CLOCK_MONOTONIC);
	fire = next + (int64_t)(gap_min + drand48() * (gap_max - gap_min));
	for (uint64_t s = 1;; s++) {
		float base = 2.0f + (float)(s % 997) * 0.001f;

		next += step_ns;
		sleep_until(next);
		mring_step(w, s);
		if (fired < count && clock_ns(CLOCK_MONOTONIC) >= fire) {
			int64_t t;

			mring_log(w, ids[0], NAN);
			t = clock_ns(CLOCK_REALTIME);
			printf("nan %" PRIu64 " %" PRId64 "\n", s, t);
			fflush(stdout);
			fired++;
			fire = next + (int64_t)(fired < count ?
				gap_min + drand48() * (gap_max - gap_min) : gap_max);
		} else {
			if (fired == count && clock_ns(CLOCK_MONOTONIC) >= fire)
				break;
			mring_log(w, ids[0], (double)base);
		}
		for (int i = 1; i < 4; i++)
			mring_log(w, ids[i], (double)(base * (float)i));
	}
	printf("done\n");
	fflush(stdout);
	return mring_writer_close(w) != 0;
}

int main(int argc, char **argv)
{
	if ((argc == 7 || argc == 8) && !strcmp(argv[1], "flat"))
		return cmd_flat(argv + 2);
	if (argc == 8 && !strcmp(argv[1], "many"))
		return cmd_many(argv + 2);
	if (argc == 8 && !strcmp(argv[1], "nan"))
		return cmd_nan(argv + 2);
	fprintf(stderr,
		"usage: bench_watch_prod flat SEG STEPS VALUES drop|overwrite CAPACITY [CHUNKS]\n"
		"       bench_watch_prod many N RUNS RATE VALUES step|stall|close CAPACITY\n"
		"       bench_watch_prod nan SEG COUNT STEP_US GAP_MIN_MS GAP_MAX_MS SEED\n");
	return 2;
}
