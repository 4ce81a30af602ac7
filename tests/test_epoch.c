// SPDX-License-Identifier: MIT
/*
 * test_epoch.c - running statistics and epoch results: weighted mean,
 * SUM, MIN, MAX, non-finite values, compensated sums, Lightning's
 * step/epoch sequence.
 */
#include <math.h>

#include "helpers.h"

struct fixture {
	struct mring_writer *w;
	struct mring_reader *r;
};

static struct fixture setup(const char *tag, uint64_t cap)
{
	const char *name = seg_name(tag);
	struct fixture f;

	f.w = open_writer(name, cap, MRING_FULL_DROP);
	f.r = open_reader(name, MRING_DRAIN);
	return f;
}

static void teardown(struct fixture *f)
{
	mring_reader_close(f->r);
	mring_writer_close(f->w);
}

Test(epoch, mean_is_weighted_by_batch_size)
{
	struct fixture f = setup("wmean", 64);
	int id = mring_metric(f.w, "loss", MRING_ON_EPOCH);
	struct mring_stats st;

	/* Lightning: sum(v * batch_size) / sum(batch_size) */
	mring_log_weighted(f.w, id, 2.0, 32);
	mring_log_weighted(f.w, id, 4.0, 32);
	mring_log_weighted(f.w, id, 1.0, 16);
	CHECK_OK(mring_flush(f.w));
	CHECK_OK(mring_stats_read(f.r, id, &st));
	cr_expect_eq(st.count, 3);
	cr_expect_eq(st.weight, 80.0);
	cr_expect_eq(st.sum, 2.0 * 32 + 4.0 * 32 + 1.0 * 16);
	cr_expect_eq(st.value, (2.0 * 32 + 4.0 * 32 + 1.0 * 16) / 80.0);
	cr_expect_eq(st.min, 1.0);
	cr_expect_eq(st.max, 4.0);
	cr_expect_eq(st.last, 1.0);
	cr_expect_eq(st.epoch, 0);
	cr_expect_eq(mring_epoch_read(f.r, id, &st), -ENOENT, "no epoch ended yet");
	CHECK_OK(mring_epoch_end(f.w));
	CHECK_OK(mring_epoch_read(f.r, id, &st));
	cr_expect_eq(st.epoch, 0);
	cr_expect_eq(st.value, 208.0 / 80.0);
	CHECK_OK(mring_stats_read(f.r, id, &st));
	cr_expect_eq(st.epoch, 1, "the live accumulator moved on");
	cr_expect_eq(st.count, 0);
	cr_expect(isnan(st.value) && isnan(st.min) && isnan(st.max),
		  "an empty accumulator reads NaN");
	cr_expect_eq(st.last, 1.0, "last is no epoch figure: it stays");
	teardown(&f);
}

Test(epoch, sum_min_max_reductions)
{
	struct fixture f = setup("reduce", 64);
	int s = mring_metric(f.w, "tokens", MRING_ON_EPOCH | MRING_SUM);
	int lo = mring_metric(f.w, "min_loss", MRING_ON_EPOCH | MRING_MIN);
	int hi = mring_metric(f.w, "max_gn", MRING_ON_EPOCH | MRING_MAX);
	double vals[] = { 3.0, -1.5, 7.25, 0.5 };
	struct mring_stats st;

	for (int i = 0; i < 4; i++) {
		mring_log_weighted(f.w, s, vals[i], 10.0);	/* SUM ignores weight */
		mring_log(f.w, lo, vals[i]);
		mring_log(f.w, hi, vals[i]);
	}
	CHECK_OK(mring_epoch_end(f.w));
	CHECK_OK(mring_epoch_read(f.r, s, &st));
	cr_expect_eq(st.value, 9.25);
	cr_expect_eq(st.sum, 9.25);
	CHECK_OK(mring_epoch_read(f.r, lo, &st));
	cr_expect_eq(st.value, -1.5);
	CHECK_OK(mring_epoch_read(f.r, hi, &st));
	cr_expect_eq(st.value, 7.25);
	cr_expect_eq(st.count, 4);
	teardown(&f);
}

Test(epoch, non_finite_values_are_counted_and_kept_out_of_the_reductions)
{
	struct fixture f = setup("nan", 64);
	int id = mring_metric(f.w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	int mx = mring_metric(f.w, "gn", MRING_ON_EPOCH | MRING_MAX);
	struct mring_event ev[16];
	struct mring_stats st;
	int n;

	mring_log(f.w, id, 1.0);
	mring_log(f.w, id, NAN);
	mring_log(f.w, id, 3.0);
	mring_log(f.w, id, INFINITY);
	mring_log(f.w, mx, 2.0);
	mring_log(f.w, mx, INFINITY);
	CHECK_OK(mring_flush(f.w));
	CHECK_OK(mring_stats_read(f.r, id, &st));
	cr_expect_eq(st.count, 2);
	cr_expect_eq(st.nonfinite, 2);
	cr_expect_eq(st.value, 2.0, "one bad step does not poison the mean");
	cr_expect_eq(st.max, 3.0);
	cr_expect(isinf(st.last), "last is what was logged");
	CHECK_OK(mring_stats_read(f.r, mx, &st));
	cr_expect_eq(st.value, 2.0);

	n = read_all(f.r, ev, 16);
	cr_assert_eq(n, 4, "non-finite values stay in the ring");
	cr_expect_eq(ev[0].value, 1.0);
	cr_expect(isnan(ev[1].value));
	cr_expect_eq(ev[2].value, 3.0);
	cr_expect(isinf(ev[3].value) && ev[3].value > 0);

	/* an epoch of only NaN: empty reduction, not a number made up */
	mring_epoch_end(f.w);
	mring_log(f.w, id, NAN);
	mring_epoch_end(f.w);
	CHECK_OK(mring_epoch_read(f.r, id, &st));
	cr_expect_eq(st.epoch, 1);
	cr_expect_eq(st.count, 0);
	cr_expect_eq(st.nonfinite, 1);
	cr_expect(isnan(st.value));
	teardown(&f);
}

Test(epoch, step_only_metrics_keep_last_value_and_counts)
{
	struct fixture f = setup("steponly", 64);
	int id = mring_metric(f.w, "lr", MRING_ON_STEP);
	struct mring_stats st;

	mring_step(f.w, 10);
	mring_log(f.w, id, 0.1);
	mring_step(f.w, 11);
	mring_log(f.w, id, 0.05);
	CHECK_OK(mring_flush(f.w));
	CHECK_OK(mring_stats_read(f.r, id, &st));
	cr_expect_eq(st.last, 0.05);
	cr_expect_eq(st.last_step, 11);
	cr_expect_eq(st.count, 2);
	cr_expect(isnan(st.value), "no reduction for an ON_STEP-only metric");
	cr_expect_eq(st.flags, MRING_ON_STEP);
	mring_epoch_end(f.w);
	cr_expect_eq(mring_epoch_read(f.r, id, &st), -ENOENT);
	teardown(&f);
}

/*
 * Lightning's test_log_metrics_epoch_step_values: 2 batches, 2 epochs,
 * self.log("foo", on_step=True, on_epoch=True) gives foo_step@0, @1,
 * foo_epoch@1 (epoch 0), foo_step@2, @3, foo_epoch@3 (epoch 1).  The epoch
 * value of a MEAN is followed by its weight, for cross-rank reduction.
 */
Test(epoch, ring_follows_lightnings_step_epoch_sequence)
{
	struct fixture f = setup("seq", 64);
	int foo = mring_metric(f.w, "foo", MRING_ON_STEP | MRING_ON_EPOCH);
	struct mring_event ev[32];
	struct { uint32_t kind; uint64_t step; uint32_t epoch; double value; } want[] = {
		{ MRING_EV_STEP, 0, 0, 0 }, { MRING_EV_VALUE, 0, 0, 1 },
		{ MRING_EV_STEP, 1, 0, 0 }, { MRING_EV_VALUE, 1, 0, 3 },
		{ MRING_EV_EPOCH_VALUE, 1, 0, 2 }, { MRING_EV_EPOCH_WEIGHT, 1, 0, 2 },
		{ MRING_EV_EPOCH_END, 1, 0, 0 },
		{ MRING_EV_STEP, 2, 1, 0 }, { MRING_EV_VALUE, 2, 1, 10 },
		{ MRING_EV_STEP, 3, 1, 0 }, { MRING_EV_VALUE, 3, 1, 20 },
		{ MRING_EV_EPOCH_VALUE, 3, 1, 15 }, { MRING_EV_EPOCH_WEIGHT, 3, 1, 2 },
		{ MRING_EV_EPOCH_END, 3, 1, 0 },
	};
	double vals[] = { 1, 3, 10, 20 };
	uint64_t step = 0, seq = 0;
	int n;

	for (int e = 0; e < 2; e++) {
		for (int b = 0; b < 2; b++, step++) {
			mring_step(f.w, step);
			mring_log(f.w, foo, vals[step]);
		}
		mring_epoch_end(f.w);
	}
	n = read_all(f.r, ev, 32);
	cr_assert_eq(n, 14);
	for (int i = 0; i < n; i++) {
		cr_expect_eq(ev[i].seq, seq, "event %d", i);
		seq += want[i].kind == MRING_EV_STEP ? 2 : 1;	/* a STEP takes two slots */
		cr_expect_eq(ev[i].kind, want[i].kind, "event %d", i);
		cr_expect_eq(ev[i].step, want[i].step, "event %d", i);
		cr_expect_eq(ev[i].epoch, want[i].epoch, "event %d", i);
		if (want[i].kind == MRING_EV_VALUE || want[i].kind == MRING_EV_EPOCH_VALUE ||
		    want[i].kind == MRING_EV_EPOCH_WEIGHT) {
			cr_expect_eq(ev[i].value, want[i].value, "event %d", i);
			cr_expect_eq(ev[i].metric, foo);
		} else {
			cr_expect_eq(ev[i].metric, -1);
		}
	}
	teardown(&f);
}

Test(epoch, accumulators_stay_exact_when_records_are_dropped)
{
	struct fixture f = setup("dropacc", 8);
	int id = mring_metric(f.w, "loss", MRING_ON_STEP | MRING_ON_EPOCH | MRING_SUM);
	struct mring_stats st;
	int dropped = 0;

	for (int i = 1; i <= 100; i++)
		dropped += mring_log(f.w, id, (double)i) == -ENOBUFS;
	cr_expect_eq(dropped, 100 - 7, "7 usable slots, the 8th is kept for LOST");
	CHECK_OK(mring_flush(f.w));
	CHECK_OK(mring_stats_read(f.r, id, &st));
	cr_expect_eq(st.count, 100);
	cr_expect_eq(st.value, 5050.0);
	CHECK_OK(mring_epoch_end(f.w));
	CHECK_OK(mring_epoch_read(f.r, id, &st));
	cr_expect_eq(st.value, 5050.0, "published even though its ring copy was dropped");
	teardown(&f);
}

/*
 * A million losses of 0.1-ish: plain double summation drifts by ~1e-11
 * relative; the compensated sum must match an exact reference to 1e-12.
 */
Test(epoch, compensated_mean_matches_a_careful_reference)
{
	struct fixture f = setup("kahan", 64);
	int id = mring_metric(f.w, "loss", MRING_ON_EPOCH);
	long double ref_sum = 0, ref_c = 0;
	double naive = 0, ref;
	struct mring_stats st;
	const int n = 1000000;

	for (int i = 0; i < n; i++) {
		double v = 0.1 * (1 + i % 3);
		long double t = ref_sum + v;

		/* reference: Neumaier in 80-bit long double */
		if (fabsl(ref_sum) >= fabsl((long double)v))
			ref_c += (ref_sum - t) + v;
		else
			ref_c += ((long double)v - t) + ref_sum;
		ref_sum = t;
		naive += v;
		mring_log(f.w, id, v);
	}
	ref = (double)((ref_sum + ref_c) / n);
	CHECK_OK(mring_flush(f.w));
	CHECK_OK(mring_stats_read(f.r, id, &st));
	cr_expect_eq(st.count, (uint64_t)n);
	cr_expect_lt(fabs(st.value - ref) / ref, 1e-12, "mean %.17g vs reference %.17g",
		     st.value, ref);
	/* the test has teeth: the uncompensated mean misses the bound */
	cr_expect_gt(fabs(naive / n - ref) / ref, 1e-12, "naive %.17g", naive / n);
	teardown(&f);
}

Test(epoch, epochs_number_from_zero_and_results_stay_until_the_next_end)
{
	struct fixture f = setup("epochs", 64);
	int id = mring_metric(f.w, "acc", MRING_ON_EPOCH);
	struct mring_stats st;
	struct mring_status ss;

	for (int e = 0; e < 5; e++) {
		mring_log(f.w, id, (double)e);
		CHECK_OK(mring_flush(f.w));
		CHECK_OK(mring_stats_read(f.r, id, &st));
		cr_expect_eq(st.epoch, (uint32_t)e);
		CHECK_OK(mring_epoch_end(f.w));
		CHECK_OK(mring_epoch_read(f.r, id, &st));
		cr_expect_eq(st.epoch, (uint32_t)e);
		cr_expect_eq(st.value, (double)e);
		mring_log(f.w, id, 100.0);	/* next epoch's values don't touch it */
		CHECK_OK(mring_epoch_read(f.r, id, &st));
		cr_expect_eq(st.value, (double)e);
		mring_epoch_end(f.w);
		e++;
		CHECK_OK(mring_epoch_read(f.r, id, &st));
		cr_expect_eq(st.epoch, (uint32_t)e);
		cr_expect_eq(st.value, 100.0);
	}
	CHECK_OK(mring_status_read(f.r, &ss));
	cr_expect_eq(ss.epoch, 6);
	teardown(&f);
}

/*
 * The live statistics are published once per step, not per log: a
 * reader sees what was logged in a step at the next mring_step(), or at
 * once after mring_flush(), mring_epoch_end() or mring_writer_close().
 */
Test(epoch, live_statistics_lag_by_at_most_one_step)
{
	struct fixture f = setup("lag", 64);
	int ep = mring_metric(f.w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	int so = mring_metric(f.w, "lr", MRING_ON_STEP);
	struct mring_stats st;

	CHECK_OK(mring_step(f.w, 1));
	mring_log(f.w, ep, 2.0);
	mring_log(f.w, so, 0.5);
	CHECK_OK(mring_stats_read(f.r, ep, &st));
	cr_expect_eq(st.count, 0, "not published within the step");
	CHECK_OK(mring_step(f.w, 2));
	CHECK_OK(mring_stats_read(f.r, ep, &st));
	cr_expect_eq(st.count, 1, "published by the next step");
	cr_expect_eq(st.last, 2.0);
	cr_expect_eq(st.last_step, 1);
	CHECK_OK(mring_stats_read(f.r, so, &st));
	cr_expect_eq(st.count, 1);
	cr_expect_eq(st.last, 0.5);
	cr_expect_eq(st.last_step, 1);

	mring_log(f.w, so, 0.25);
	mring_log(f.w, so, 0.125);	/* twice in a step: one publish, the last */
	CHECK_OK(mring_flush(f.w));
	CHECK_OK(mring_stats_read(f.r, so, &st));
	cr_expect_eq(st.count, 3);
	cr_expect_eq(st.last, 0.125);
	cr_expect_eq(st.last_step, 2);

	mring_log(f.w, ep, 4.0);
	CHECK_OK(mring_epoch_end(f.w));
	CHECK_OK(mring_epoch_read(f.r, ep, &st));
	cr_expect_eq(st.count, 2, "the epoch result includes the unpublished step");
	cr_expect_eq(st.value, 3.0);

	mring_log(f.w, ep, 8.0);
	CHECK_OK(mring_writer_close(f.w));
	f.w = NULL;
	CHECK_OK(mring_stats_read(f.r, ep, &st));
	cr_expect_eq(st.count, 1, "close publishes");
	cr_expect_eq(st.last, 8.0);
	teardown(&f);
}
