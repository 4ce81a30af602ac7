// SPDX-License-Identifier: MIT
/*
 * test_sink_jsonl.c - the JSONL sink of `mring drain`: when memory runs
 * out, a row is whole or absent and nothing half-built reaches the file;
 * keys are valid JSON whatever their bytes; the file is never reached
 * through a symlink, nor shared with a live drain.
 *
 * text.c and the sink are included directly, with realloc() replaced by
 * one that fails above a limit the test sets.
 */
#define _GNU_SOURCE		/* nftw(), before the first system header */
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
#include <ftw.h>
#include <sys/wait.h>

static char path[128];

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

static long long file_size_of(const char *p)
{
	struct stat sb;

	cr_assert_eq(stat(p, &sb), 0);
	return sb.st_size;
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

/* ---- keys: control characters and bytes that are not UTF-8 ---- */

/* Run Python's json on the file; returns what it prints (caller frees). */
static char *python_keys(int *rc)
{
	static const char prog[] =
		"import json, sys\n"
		"for line in open(sys.argv[1], encoding='utf-8', errors='strict'):\n"
		"    print(json.dumps(list(json.loads(line))))\n";
	char cmd[512], *out = NULL;
	size_t len = 0;
	FILE *o = open_memstream(&out, &len), *p;
	int c;

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c \"$MRING_PROG\" '%s' 2>&1", path);
	setenv("MRING_PROG", prog, 1);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	while ((c = fgetc(p)) != EOF)
		fputc(c, o);
	*rc = pclose(p);
	fclose(o);
	return out;
}

Test(sink_jsonl, keys_escape_controls_and_replace_invalid_utf8)
{
	static const char *const keys[] = {
		"a\x01" "b\"c\\d\x1f" "e\x7f",		/* controls, quote, backslash, DEL */
		"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac",	/* well-formed: kept */
		"x\xffy\xc3",				/* stray byte, cut sequence at the end */
		"\xe2\x82z",				/* cut sequence: both bytes replaced */
		"\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80",	/* overlong, surrogate, > U+10FFFF */
	};
	const double vals[] = { 1, 2, 3, 4, 5 };
	struct row r = { .kind = ROW_STEP, .rank = -1, .n = 5, .keys = keys, .vals = vals };
	struct sink_state st = { 0 };
	struct sink *s = open_sink();
	char *got;
	int rc;

#define FFFD "\xef\xbf\xbd"
	const char *want =
		"{\"a\\u0001b\\\"c\\\\d\\u001fe\x7f\": 1, "
		"\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\": 2, "
		"\"x" FFFD "y" FFFD "\": 3, "
		"\"" FFFD FFFD "z\": 4, "
		"\"" FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD FFFD "\": 5, "
		"\"epoch\": 0, \"step\": 0}\n";
#undef FFFD

	cr_assert_eq(sink_jsonl_ops.write(s, &r), 0);
	cr_assert_eq(sink_jsonl_ops.commit(s, &st), 0);
	sink_jsonl_ops.close(s);
	file_is(want);

	/* and Python reads it: strict UTF-8, strict JSON (no raw controls) */
	got = python_keys(&rc);
	cr_assert_eq(rc, 0, "python3 refused the file:\n%s", got);
	cr_assert_str_eq(got, "[\"a\\u0001b\\\"c\\\\d\\u001fe\\u007f\", "
			      "\"caf\\u00e9 \\ud83d\\ude00 \\u20ac\", "
			      "\"x\\ufffdy\\ufffd\", \"\\ufffd\\ufffdz\", "
			      "\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\", "
			      "\"epoch\", \"step\"]\n");
	free(got);
}

/* ---- the file: parents, symlinks, leftovers, a second drain ---- */

static char dir[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	return remove(p);
}

static void dir_cleanup(void)
{
	if (dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void mk_dir(void)
{
	strcpy(dir, "/tmp/mring-jsonl-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	atexit(dir_cleanup);
	snprintf(path, sizeof(path), "%s/out.jsonl", dir);
}

static void put_text(const char *p, const char *text)
{
	FILE *f = fopen(p, "w");

	cr_assert_not_null(f, "%s: %s", p, strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

static char *slurp(const char *p)
{
	static char text[4096];
	FILE *f = fopen(p, "r");
	size_t n;

	cr_assert_not_null(f, "%s: %s", p, strerror(errno));
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	return text;
}

Test(sink_jsonl, missing_parents_are_created_like_csv_and_tensorboard)
{
	struct sink *s = NULL;
	char file[160];
	struct stat sb;

	mk_dir();
	snprintf(file, sizeof(file), "%s/a/b/out.jsonl", dir);
	umask(022);
	cr_assert_eq(sink_jsonl_ops.open(&s, file, NULL), 0);
	sink_jsonl_ops.close(s);
	snprintf(file, sizeof(file), "%s/a/b", dir);
	cr_assert_eq(stat(file, &sb), 0);
	cr_assert(S_ISDIR(sb.st_mode));
	cr_assert_eq(sb.st_mode & 07777, 0755);

	/* a parent that is a file: ENOTDIR, as from the other two sinks */
	snprintf(file, sizeof(file), "%s/plain", dir);
	put_text(file, "x");
	snprintf(file, sizeof(file), "%s/plain/out.jsonl", dir);
	s = NULL;
	cr_assert_eq(sink_jsonl_ops.open(&s, file, NULL), -ENOTDIR);
	cr_assert_null(s);
}

Test(sink_jsonl, symlink_at_output_is_refused)
{
	struct sink_state st = { 0 };
	struct sink *s = NULL;
	char v[128];

	mk_dir();
	snprintf(v, sizeof(v), "%s/victim", dir);
	cr_assert_eq(symlink(v, path), 0);

	/* an empty target would pass for a leftover of ours */
	put_text(v, "");
	cr_assert_eq(sink_jsonl_ops.open(&s, path, NULL), -ELOOP);
	/* resume would cut the target back to the committed size */
	put_text(v, "precious\n");
	cr_assert_eq(sink_jsonl_ops.open(&s, path, &st), -ELOOP);
	cr_assert_null(s);
	cr_assert_str_eq(slurp(v), "precious\n");
}

/*
 * A drain killed after creating the file and before any state named it:
 * an empty file of ours is reused; one with data, one of another user,
 * or one a live drain has open is not.
 */
Test(sink_jsonl, fresh_open_reuses_only_an_idle_empty_file_of_ours)
{
	static const char *const keys[] = { "loss" };
	const double vals[] = { 0.5 };
	struct row r = { .kind = ROW_STEP, .rank = -1, .n = 1, .keys = keys, .vals = vals };
	struct sink_state st = { 0 };
	struct sink *s = NULL, *t = NULL;

	mk_dir();
	put_text(path, "");
	cr_assert_eq(sink_jsonl_ops.open(&s, path, NULL), 0);
	/* live: a second drain would interleave its rows with ours */
	cr_assert_eq(sink_jsonl_ops.open(&t, path, NULL), -EBUSY);
	cr_assert_eq(sink_jsonl_ops.write(s, &r), 0);
	cr_assert_eq(sink_jsonl_ops.commit(s, &st), 0);
	cr_assert_eq(sink_jsonl_ops.open(&t, path, &st), -EBUSY);
	sink_jsonl_ops.close(s);
	cr_assert_null(t);

	cr_assert_eq(sink_jsonl_ops.open(&t, path, NULL), -EEXIST);
	file_is("{\"loss\": 0.5, \"epoch\": 0, \"step\": 0}\n");

	if (geteuid() == 0) {
		put_text(path, "");
		cr_assert_eq(chown(path, 65534, 65534), 0);
		cr_assert_eq(sink_jsonl_ops.open(&t, path, NULL), -EEXIST);
	} else {
		cr_log_info("not root: the other-owner case is skipped");
	}
}

/*
 * A resume appends at the committed size, so that size must end a line:
 * a state damaged to point into a row is refused, and the file is left
 * as it was rather than cut or continued mid-row.
 */
Test(sink_jsonl, resume_needs_the_committed_size_to_end_a_line)
{
	static const char *const keys[] = { "loss" };
	const double vals[] = { 0.5 };
	struct row r = { .kind = ROW_STEP, .rank = -1, .n = 1, .keys = keys, .vals = vals };
	struct sink_state st = { 0 }, bad;
	struct sink *s = open_sink(), *t;
	const char *two = "{\"loss\": 0.5, \"epoch\": 0, \"step\": 0}\n"
			  "{\"loss\": 0.5, \"epoch\": 0, \"step\": 1}\n";
	uint64_t line = strlen(two) / 2;

	cr_assert_eq(sink_jsonl_ops.write(s, &r), 0);
	r.step = 1;
	cr_assert_eq(sink_jsonl_ops.write(s, &r), 0);
	cr_assert_eq(sink_jsonl_ops.commit(s, &st), 0);
	cr_assert_eq(st.size, 2 * line);
	sink_jsonl_ops.close(s);
	file_is(two);

	bad = st;
	for (uint64_t size = 1; size < 2 * line; size++) {
		if (size == line)
			continue;
		bad.size = size;
		t = (struct sink *)1;
		cr_assert_eq(sink_jsonl_ops.open(&t, path, &bad), -EBADMSG,
			     "size %llu accepted", (unsigned long long)size);
		file_is(two);
	}
	/* the line boundaries are fine: both rows, one row, none */
	for (int rows = 2; rows >= 0; rows--) {
		bad.size = (uint64_t)rows * line;
		cr_assert_eq(sink_jsonl_ops.open(&t, path, &bad), 0);
		sink_jsonl_ops.close(t);
		cr_assert_eq(file_size_of(path), bad.size);
	}
	/* past the end: committed rows are gone */
	bad.size = 1;
	cr_assert_eq(sink_jsonl_ops.open(&t, path, &bad), -EIO);
}
