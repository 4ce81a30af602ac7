/* SPDX-License-Identifier: MIT */
/*
 * text.h - an append buffer for the text sinks, exact number formatting,
 * and writing a buffer out so that a failure leaves the file as it was
 * at the last commit.
 */
#ifndef MRING_TOOL_TEXT_H
#define MRING_TOOL_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define BUF_FLUSH_AT (64 * 1024)

struct buf {
	char *p;
	size_t len, cap;
	bool oom;		/* an append failed; checked once per row */
};

void buf_putc(struct buf *b, char c);
void buf_put(struct buf *b, const char *s, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_u64(struct buf *b, uint64_t v);
/* fmt_shortest() appended; NaN/Inf are the caller's business. */
void buf_double(struct buf *b, double v);
void buf_free(struct buf *b);

/*
 * Write @b out to @fd at *@written and empty it; with @sync, fsync too.
 * On failure the file is cut back to @committed (what the last commit
 * made durable) and *@written follows: -errno.
 */
int buf_drain(struct buf *b, int fd, uint64_t *written, uint64_t committed, bool sync);

#endif
