// SPDX-License-Identifier: MIT
/*
 * test_hparams.c - the run's hyperparameters (src/hparams.c, src/json.c):
 * exactly one JSON object gets in, readers get it back byte for byte,
 * a replacement is never seen half done, and an untrusted segment's text
 * is checked again on the way out.  (The race below, across processes,
 * rarely lands a writer inside a reader's copy; test_hparams_torn.c does
 * it every time.)
 */
#include <fcntl.h>
#include <stddef.h>

#include "helpers.h"

static char big[MRING_HPARAMS_MAX + 1];

static int read_text(struct mring_reader *r, char *buf)
{
	return mring_hparams_read(r, buf, MRING_HPARAMS_MAX + 1);
}

Test(hparams, round_trip_and_replace)
{
	const char *name = seg_name("hp-rt");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	const char *a = "{\"lr\": 0.001, \"model\": {\"layers\": [12, 12], \"name\": \"bert\\u00e9\"},"
			" \"caf\xc3\xa9\": true, \"x\": null}";
	const char *b = " {\"lr\":3e-4} \n";

	cr_expect_eq(read_text(r, big), -ENOENT, "nothing set yet");
	CHECK_OK(mring_set_hparams(w, a));
	cr_assert_eq(read_text(r, big), (int)strlen(a));
	cr_expect_str_eq(big, a);
	CHECK_OK(mring_set_hparams(w, b));
	cr_assert_eq(read_text(r, big), (int)strlen(b));
	cr_expect_str_eq(big, b);
	/* a drainer gets the same; so does a reader after the producer closed */
	mring_writer_close(w);
	mring_reader_close(r);
	r = open_reader(name, MRING_DRAIN);
	cr_assert_eq(read_text(r, big), (int)strlen(b));
	cr_expect_str_eq(big, b);
	mring_reader_close(r);
}

Test(hparams, buffer_sizes)
{
	const char *name = seg_name("hp-len");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	char small[8];

	CHECK_OK(mring_set_hparams(w, "{\"a\":1}"));		/* 7 bytes */
	cr_expect_eq(mring_hparams_read(r, small, 8), 7);
	cr_expect_str_eq(small, "{\"a\":1}");
	cr_expect_eq(mring_hparams_read(r, small, 7), -ERANGE, "no room for the NUL");
	cr_expect_eq(mring_hparams_read(r, NULL, 0), -ERANGE);
	cr_expect_eq(mring_hparams_read(r, NULL, 8), -EINVAL);
	cr_expect_eq(mring_hparams_read(NULL, small, 8), -EINVAL);
	mring_reader_close(r);
	mring_writer_close(w);
}

/* {"k":[[...]]} with @levels containers in all */
static void nested(char *out, int levels)
{
	int n = 0;

	n += sprintf(out + n, "{\"k\":");
	for (int i = 1; i < levels; i++)
		out[n++] = '[';
	for (int i = 1; i < levels; i++)
		out[n++] = ']';
	strcpy(out + n, "}");
}

Test(hparams, only_one_json_object_gets_in)
{
	static const char *const bad[] = {
		"", " ", "[]", "1", "\"s\"", "null", "{", "}", "{}{}", "{} x",
		"{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
		"{\"a\":-}", "{\"a\":1e}", "{\"a\":+1}", "{\"a\":NaN}", "{\"a\":Infinity}",
		"{\"a\":tru}", "{\"a\":[1,]}", "{\"a\":\"\x01\"}", "{\"a\":\"\\x\"}",
		"{\"a\":\"\\u12g4\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\xc0\xaf\"}",
		"{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"unterminated}", "{'a':1}",
	};
	const char *name = seg_name("hp-bad");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	char deep[200];

	CHECK_OK(mring_set_hparams(w, "{\"kept\":1}"));
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
		cr_expect_eq(mring_set_hparams(w, bad[k]), -EINVAL, "accepted: %s", bad[k]);
	/* nesting: 64 levels are fine, 65 are not */
	nested(deep, 64);
	cr_expect_eq(mring_set_hparams(w, deep), 0, "64 levels");
	nested(deep, 65);
	cr_expect_eq(mring_set_hparams(w, deep), -EINVAL, "65 levels");
	CHECK_OK(mring_set_hparams(w, "{\"kept\":2}"));
	cr_expect_eq(mring_set_hparams(w, NULL), -EINVAL);
	cr_expect_eq(mring_set_hparams(NULL, "{}"), -EINVAL);
	/* every refusal left the last good object */
	cr_assert_eq(read_text(r, big), 10);
	cr_expect_str_eq(big, "{\"kept\":2}");
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(hparams, the_size_limit_is_exact)
{
	const char *name = seg_name("hp-size");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	static char text[MRING_HPARAMS_MAX + 2];
	size_t n = MRING_HPARAMS_MAX;

	/* {"k":"xxxx...x"} of exactly 65536 bytes, then one more */
	memset(text, 'x', n);
	memcpy(text, "{\"k\":\"", 6);
	memcpy(text + n - 2, "\"}", 2);
	text[n] = '\0';
	CHECK_OK(mring_set_hparams(w, text));
	cr_assert_eq(read_text(r, big), (int)n);
	cr_expect_eq(memcmp(big, text, n + 1), 0);
	memcpy(text + n - 2, "x\"}", 3);
	text[n + 1] = '\0';
	cr_expect_eq(mring_set_hparams(w, text), -E2BIG);
	cr_expect_eq(read_text(r, big), (int)n, "the last good object stays");
	mring_reader_close(r);
	mring_writer_close(w);
}

/*
 * The two objects a writer alternates between: the same length, so that
 * a reader copying one is often overtaken by the other being written
 * into the very copy it reads.
 */
static void pair(char *a, char *b)
{
	memset(a, 'a', 40000);
	memcpy(a, "{\"v\":\"", 6);
	strcpy(a + 40000, "\"}");
	memset(b, 'b', 40000);
	memcpy(b, "{\"v\":\"", 6);
	strcpy(b + 40000, "\"}");
}

Test(hparams, a_replacement_is_never_seen_half_done)
{
	const char *name = seg_name("hp-race");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	static char a[40008], b[40008];
	pid_t child;
	int status, i;

	pair(a, b);
	CHECK_OK(mring_set_hparams(w, a));
	child = fork();
	if (child == 0) {
		struct mring_reader *r;
		static char got[MRING_HPARAMS_MAX + 1];
		int n, seen_a = 0, seen_b = 0;

		CHILD_CHECK(mring_reader_open(name, MRING_OBSERVE, &r));
		for (i = 0; i < 20000; i++) {
			n = mring_hparams_read(r, got, sizeof(got));
			if (n == -EAGAIN)
				continue;
			CHILD_CHECK(n);
			if (!strcmp(got, a))
				seen_a++;
			else if (!strcmp(got, b))
				seen_b++;
			else
				CHILD_FAIL("read %d bytes that are neither object", n);
		}
		fprintf(stderr, "reader: %d a, %d b\n", seen_a, seen_b);
		_exit(seen_a && seen_b ? 0 : CHILD_FAILED);	/* both, whole */
	}
	cr_assert_gt(child, 0);
	/*
	 * Replace flat out until the reader is done, with a pause after
	 * every 8th: flat out alone, every copy is overtaken.
	 */
	for (i = 0; waitpid(child, &status, WNOHANG) == 0; i++) {
		CHECK_OK(mring_set_hparams(w, i & 1 ? a : b));
		if (i % 8 == 7)
			nanosleep(&(struct timespec){ 0, 50000 }, NULL);
	}
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader status %d", status);
	cr_expect_gt(i, 100, "the writer replaced the object %d times", i);
	mring_writer_close(w);
}

#define HDR(f) offsetof(struct _mring_shm_hdr, f)
#define ID(f) (HDR(id) + offsetof(struct _mring_shm_ident, f))

static void poke64(off_t off, uint64_t v)
{
	int fd = open(seg_path, O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, &v, sizeof(v), off), (ssize_t)sizeof(v));
	close(fd);
}

static uint64_t peek64(off_t off)
{
	int fd = open(seg_path, O_RDONLY);
	uint64_t v = 0;

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &v, sizeof(v), off), (ssize_t)sizeof(v));
	close(fd);
	return v;
}

Test(hparams, a_damaged_text_is_refused)
{
	const char *name = seg_name("hp-damage");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r;
	off_t area, text;
	uint64_t seq;

	CHECK_OK(mring_set_hparams(w, "{\"a\":12345}"));
	mring_writer_close(w);
	area = (off_t)peek64(ID(hparams_offset));
	seq = peek64(area + offsetof(struct _mring_shm_hparams, seq));
	cr_assert_eq(seq, 1);
	text = area + (off_t)offsetof(struct _mring_shm_hparams, text) + (off_t)(seq & 1) *
	       _MRING_HPARAMS_MAX;
	/* a NUL inside the text */
	poke64(text, 0x0000003122613a7bull);	/* {"a":1\0\0 */
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(read_text(r, big), -EBADMSG);
	mring_reader_close(r);
	/* a length past the copy */
	poke64(area + (off_t)offsetof(struct _mring_shm_hparams, len) + 8, UINT64_MAX);
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(read_text(r, big), -EBADMSG);
	mring_reader_close(r);
}

Test(hparams, a_producer_killed_mid_update_leaves_the_last_object)
{
	const char *name = seg_name("hp-kill");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r;
	off_t area, other;

	CHECK_OK(mring_set_hparams(w, "{\"epoch\":1}"));
	mring_writer_close(w);
	/* what a producer killed inside the next mring_set_hparams() leaves:
	 * the copy seq + 1 selects half written, seq not published */
	area = (off_t)peek64(ID(hparams_offset));
	other = area + (off_t)offsetof(struct _mring_shm_hparams, text);	/* seq 2: copy 0 */
	poke64(area + (off_t)offsetof(struct _mring_shm_hparams, len), 9);
	poke64(other, 0x7878787878787878ull);	/* "xxxxxxxx" */
	r = open_reader(name, MRING_OBSERVE);
	cr_assert_eq(read_text(r, big), 11);
	cr_expect_str_eq(big, "{\"epoch\":1}");
	mring_reader_close(r);
}

Test(hparams, a_format_2_0_segment_has_none_and_opens)
{
	const char *name = seg_name("hp-v20");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r;
	uint32_t minor = 0;
	int fd;

	CHECK_OK(mring_set_hparams(w, "{\"a\":1}"));
	mring_writer_close(w);
	/* what a 2.0 producer wrote: minor 0, no area fields, file ends at the ring */
	fd = open(seg_path, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, &minor, 4, ID(abi_minor)), 4);
	cr_assert_eq(ftruncate(fd, (off_t)peek64(ID(total_size))), 0);
	close(fd);
	poke64(ID(hparams_offset), 0);
	poke64(ID(hparams_size), 0);
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(read_text(r, big), -ENOENT);
	mring_reader_close(r);
}

Test(hparams, the_area_is_checked_at_open)
{
	struct { off_t off; uint64_t v; } cases[] = {
		{ ID(hparams_offset), 4096 },
		{ ID(hparams_offset), UINT64_MAX },
		{ ID(hparams_size), 4096 },
		{ ID(hparams_size), 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = seg_name("hp-hdr");
		struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
		struct mring_reader *r = NULL;

		mring_writer_close(w);
		poke64(cases[i].off, cases[i].v);
		cr_expect_eq(mring_reader_open(name, MRING_OBSERVE, &r), -EBADMSG, "case %zu", i);
		unlink(seg_path);
	}
	/* a 2.1 file cut at the end of the ring: the area is missing */
	{
		const char *name = seg_name("hp-cut");
		struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
		struct mring_reader *r = NULL;

		mring_writer_close(w);
		cr_assert_eq(truncate(seg_path, (off_t)peek64(ID(total_size))), 0);
		cr_expect_eq(mring_reader_open(name, MRING_OBSERVE, &r), -EBADMSG);
	}
}

Test(hparams, a_forked_child_may_not_set_them)
{
	const char *name = seg_name("hp-fork");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	pid_t child = fork();
	int status;

	if (child == 0)
		_exit(mring_set_hparams(w, "{}") == -EPERM ? 0 : CHILD_FAILED);
	cr_assert_gt(child, 0);
	waitpid(child, &status, 0);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	mring_writer_close(w);
}
