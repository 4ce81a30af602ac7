// SPDX-License-Identifier: MIT
/*
 * bench_insn.c - a deterministic driver for counting the instructions of
 * the inline hot path under callgrind (bench/callgrind.sh).
 *
 * Usage: bench_insn CASE N
 *   CASE  log_step        mring_log on an ON_STEP metric
 *         log_step_epoch  mring_log on an ON_STEP|ON_EPOCH metric
 *         log_epoch       mring_log on an ON_EPOCH metric (no ring record)
 *         weighted        mring_log_weighted on an ON_STEP|ON_EPOCH metric
 *         step            mring_step (its clock_gettime is a real syscall
 *                         under valgrind, so glibc's fallback is counted)
 *   N     calls (at most 60000: the ring never fills, no slow path)
 *
 * Each call goes through one out-of-line function, bench_measured_<case>,
 * that holds nothing but the inlined API call; run it under
 *   valgrind --tool=callgrind --collect-atstart=no \
 *            --toggle-collect='bench_measured_*'
 * and the difference of the totals of two values of N, divided by the
 * difference of N, is the instructions per call (plus the wrapper's ret).
 * No drainer: nothing else runs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mring.h>

#define CAPACITY	(UINT64_C(1) << 16)	/* usable: capacity - 1 */
#define MAX_CALLS	60000u

#if defined(__clang__)
#define MEASURED __attribute__((noinline, used))
#else
#define MEASURED __attribute__((noinline, noipa, used))
#endif

/* Not static: no constant propagation of id or flags into them. */
MEASURED int bench_measured_log(struct mring_writer *w, int id, double v);
MEASURED int bench_measured_weighted(struct mring_writer *w, int id, double v,
				     double wt);
MEASURED void bench_measured_step(struct mring_writer *w, uint64_t step);

MEASURED int bench_measured_log(struct mring_writer *w, int id, double v)
{
	return mring_log(w, id, v);
}

MEASURED int bench_measured_weighted(struct mring_writer *w, int id, double v,
				     double wt)
{
	return mring_log_weighted(w, id, v, wt);
}

MEASURED void bench_measured_step(struct mring_writer *w, uint64_t step)
{
	mring_step(w, step);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_insn log_step|log_step_epoch|log_epoch|weighted|step N\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct mring_config cfg = { .capacity = CAPACITY, .flags = MRING_CFG_REPLACE };
	struct mring_writer *w;
	const char *dir = getenv("MRING_DIR");
	char seg[64], path[4200];
	unsigned long n, i;
	unsigned flags = 0;
	int id = -1, ret, bad = 0;
	char *end;

	if (argc != 3)
		usage();
	n = strtoul(argv[2], &end, 0);
	if (*end || n > MAX_CALLS)
		usage();
	if (!strcmp(argv[1], "log_step"))
		flags = MRING_ON_STEP;
	else if (!strcmp(argv[1], "log_step_epoch") || !strcmp(argv[1], "weighted"))
		flags = MRING_ON_STEP | MRING_ON_EPOCH;
	else if (!strcmp(argv[1], "log_epoch"))
		flags = MRING_ON_EPOCH;
	else if (strcmp(argv[1], "step"))
		usage();

	snprintf(seg, sizeof(seg), "bench-insn-%d", (int)getpid());
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "/dev/shm", seg);
	ret = mring_writer_open(seg, &cfg, &w);
	if (ret < 0) {
		fprintf(stderr, "bench_insn: mring_writer_open(%s): %s\n", path,
			mring_strerror(ret));
		return 1;
	}
	if (flags) {
		id = mring_metric(w, "loss", flags);
		if (id < 0) {
			fprintf(stderr, "bench_insn: mring_metric: %s\n", mring_strerror(id));
			bad = 1;
			n = 0;
		}
	}
	if (!strcmp(argv[1], "step")) {
		for (i = 0; i < n; i++)
			bench_measured_step(w, i);
	} else if (!strcmp(argv[1], "weighted")) {
		for (i = 0; i < n; i++)
			bad |= bench_measured_weighted(w, id, (double)i, 32.0) != 0;
	} else {
		for (i = 0; i < n; i++)
			bad |= bench_measured_log(w, id, (double)i) != 0;
	}
	if (bad)
		fprintf(stderr, "bench_insn: a call failed\n");
	mring_writer_close(w);
	unlink(path);
	return bad;
}
