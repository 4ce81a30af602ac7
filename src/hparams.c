// SPDX-License-Identifier: MIT
/*
 * hparams.c - the run's hyperparameters: one JSON object in the segment
 * (format 2.1), set by the producer, read by anyone.
 *
 * A two-copy latch (mring/latch.h) over the text: a reader always finds
 * one whole object, the old or the new one, never a mix, and a producer
 * killed mid-update leaves the last published one.  Setting is rare (at
 * the start of a run, perhaps once more): the producer's hot path never
 * touches this area.
 */
#include <errno.h>
#include <string.h>

#include "lib.h"

static struct _mring_shm_hparams *writer_area(struct mring_writer *w)
{
	return (struct _mring_shm_hparams *)((char *)w->map + w->hdr->id.hparams_offset);
}

MRING_API int mring_set_hparams(struct mring_writer *w, const char *json)
{
	struct _mring_shm_hparams *hp;
	size_t len, words;
	uint64_t seq;
	unsigned c;
	int ret;

	if (!w || !json)
		return -EINVAL;
	if (w->forked)
		return -EPERM;
	len = strlen(json);
	if (len > MRING_HPARAMS_MAX)
		return -E2BIG;
	ret = _mring_json_object_check(json, len);
	if (ret < 0)
		return ret;
	hp = writer_area(w);
	/* the producer is the only writer: its last number is the shared one */
	seq = _mring_latch_write_begin(_mring_latch_last(_mring_load_relaxed(&hp->seq)));
	c = (unsigned)(seq & 1);
	_mring_store_relaxed(&hp->len[c], len);
	words = (len + 7) / 8;
	for (size_t i = 0; i < words; i++) {
		uint64_t word = 0;

		memcpy(&word, json + 8 * i, len - 8 * i < 8 ? len - 8 * i : 8);
		_mring_store_relaxed(&hp->text[c][i], word);
	}
	_mring_latch_write_end(&hp->seq, seq);
	return 0;
}

/* One attempt at the copy @seq selects: its length, the text into @buf. */
static uint64_t copy_load(const struct _mring_shm_hparams *hp, uint64_t seq, char *buf,
			  size_t len)
{
	unsigned c = (unsigned)(seq & 1);
	uint64_t n = _mring_load_relaxed(&hp->len[c]);

	if (n > MRING_HPARAMS_MAX || n >= len)
		return n;	/* damaged, or no room: the caller decides */
	for (size_t i = 0; i < (n + 7) / 8; i++) {
		uint64_t word = _mring_load_relaxed(&hp->text[c][i]);

		memcpy(buf + 8 * i, &word, n - 8 * i < 8 ? n - 8 * i : 8);
		__mring_read_testpoint();	/* tests: the writer may run here */
	}
	buf[n] = '\0';
	return n;
}

MRING_API int mring_hparams_read(const struct mring_reader *r, char *buf, size_t len)
{
	const struct _mring_shm_hparams *hp;

	if (!r || (!buf && len))
		return -EINVAL;
	hp = r->hparams;
	if (!hp)
		return -ENOENT;		/* a format 2.0 segment has none */
	for (int tries = 0; tries < _MRING_LATCH_TRIES; tries++) {
		uint64_t s = _mring_latch_read_begin(&hp->seq);
		uint64_t n;

		if (!s)
			return -ENOENT;
		n = copy_load(hp, s, buf, len);
		if (_mring_latch_read_retry(&hp->seq, s))
			continue;
		if (n > MRING_HPARAMS_MAX)
			return -EBADMSG;
		if (n >= len)
			return -ERANGE;
		/* the segment is untrusted: only a JSON object gets out */
		if (_mring_json_object_check(buf, (size_t)n) < 0)
			return -EBADMSG;
		return (int)n;
	}
	return -EAGAIN;
}
