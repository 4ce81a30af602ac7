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

/*
 * Names reach JSON, CSV, TensorBoard tags and Python str: a name must be
 * well-formed UTF-8.  Each refusal must use up no id and publish no slot.
 */
static void expect_refused(struct mring_writer *w, const char *const *bad, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_expect_eq(mring_metric(w, bad[i], MRING_ON_STEP), -EINVAL,
			     "name %zu was accepted", i);
}

static void expect_accepted(struct mring_writer *w, const char *const *good, size_t n,
			    int first_id)
{
	for (size_t i = 0; i < n; i++)
		cr_expect_eq(mring_metric(w, good[i], MRING_ON_STEP), first_id + (int)i,
			     "name %zu was refused", i);
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

Test(metric, stray_bytes_are_refused_and_use_up_no_id)
{
	const char *name = seg_name("utf8stray");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r;
	static const char *const bad[] = {
		"\x80", "loss\x80", "a\xbf" "b", "\xff", "\xfe", "loss\xff",
		"latin1 caf\xe9",		/* ISO-8859-1, not UTF-8 */
		"\xf8\x88\x80\x80\x80",		/* 5-byte form */
		"\xfc\x84\x80\x80\x80\x80",	/* 6-byte form */
	};
	/* the first and last character of each sequence length */
	static const char *const good[] = {
		"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xef\xbf\xbf",
		"\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	};
	char buf[64];

	expect_refused(w, bad, ARRAY_SIZE(bad));
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(mring_metric_count(r), 0, "a refused name published a slot");
	expect_accepted(w, good, ARRAY_SIZE(good), 0);
	cr_expect_eq(mring_metric_count(r), (int)ARRAY_SIZE(good));
	CHECK_OK(mring_metric_info(r, 6, buf, sizeof(buf), NULL));
	cr_expect_str_eq(buf, good[6]);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(metric, overlong_forms_are_refused)
{
	struct mring_writer *w = open_writer(seg_name("utf8overlong"), 64, MRING_FULL_DROP);
	static const char *const bad[] = {
		"\xc0\xaf", "\xc1\xbf", "\xc0\x80",	/* '/', U+007F, NUL in 2 bytes */
		"\xe0\x80\xaf", "\xe0\x9f\xbf",		/* 3 bytes for < U+0800 */
		"\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf",	/* 4 bytes for < U+10000 */
		"a/\xc0\xae\xc0\xae/b",			/* "../" smuggled */
	};
	/* the shortest forms of the same code points */
	static const char *const good[] = { "/", "\xdf\xbf", "\xe0\xa0\x80", "\xef\xbf\xbf" };

	expect_refused(w, bad, ARRAY_SIZE(bad));
	expect_accepted(w, good, ARRAY_SIZE(good), 0);
	mring_writer_close(w);
}

Test(metric, surrogates_and_code_points_above_10ffff_are_refused)
{
	struct mring_writer *w = open_writer(seg_name("utf8range"), 64, MRING_FULL_DROP);
	static const char *const bad[] = {
		"\xed\xa0\x80", "\xed\xaf\xbf",		/* high surrogates */
		"\xed\xb0\x80", "\xed\xbf\xbf",		/* low surrogates */
		"\xed\xa0\xbd\xed\xb8\x80",		/* a CESU-8 pair */
		"\xf4\x90\x80\x80",			/* U+110000 */
		"\xf5\x80\x80\x80", "\xf7\xbf\xbf\xbf",	/* lead bytes past F4 */
	};
	/* either side of the surrogates, and the last code point */
	static const char *const good[] = { "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf" };

	expect_refused(w, bad, ARRAY_SIZE(bad));
	expect_accepted(w, good, ARRAY_SIZE(good), 0);
	mring_writer_close(w);
}

Test(metric, truncated_sequences_are_refused)
{
	struct mring_writer *w = open_writer(seg_name("utf8trunc"), 64, MRING_FULL_DROP);
	static const char *const bad[] = {
		"\xc3", "x\xe2\x82", "\xf0\x9f\x98", "\xf0\x9f",
		"\xe2\x82x", "\xf0\x9f\x98 ok", "\xc3\xc3\xa9",
	};
	char cut[64], whole[64];

	expect_refused(w, bad, ARRAY_SIZE(bad));
	/* 63 bytes ending inside a character: a name cut by the caller */
	memset(cut, 'a', 62);
	memcpy(cut + 62, "\xc3", 2);
	cr_expect_eq(mring_metric(w, cut, MRING_ON_STEP), -EINVAL);
	memset(whole, 'a', 61);
	memcpy(whole + 61, "\xc3\xa9", 3);
	cr_expect_eq(mring_metric(w, whole, MRING_ON_STEP), 0, "63 bytes, whole characters");
	mring_writer_close(w);
}
