// SPDX-License-Identifier: MIT
/*
 * sink_jsonl.c - one JSON object per line, in the shape of Hugging Face's
 * Trainer.state.log_history: {"loss": 0.5, "lr": 0.001, "epoch": 0,
 * "step": 12}.  Numbers are the shortest of %.15g/%.16g/%.17g that reads
 * back bit-exactly; NaN and +-Infinity are written as Python's json
 * module writes (and reads) them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"

struct sink {
	int fd;
	char *path;
	uint64_t written;	/* bytes handed to the file */
	uint64_t committed;	/* bytes made durable by the last commit */
	struct buf out;
};

static int jsonl_open(struct sink **out, const char *path, const struct sink_state *resume)
{
	struct sink *s = calloc(1, sizeof(*s));
	struct stat st;
	int ret;

	if (!s)
		return -ENOMEM;
	s->path = strdup(path);
	if (!s->path) {
		free(s);
		return -ENOMEM;
	}
	s->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (s->fd < 0) {
		ret = -errno;
		goto err;
	}
	if (fstat(s->fd, &st) < 0) {
		ret = -errno;
		goto err;
	}
	if (!resume) {
		/* never clobber a log this drain did not write */
		if (st.st_size > 0) {
			ret = -EEXIST;
			goto err;
		}
	} else {
		/* back to the last commit: drop what a killed drainer added */
		if ((uint64_t)st.st_size < resume->size) {
			ret = -EIO;
			goto err;
		}
		if (ftruncate(s->fd, (off_t)resume->size) < 0) {
			ret = -errno;
			goto err;
		}
		s->committed = resume->size;
	}
	s->written = s->committed;
	*out = s;
	return 0;
err:
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s);
	return ret;
}

static void put_number(struct buf *b, double v)
{
	if (isnan(v))
		buf_puts(b, "NaN");
	else if (isinf(v))
		buf_puts(b, v > 0 ? "Infinity" : "-Infinity");
	else
		buf_double(b, v);
}

static void put_key(struct buf *b, const char *k)
{
	buf_putc(b, '"');
	for (; *k; k++) {
		if (*k == '"' || *k == '\\')
			buf_putc(b, '\\');
		buf_putc(b, *k);
	}
	buf_puts(b, "\": ");
}

static int jsonl_write(struct sink *s, const struct row *r)
{
	struct buf *b = &s->out;
	size_t start = b->len;
	int i;

	buf_putc(b, '{');
	for (i = 0; i < r->n; i++) {
		put_key(b, r->keys[i]);
		put_number(b, r->vals[i]);
		buf_puts(b, ", ");
	}
	if (r->kind == ROW_LOST) {
		buf_puts(b, "\"mring_lost\": ");
		buf_u64(b, r->lost);
		buf_puts(b, ", ");
	}
	if (r->rank >= 0) {
		buf_puts(b, "\"rank\": ");
		buf_u64(b, (uint64_t)r->rank);
		buf_puts(b, ", ");
	}
	buf_puts(b, "\"epoch\": ");
	buf_u64(b, r->epoch);
	buf_puts(b, ", \"step\": ");
	buf_u64(b, r->step);
	buf_puts(b, "}\n");
	if (b->oom) {
		b->len = start;		/* never half a row */
		return -ENOMEM;
	}
	if (b->len >= BUF_FLUSH_AT)
		return buf_drain(b, s->fd, &s->written, s->committed, false);
	return 0;
}

static int jsonl_commit(struct sink *s, struct sink_state *st)
{
	int ret = buf_drain(&s->out, s->fd, &s->written, s->committed, true);

	if (ret < 0)
		return ret;
	s->committed = s->written;
	st->size = s->committed;
	st->extra[0] = '\0';
	return 0;
}

static const char *jsonl_path(struct sink *s)
{
	return s->path;
}

static void jsonl_close(struct sink *s)
{
	if (!s)
		return;
	close(s->fd);
	buf_free(&s->out);
	free(s->path);
	free(s);
}

const struct sink_ops sink_jsonl_ops = {
	.name = "jsonl",
	.open = jsonl_open,
	.write = jsonl_write,
	.commit = jsonl_commit,
	.path = jsonl_path,
	.close = jsonl_close,
};
