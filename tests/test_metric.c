// SPDX-License-Identifier: MIT
/*
 * test_metric.c - registering metrics: ids, flags, names, limits, and
 * what readers learn from the segment.
 */
#include "helpers.h"

Test(metric, ids_are_dense_and_idempotent)
{
	struct mring_writer *w = open_writer(seg_name("ids"), 64, MRING_FULL_DROP);

	cr_expect_eq(mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH), 0);
	cr_expect_eq(mring_metric(w, "lr", MRING_ON_STEP), 1);
	cr_expect_eq(mring_metric(w, "acc", MRING_ON_EPOCH | MRING_MAX | MRING_PROG_BAR), 2);
	cr_expect_eq(mring_metric(w, "lr", MRING_ON_STEP), 1, "same name, same flags");
	cr_expect_eq(mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH | MRING_MEAN), 0,
		     "MEAN is the default reduction");
	cr_expect_eq(mring_metric(w, "lr", MRING_ON_STEP | MRING_PROG_BAR), -EEXIST);
	cr_expect_eq(mring_metric(w, "acc", MRING_ON_EPOCH | MRING_MIN), -EEXIST);
	cr_expect_eq(mring_metric(w, "Loss", MRING_ON_STEP), 3, "names are case-sensitive");
	mring_writer_close(w);
}

Test(metric, meaningless_flags_are_refused)
{
	struct mring_writer *w = open_writer(seg_name("flags"), 64, MRING_FULL_DROP);
	unsigned bad[] = {
		0,
		MRING_PROG_BAR,
		MRING_MEAN,
		MRING_ON_STEP | MRING_SUM,		/* reduction without ON_EPOCH */
		MRING_ON_EPOCH | MRING_SUM | MRING_MAX,	/* two reductions */
		MRING_ON_STEP | (1u << 12),		/* unknown bit */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(mring_metric(w, "m", bad[i]), -EINVAL, "flags %#x", bad[i]);
	cr_expect_eq(mring_metric(w, "m", MRING_ON_STEP), 0, "no id was used up");
	mring_writer_close(w);
}

Test(metric, names_are_checked)
{
	struct mring_writer *w = open_writer(seg_name("names"), 64, MRING_FULL_DROP);
	char n63[64], n64[65];

	memset(n63, 'a', 63);
	n63[63] = '\0';
	memset(n64, 'b', 64);
	n64[64] = '\0';
	cr_expect_eq(mring_metric(w, "", MRING_ON_STEP), -EINVAL);
	cr_expect_eq(mring_metric(w, NULL, MRING_ON_STEP), -EINVAL);
	cr_expect_eq(mring_metric(w, "a\nb", MRING_ON_STEP), -EINVAL);
	cr_expect_eq(mring_metric(w, "del\x7f", MRING_ON_STEP), -EINVAL);
	cr_expect_eq(mring_metric(w, n64, MRING_ON_STEP), -ENAMETOOLONG);
	cr_expect_eq(mring_metric(w, n63, MRING_ON_STEP), 0);
	cr_expect_eq(mring_metric(w, "val/loss \xc3\xa9", MRING_ON_STEP), 1, "UTF-8 and / are fine");
	mring_writer_close(w);
}

Test(metric, max_metrics_is_enforced)
{
	struct mring_config cfg = { .capacity = 64, .max_metrics = 3 };
	struct mring_writer *w;

	CHECK_OK(mring_writer_open(seg_name("max"), &cfg, &w));
	cr_expect_eq(mring_metric(w, "a", MRING_ON_STEP), 0);
	cr_expect_eq(mring_metric(w, "b", MRING_ON_STEP), 1);
	cr_expect_eq(mring_metric(w, "c", MRING_ON_STEP), 2);
	cr_expect_eq(mring_metric(w, "d", MRING_ON_STEP), -ENOSPC);
	cr_expect_eq(mring_metric(w, "b", MRING_ON_STEP), 1, "known names still resolve");
	mring_writer_close(w);
}

Test(metric, many_metrics_register_and_resolve)
{
	struct mring_config cfg = { .capacity = 64, .max_metrics = 5000 };
	const char *name = seg_name("many");
	struct mring_writer *w;
	struct mring_reader *r;
	char n[32], got[64];
	unsigned flags;

	CHECK_OK(mring_writer_open(name, &cfg, &w));
	for (int i = 0; i < 5000; i++) {
		snprintf(n, sizeof(n), "layer%d/grad_norm", i);
		cr_assert_eq(mring_metric(w, n, i % 2 ? MRING_ON_STEP : MRING_ON_EPOCH), i);
	}
	for (int i = 4999; i >= 0; i -= 7) {
		snprintf(n, sizeof(n), "layer%d/grad_norm", i);
		cr_assert_eq(mring_metric(w, n, i % 2 ? MRING_ON_STEP : MRING_ON_EPOCH), i);
	}
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(mring_metric_count(r), 5000);
	CHECK_OK(mring_metric_info(r, 4321, got, sizeof(got), &flags));
	cr_expect_str_eq(got, "layer4321/grad_norm");
	cr_expect_eq(flags, MRING_ON_STEP);
	CHECK_OK(mring_metric_info(r, 4320, NULL, 0, &flags));
	cr_expect_eq(flags, MRING_ON_EPOCH | MRING_MEAN);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(metric, readers_learn_names_and_flags_from_the_segment)
{
	const char *name = seg_name("info");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	char buf[64], small[4];
	unsigned flags = 0;

	cr_expect_eq(mring_metric_count(r), 0);
	mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH | MRING_PROG_BAR);
	mring_metric(w, "best_acc", MRING_ON_EPOCH | MRING_MAX);
	cr_expect_eq(mring_metric_count(r), 2, "registration is visible at once");
	CHECK_OK(mring_metric_info(r, 0, buf, sizeof(buf), &flags));
	cr_expect_str_eq(buf, "loss");
	cr_expect_eq(flags, MRING_ON_STEP | MRING_ON_EPOCH | MRING_MEAN | MRING_PROG_BAR);
	CHECK_OK(mring_metric_info(r, 1, buf, sizeof(buf), &flags));
	cr_expect_str_eq(buf, "best_acc");
	cr_expect_eq(flags, MRING_ON_EPOCH | MRING_MAX);
	cr_expect_eq(mring_metric_info(r, 0, small, sizeof(small), NULL), -ERANGE);
	cr_expect_eq(mring_metric_info(r, 2, buf, sizeof(buf), NULL), -EINVAL);
	cr_expect_eq(mring_metric_info(r, -1, buf, sizeof(buf), NULL), -EINVAL);
	cr_expect_eq(mring_metric_count(NULL), -EINVAL);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(metric, bad_ids_and_weights_log_nothing)
{
	const char *name = seg_name("badlog");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	struct mring_event ev[8];
	struct mring_stats st;
	int id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);

	cr_expect_eq(mring_log(w, 1, 1.0), -EINVAL, "unregistered id");
	cr_expect_eq(mring_log(w, -1, 1.0), -EINVAL);
	cr_expect_eq(mring_log(w, 70000, 1.0), -EINVAL);
	cr_expect_eq(mring_log_weighted(w, id, 1.0, -1.0), -EINVAL);
	cr_expect_eq(mring_log_weighted(w, id, 1.0, NAN), -EINVAL);
	cr_expect_eq(mring_log_weighted(w, id, 1.0, INFINITY), -EINVAL);
	cr_expect_eq(mring_log_weighted(w, 5, 1.0, 1.0), -EINVAL);
	cr_expect_eq(mring_read(r, ev, 8), 0, "nothing reached the ring");
	CHECK_OK(mring_stats_read(r, id, &st));
	cr_expect_eq(st.count, 0);
	cr_expect_eq(st.nonfinite, 0);
	cr_expect_eq(mring_log_weighted(w, id, 1.0, 0.0), 0, "weight 0 is allowed");
	cr_expect_eq(mring_read(r, ev, 8), 1);
	mring_reader_close(r);
	mring_writer_close(w);
}
