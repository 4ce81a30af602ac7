// SPDX-License-Identifier: MIT
/*
 * test_hparams_torn.c - a reader of the hyperparameters whose copy is
 * overwritten while it reads.  Built with the library's sources and
 * -DMRING_READ_TESTPOINTS (src/lib.h): after each word a reader copies,
 * __mring_read_testpoint() runs here, and at a chosen word it replaces
 * the object twice, so that the writer lands on the very copy being read
 * (two copies, alternating).  Without the latch's retry the reader would
 * return the first part of one object and the rest of the other; with it,
 * it returns one whole object.  Unlike a race between two processes, this
 * fails every time the retry is missing.
 */
#include "helpers.h"

#define LEN 4096

static struct mring_writer *writer;
static char a[LEN + 8], b[LEN + 8], c[LEN + 8];
static int at_word = -1, words;

void __mring_read_testpoint(void)
{
	if (words++ != at_word)
		return;
	/* the copy being read is the one two replacements from now */
	cr_assert_eq(mring_set_hparams(writer, b), 0);
	cr_assert_eq(mring_set_hparams(writer, c), 0);
}

/* {"v":"xxx...x"} of LEN bytes, all x = @ch */
static void object(char *s, char ch)
{
	memset(s, ch, LEN);
	memcpy(s, "{\"v\":\"", 6);
	strcpy(s + LEN - 2, "\"}");
}

Test(hparams_torn, a_copy_overwritten_mid_read_is_never_returned)
{
	const char *name = seg_name("hp-torn");
	static char got[MRING_HPARAMS_MAX + 1];
	struct mring_reader *r;
	int n;

	object(a, 'a');
	object(b, 'b');
	object(c, 'c');
	writer = open_writer(name, 64, MRING_FULL_DROP);
	r = open_reader(name, MRING_OBSERVE);
	cr_assert_eq(mring_set_hparams(writer, a), 0);
	for (int w = 1; w < LEN / 8; w += 97) {
		/* reading a; the writer replaces it (b, then c over a's copy) */
		cr_assert_eq(mring_set_hparams(writer, a), 0);
		words = 0;
		at_word = w;
		n = mring_hparams_read(r, got, sizeof(got));
		cr_assert_eq(n, LEN, "word %d: %d", w, n);
		cr_assert(!strcmp(got, c),
			  "word %d: not the object the reader ended with: %.12s...%.12s", w,
			  got + 6, got + LEN - 14);
		cr_assert_gt(words, w, "the testpoint ran");
	}
	at_word = -1;
	mring_reader_close(r);
	mring_writer_close(writer);
}
