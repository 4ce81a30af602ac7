// SPDX-License-Identifier: MIT
/*
 * test_sink_jsonl.c - the JSONL sink of `mring drain` when memory runs
 * out: a row is whole or absent, and nothing half-built reaches the file.
 *
 * text.c and the sink are included directly, with realloc() replaced by
 * one that fails above a limit the test sets.
 */
#include <stdlib.h>

static size_t realloc_limit = (size_t)-1;

static void *limited_realloc(void *p, size_t n)
{
	return n > realloc_limit ? NULL : realloc(p, n);
}

#define realloc limited_realloc
#include "../src/tool/text.c"
#include "../src/tool/sink_jsonl.c"
#undef realloc

#include <criterion/criterion.h>

static char path[64];

static void path_cleanup(void)
{
	unlink(path);
}

static struct sink *open_sink(void)
{
	struct sink *s = NULL;

	snprintf(path, sizeof(path), "/tmp/mring-test-jsonl-%d.jsonl", (int)getpid());
	unlink(path);
	atexit(path_cleanup);
	cr_assert_eq(sink_jsonl_ops.open(&s, path, NULL), 0);
	return s;
}

static void file_is(const char *want)
{
	char got[4096];
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert_not_null(f);
	n = fread(got, 1, sizeof(got) - 1, f);
	fclose(f);
	got[n] = '\0';
	cr_assert_str_eq(got, want);
}

Test(sink_jsonl, out_of_memory_leaves_no_half_row_and_no_commit)
{
	static const char *const keys[] = { "loss", "a_rather_long_metric_name" };
	const double vals[] = { 0.125, 3.0 };
	struct row r = { .kind = ROW_STEP, .rank = -1, .n = 2, .keys = keys, .vals = vals };
	struct sink_state st = { 0 };
	struct sink *s = open_sink();
	int ret = 0, rows = 0;

	const char *first = "{\"loss\": 0.125, \"a_rather_long_metric_name\": 3, "
			    "\"epoch\": 0, \"step\": 0}\n";

	/* one commit that works: 1 row on disk */
	cr_assert_eq(sink_jsonl_ops.write(s, &r), 0);
	cr_assert_eq(sink_jsonl_ops.commit(s, &st), 0);
	file_is(first);
	/* then the buffer may not grow past its first 4 KiB */
	realloc_limit = 4096;
	while (ret == 0 && rows < 1000) {
		r.step = (uint64_t)++rows;
		ret = sink_jsonl_ops.write(s, &r);
	}
	cr_assert_eq(ret, -ENOMEM, "rows fit in 4 KiB forever? %d", rows);
	cr_assert_gt(rows, 10);
	/* the failed row was taken back: the buffer ends with a whole row */
	cr_assert_gt(s->out.len, 0);
	cr_assert_eq(s->out.p[s->out.len - 1], '\n');
	/* and the commit refuses: the file keeps only what was committed */
	cr_assert_eq(sink_jsonl_ops.commit(s, &st), -ENOMEM);
	file_is(first);
	sink_jsonl_ops.close(s);
}
