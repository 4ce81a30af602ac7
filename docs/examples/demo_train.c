// SPDX-License-Identifier: MIT
/*
 * demo_train.c - a pretend training loop that logs every step through
 * mring.  Usage: demo_train SEGMENT [EPOCHS [STEPS_PER_EPOCH [STEP_US]]]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <mring.h>

static void die(const char *what, int err)
{
	fprintf(stderr, "demo_train: %s: %s\n", what, mring_strerror(err));
	exit(1);
}

static void pause_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	const char *seg = argc > 1 ? argv[1] : "mring-demo";
	int epochs = argc > 2 ? atoi(argv[2]) : 3;
	int steps = argc > 3 ? atoi(argv[3]) : 20;
	long step_us = argc > 4 ? atol(argv[4]) : 20000;
	struct mring_config cfg = { .run = "demo", .flags = MRING_CFG_REPLACE };
	struct mring_writer *w;
	int loss, lr, acc, gnorm, ret;
	uint64_t step = 0;

	ret = mring_writer_open(seg, &cfg, &w);
	if (ret < 0)
		die("open", ret);
	loss = mring_metric(w, "train_loss", MRING_ON_STEP | MRING_ON_EPOCH | MRING_PROG_BAR);
	lr = mring_metric(w, "lr", MRING_ON_STEP);
	acc = mring_metric(w, "train_acc", MRING_ON_EPOCH | MRING_MEAN);
	gnorm = mring_metric(w, "grad_norm", MRING_ON_STEP | MRING_ON_EPOCH | MRING_MAX);
	if (loss < 0 || lr < 0 || acc < 0 || gnorm < 0)
		die("metric", loss < 0 ? loss : lr < 0 ? lr : acc < 0 ? acc : gnorm);

	for (int e = 0; e < epochs; e++) {
		for (int s = 0; s < steps; s++, step++) {
			double batch = (s == steps - 1) ? 16 : 32;	/* short last batch */

			mring_step(w, step);
			mring_log_weighted(w, loss, 2.0 * exp(-0.05 * (double)step) + 0.01 * (s % 3), batch);
			mring_log(w, lr, 1e-3 * pow(0.5, e));
			mring_log_weighted(w, acc, 1.0 - exp(-0.04 * (double)step), batch);
			mring_log(w, gnorm, 1.0 + 0.1 * (s % 5));
			pause_us(step_us);	/* the "forward and backward pass" */
		}
		mring_epoch_end(w);
	}
	printf("demo_train: logged %llu steps in %d epochs to %s\n",
	       (unsigned long long)step, epochs, seg);
	return mring_writer_close(w) < 0;
}
