// SPDX-License-Identifier: MIT
/*
 * prod_canary.c - a producer for the end-to-end tests whose every value
 * can be recomputed by the checker: metric m at step s logs
 * s * 1000 + m + 0.25 (metric 1 logs NaN every 7th step); an epoch ends
 * every EPOCH_STEPS steps.
 *
 * Usage: prod_canary SEGMENT STEPS EPOCH_STEPS STEP_US [RANK [CAP [RANKED]]]
 * Metrics: 0 "loss" ON_STEP|ON_EPOCH, 1 "lr" ON_STEP, 2 "acc" ON_EPOCH|MAX.
 * RANKED=1: loss and acc differ per rank (+ 0.5 * rank, + rank) and loss
 * has weight rank + 1, so a cross-rank reduction is tested for real.
 * Prints "ready" once the segment exists; exits 0 after a clean close.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <mring.h>

int main(int argc, char **argv)
{
	struct mring_config cfg = { .flags = MRING_CFG_REPLACE, .on_full = MRING_FULL_WAIT };
	uint64_t steps, epoch_steps;
	struct mring_writer *w;
	struct timespec ts = { 0, 0 };
	int ids[3], ret, ranked;

	if (argc < 5) {
		fprintf(stderr, "usage: prod_canary SEGMENT STEPS EPOCH_STEPS STEP_US "
			"[RANK [CAP [RANKED]]]\n");
		return 1;
	}
	steps = strtoull(argv[2], NULL, 10);
	epoch_steps = strtoull(argv[3], NULL, 10);
	ts.tv_nsec = atol(argv[4]) * 1000;
	cfg.rank = argc > 5 ? atoi(argv[5]) : 0;
	cfg.capacity = argc > 6 ? strtoull(argv[6], NULL, 10) : 0;
	ranked = argc > 7 && atoi(argv[7]);
	ret = mring_writer_open(argv[1], &cfg, &w);
	if (ret < 0) {
		fprintf(stderr, "prod_canary: %s\n", mring_strerror(ret));
		return 1;
	}
	ids[0] = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	ids[1] = mring_metric(w, "lr", MRING_ON_STEP);
	ids[2] = mring_metric(w, "acc", MRING_ON_EPOCH | MRING_MAX);
	printf("ready\n");
	fflush(stdout);
	for (uint64_t s = 0; s < steps; s++) {
		mring_step(w, s);
		for (int m = 0; m < 3; m++) {
			double v = (m == 1 && s % 7 == 3) ? NAN : (double)s * 1000 + m + 0.25;

			if (ranked && m == 0)
				mring_log_weighted(w, ids[m], v + 0.5 * cfg.rank, cfg.rank + 1);
			else if (ranked && m == 2)
				mring_log(w, ids[m], v + cfg.rank);
			else
				mring_log(w, ids[m], v);
		}
		if (epoch_steps && s % epoch_steps == epoch_steps - 1)
			mring_epoch_end(w);
		if (ts.tv_nsec)
			nanosleep(&ts, NULL);
	}
	return mring_writer_close(w) != 0;
}
