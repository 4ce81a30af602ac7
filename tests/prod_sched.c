// SPDX-License-Identifier: MIT
/*
 * prod_sched.c - a producer for tests/e2e_drain_kill.py that follows a
 * seeded schedule the checker recomputes in Python (sched() there): which
 * metrics exist (registered at the start and at later steps, up to ~240),
 * their flags, which of them are logged at each step, where epochs end,
 * and every value.
 *
 * Usage: prod_sched SEGMENT SEED STEPS MODE CAPACITY [STEP_US [RANK [WAIT_DRAINER [PAUSE_AT]]]]
 *   MODE: drop, overwrite or wait (struct mring_config.on_full)
 *   WAIT_DRAINER=1: after "ready", wait until a drainer is attached
 *   before the first step (so that a small WAIT ring never drops).
 *   PAUSE_AT=P > 0: before step P, print "paused" and wait for a line on
 *   stdin (a test drains a half-written run at a known point).
 * Prints "ready" once the segment exists (metrics of step 0 registered);
 * exits 0 after a clean close.
 *
 * The schedule draws from one xorshift64 stream, in this order (keep
 * e2e_drain_kill.py's sched() in step):
 *   nm = 40 + x % 200; n0 = 2 + x % 6
 *   per metric k < nm: kind = x % 10, p = 1 + x % 4, bar = x % 5 == 0,
 *     red = x % 3, and reg = x % STEPS when k >= n0 (0 otherwise);
 *   the reg of metrics n0.. are then sorted, so ids are k.
 *   per step i: register the metrics with reg == i, mring_step(i), then
 *     for each registered k in id order: if x % 4 < p, r = x, log value
 *     (r % 89: 0 NaN, 1 +Inf, 2 -Inf, else k * 1e7 + i + 0.25 + 0.5 * RANK),
 *     weighted (1 + (i + k + RANK) % 4) for kinds 4 and 6;
 *     then if x % 37 == 0, mring_epoch_end().
 * Values of metric k stay in [k * 1e7, (k + 1) * 1e7), also as means.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mring.h>

static uint64_t xs;

static uint64_t next(void)
{
	xs ^= xs << 13;
	xs ^= xs >> 7;
	xs ^= xs << 17;
	return xs;
}

struct metric {
	unsigned kind, p, flags;
	uint64_t reg;
	int id;
	char name[64];
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static unsigned kind_flags(unsigned kind, unsigned red)
{
	static const unsigned reds[3] = { MRING_SUM, MRING_MIN, MRING_MAX };

	switch (kind) {
	case 0: case 1: case 2: return MRING_ON_STEP;
	case 3: case 4: return MRING_ON_STEP | MRING_ON_EPOCH;
	case 5: return MRING_ON_STEP | MRING_ON_EPOCH | reds[red];
	case 6: return MRING_ON_EPOCH | MRING_MEAN;
	case 7: return MRING_ON_EPOCH | MRING_SUM;
	case 8: return MRING_ON_EPOCH | MRING_MIN;
	default: return MRING_ON_EPOCH | MRING_MAX;
	}
}

/* Names exercise escaping in every sink; metric 1 is "step" (reserved). */
static void metric_name(char *out, size_t len, unsigned k)
{
	static const char *const fmt[7] = {
		"m%03u", "train/m%03u", "val.m%03u", "m%03u-x y", "m%03u,c",
		"m%03u\"q", "m%03u:z",
	};

	if (k == 1)
		snprintf(out, len, "step");
	else
		snprintf(out, len, fmt[k % 7], k);
}

static int wait_drainer(const char *seg)
{
	struct mring_reader *r;
	struct mring_status st;
	struct timespec ts = { 0, 200000 };
	int ret = mring_reader_open(seg, MRING_OBSERVE, &r);

	if (ret < 0)
		return ret;
	for (long i = 0; i < 300000; i++) {	/* 60 s */
		if (mring_status_read(r, &st) == 0 && st.drainer)
			break;
		nanosleep(&ts, NULL);
	}
	mring_reader_close(r);
	return 0;
}

int main(int argc, char **argv)
{
	struct mring_config cfg = { .flags = MRING_CFG_REPLACE };
	struct timespec ts = { 0, 0 };
	struct mring_writer *w;
	struct metric *m;
	uint64_t seed, steps, pause_at, *regs;
	unsigned nm, n0, nreg = 0, rank;
	int ret;

	if (argc < 6) {
		fprintf(stderr, "usage: prod_sched SEGMENT SEED STEPS MODE(drop|overwrite|wait) "
			"CAPACITY [STEP_US [RANK [WAIT_DRAINER [PAUSE_AT]]]]\n");
		return 1;
	}
	seed = strtoull(argv[2], NULL, 10);
	steps = strtoull(argv[3], NULL, 10);
	if (!strcmp(argv[4], "drop"))
		cfg.on_full = MRING_FULL_DROP;
	else if (!strcmp(argv[4], "overwrite"))
		cfg.on_full = MRING_FULL_OVERWRITE;
	else if (!strcmp(argv[4], "wait"))
		cfg.on_full = MRING_FULL_WAIT;
	else {
		fprintf(stderr, "prod_sched: bad MODE %s\n", argv[4]);
		return 1;
	}
	cfg.capacity = strtoull(argv[5], NULL, 10);
	ts.tv_nsec = argc > 6 ? atol(argv[6]) * 1000 : 0;
	rank = argc > 7 ? (unsigned)atoi(argv[7]) : 0;
	cfg.rank = (int32_t)rank;
	if (!steps) {
		fprintf(stderr, "prod_sched: STEPS must be > 0\n");
		return 1;
	}

	/* the schedule, drawn as sched() in e2e_drain_kill.py draws it */
	xs = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
	if (!xs)
		xs = 1;
	nm = 40 + (unsigned)(next() % 200);
	n0 = 2 + (unsigned)(next() % 6);
	m = calloc(nm, sizeof(*m));
	regs = calloc(nm, sizeof(*regs));
	if (!m || !regs)
		return 1;
	for (unsigned k = 0; k < nm; k++) {
		unsigned red;

		m[k].kind = (unsigned)(next() % 10);
		m[k].p = 1 + (unsigned)(next() % 4);
		m[k].flags = next() % 5 == 0 ? MRING_PROG_BAR : 0;
		red = (unsigned)(next() % 3);
		m[k].flags |= kind_flags(m[k].kind, red);
		regs[k] = k >= n0 ? next() % steps : 0;
		m[k].id = -1;
		metric_name(m[k].name, sizeof(m[k].name), k);
	}
	qsort(regs + n0, nm - n0, sizeof(*regs), cmp_u64);
	for (unsigned k = 0; k < nm; k++)
		m[k].reg = regs[k];
	free(regs);

	ret = mring_writer_open(argv[1], &cfg, &w);
	if (ret < 0) {
		fprintf(stderr, "prod_sched: %s\n", mring_strerror(ret));
		return 1;
	}
	for (; nreg < nm && m[nreg].reg == 0; nreg++) {
		m[nreg].id = mring_metric(w, m[nreg].name, m[nreg].flags);
		if (m[nreg].id != (int)nreg) {
			fprintf(stderr, "prod_sched: metric %s: %d\n", m[nreg].name, m[nreg].id);
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	if (argc > 8 && atoi(argv[8]) && wait_drainer(argv[1]) < 0)
		return 1;

	pause_at = argc > 9 ? strtoull(argv[9], NULL, 10) : 0;
	for (uint64_t i = 0; i < steps; i++) {
		if (pause_at && i == pause_at) {
			char line[16];

			printf("paused\n");
			fflush(stdout);
			if (!fgets(line, sizeof(line), stdin))
				return 1;
		}
		for (; nreg < nm && m[nreg].reg == i; nreg++) {
			m[nreg].id = mring_metric(w, m[nreg].name, m[nreg].flags);
			if (m[nreg].id != (int)nreg) {
				fprintf(stderr, "prod_sched: metric %s: %d\n", m[nreg].name,
					m[nreg].id);
				return 1;
			}
		}
		mring_step(w, i);
		for (unsigned k = 0; k < nreg; k++) {
			uint64_t r;
			double v;

			if (next() % 4 >= m[k].p)
				continue;
			r = next() % 89;
			if (r == 0)
				v = NAN;
			else if (r == 1)
				v = INFINITY;
			else if (r == 2)
				v = -INFINITY;
			else
				v = (double)k * 1e7 + (double)i + 0.25 + 0.5 * rank;
			if (m[k].kind == 4 || m[k].kind == 6)
				ret = mring_log_weighted(w, m[k].id, v, 1 + (i + k + rank) % 4);
			else
				ret = mring_log(w, m[k].id, v);
			if (ret < 0 && ret != -ENOBUFS) {
				fprintf(stderr, "prod_sched: log: %s\n", mring_strerror(ret));
				return 1;
			}
		}
		if (next() % 37 == 0)
			mring_epoch_end(w);
		if (ts.tv_nsec)
			nanosleep(&ts, NULL);
	}
	free(m);
	return mring_writer_close(w) != 0;
}
