// SPDX-License-Identifier: MIT
/*
 * demo_read.c - a separate process that drains a segment and prints each
 * step's values and each epoch's results (the epoch value records the
 * producer wrote at mring_epoch_end()).  Usage: demo_read SEGMENT
 * Waits up to 10 s for the segment; exits when the producer has closed
 * (0) or died (2) and everything is drained.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mring.h>

#define MAX_SHOWN 64

static char names[MAX_SHOWN][64];
static unsigned flags[MAX_SHOWN];

static void nap(void)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

static const char *metric_name(struct mring_reader *r, int id)
{
	if (id < 0 || id >= MAX_SHOWN)
		return "?";
	if (!names[id][0] && mring_metric_info(r, id, names[id], 64, &flags[id]) < 0)
		return "?";
	return names[id];
}

int main(int argc, char **argv)
{
	const char *seg = argc > 1 ? argv[1] : "mring-demo";
	struct mring_reader *r = NULL;
	struct mring_event ev[256];
	struct mring_status st;
	unsigned long long values = 0, lost = 0;
	uint64_t row_step = UINT64_MAX;
	int ret, tries, done = 0;

	for (tries = 0; tries < 2000; tries++) {
		ret = mring_reader_open(seg, MRING_DRAIN, &r);
		if (ret != -ENOENT && ret != -EAGAIN)
			break;
		nap();
	}
	if (ret < 0) {
		fprintf(stderr, "demo_read: %s: %s\n", seg, mring_strerror(ret));
		return 1;
	}
	for (;;) {
		int n = mring_read(r, ev, 256);

		if (n < 0) {
			fprintf(stderr, "demo_read: %s\n", mring_strerror(n));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			const struct mring_event *e = &ev[i];

			switch (e->kind) {
			case MRING_EV_VALUE:
				if (e->step != row_step) {
					printf("%sstep %4llu epoch %u:", row_step == UINT64_MAX ? "" : "\n",
					       (unsigned long long)e->step, e->epoch);
					row_step = e->step;
				}
				printf(" %s=%.4f", metric_name(r, e->metric), e->value);
				values++;
				break;
			case MRING_EV_EPOCH_VALUE:
				if (row_step != UINT64_MAX)
					printf("\n");
				row_step = UINT64_MAX;
				/* Lightning's naming: name_epoch only when also logged per step */
				printf("  epoch %u at step %llu: %s%s = %.6f\n", e->epoch,
				       (unsigned long long)e->step, metric_name(r, e->metric),
				       e->metric < MAX_SHOWN && flags[e->metric] & MRING_ON_STEP ?
				       "_epoch" : "",
				       e->value);
				break;
			case MRING_EV_EPOCH_END:
				printf("  epoch %u ended\n", e->epoch);
				break;
			case MRING_EV_LOST:
				printf("\n  LOST %.0f records\n", e->value);
				lost += (unsigned long long)e->value;
				break;
			}
		}
		if (n)
			continue;
		if (done)
			break;
		mring_status_read(r, &st);
		/* producer gone: every record it committed is readable now;
		 * read until empty once more, then stop */
		done = !st.alive;
		if (!done)
			nap();
	}
	printf("demo_read: drained %llu values, %llu lost; producer %s\n", values, lost,
	       st.closed ? "closed cleanly" : "CRASHED");
	mring_reader_close(r);
	return st.closed ? 0 : 2;
}
