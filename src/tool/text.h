/* SPDX-License-Identifier: MIT */
/*
 * text.h - the append buffer of every sink and of mring serve, exact
 * number formatting, and writing a buffer out so that a failure leaves
 * the file as it was at the last commit.
 */
#ifndef MRING_TOOL_TEXT_H
#define MRING_TOOL_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

#define BUF_FLUSH_AT (64 * 1024)

/*
 * Zero-initialised, it is empty.  Not NUL-terminated.  Once an append
 * fails (out of memory, or an encoding error in buf_fmt), oom stays set,
 * every later append fails, and buf_drain() refuses to write: a caller
 * may append a whole row and check once, but must then set len back to
 * where the row began.
 */
struct buf {
	char *p;
	size_t len, cap;
	bool oom;
};

int buf_grow(struct buf *b, size_t n);

/* Room for @n more bytes: 0, or -ENOMEM. */
static inline int buf_reserve(struct buf *b, size_t n)
{
	return n <= b->cap - b->len && !b->oom ? 0 : buf_grow(b, n);
}

/* Appenders: 0, or -ENOMEM (nothing appended). */
static inline int buf_put(struct buf *b, const void *s, size_t n)
{
	int err = buf_reserve(b, n);

	if (err)
		return err;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

static inline int buf_putc(struct buf *b, char c)
{
	int err = buf_reserve(b, 1);

	if (err)
		return err;
	b->p[b->len++] = c;
	return 0;
}

int buf_puts(struct buf *b, const char *s);
int buf_u64(struct buf *b, uint64_t v);
/* fmt_shortest() appended; NaN/Inf are the caller's business. */
int buf_double(struct buf *b, double v);
/* @v as buf_double(), NaN and +-Inf as Python's json writes (and reads) them. */
int buf_json_number(struct buf *b, double v);
/* printf; -EINVAL for an encoding error. */
int buf_fmt(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* @s as a JSON string (quotes included; bad UTF-8 becomes U+FFFD). */
void buf_json_str(struct buf *b, const char *s);
void buf_free(struct buf *b);
/* write(2) all of @b to @fd and empty it: 0, -ENOMEM (oom set), -errno. */
int buf_write_out(struct buf *b, int fd);

/*
 * Write @b out to @fd at *@written and empty it; with @sync, fsync too.
 * On failure the file is cut back to @committed (what the last commit
 * made durable) and *@written follows: -errno.
 */
int buf_drain(struct buf *b, int fd, uint64_t *written, uint64_t committed, bool sync);

#endif
