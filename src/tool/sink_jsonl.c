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

/* @path for the sink: sink_lines_open(), after creating its directory */
static int open_file(struct sink *s, const char *path, const struct sink_state *resume)
{
	int ret = mkdir_parent(path);

	if (!ret)
		ret = sink_lines_open(AT_FDCWD, path, resume, &s->fd);
	if (!ret && resume)
		s->committed = resume->size;
	return ret;
}

static int jsonl_open(struct sink **out, const char *path, const struct sink_state *resume)
{
	struct sink *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->fd = -1;
	s->path = strdup(path);
	ret = s->path ? open_file(s, path, resume) : -ENOMEM;
	if (ret) {
		if (s->fd >= 0)
			close(s->fd);
		free(s->path);
		free(s);
		return ret;
	}
	s->written = s->committed;
	*out = s;
	return 0;
}

/* A key: names come from an untrusted segment (see buf_json_str()). */
static void put_key(struct buf *b, const char *k)
{
	buf_json_str(b, k);
	buf_puts(b, ": ");
}

static int jsonl_write(struct sink *s, const struct row *r)
{
	struct buf *b = &s->out;
	size_t start = b->len;
	int i;

	buf_putc(b, '{');
	for (i = 0; i < r->n; i++) {
		put_key(b, r->keys[i]);
		buf_json_number(b, r->vals[i]);
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
	int ret = buf_drain(&s->out, s->fd, &s->written, s->committed, false);

	if (ret < 0)
		return ret;
	s->committed = s->written;
	st->size = s->committed;
	sink_state_set_extra(st, NULL);		/* never fails */
	return 0;
}

static int jsonl_sync(struct sink *s)
{
	if (fsync(s->fd) == 0)
		return 0;
	return -errno;
}

/*
 * FILE.hparams.json next to FILE: the JSON text as the producer set it,
 * and a newline; replaced atomically when it changes.
 */
static int jsonl_hparams(struct sink *s, const struct hparams *hp)
{
	const char *slash = strrchr(s->path, '/');
	const char *base = slash ? slash + 1 : s->path;
	char *dir, *name = NULL, *tmp = NULL, *text = NULL;
	int dirfd, err = -ENOMEM;

	dir = slash ? strndup(s->path, (size_t)(slash - s->path)) : strdup(".");
	if (!dir)
		return -ENOMEM;
	if (asprintf(&name, "%s.hparams.json", base) < 0)
		name = NULL;
	if (asprintf(&tmp, ".%s.hparams.json.tmp", base) < 0)
		tmp = NULL;
	text = malloc(hp->len + 1);
	if (name && tmp && text) {
		memcpy(text, hp->text, hp->len);
		text[hp->len] = '\n';
		dirfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		err = dirfd < 0 ? -errno : hp->replace(dirfd, name, tmp, text, hp->len + 1);
		if (dirfd >= 0)
			close(dirfd);
	}
	free(text);
	free(tmp);
	free(name);
	free(dir);
	return err;
}

static const char *jsonl_path(struct sink *s)
{
	return s->path;
}

static void jsonl_close(struct sink *s)
{
	if (!s)
		return;
	close(s->fd);		/* and so releases the lock */
	buf_free(&s->out);
	free(s->path);
	free(s);
}

const struct sink_ops sink_jsonl_ops = {
	.name = "jsonl",
	.open = jsonl_open,
	.write = jsonl_write,
	.commit = jsonl_commit,
	.sync = jsonl_sync,
	.path = jsonl_path,
	.close = jsonl_close,
	.hparams = jsonl_hparams,
};
