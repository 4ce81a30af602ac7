// SPDX-License-Identifier: MIT
/*
 * text.c - append buffer, exact numbers, failure-safe writes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text.h"

static bool buf_reserve(struct buf *b, size_t n)
{
	size_t cap;
	char *p;

	if (b->len + n <= b->cap)
		return true;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

void buf_put(struct buf *b, const char *s, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

void buf_putc(struct buf *b, char c)
{
	buf_put(b, &c, 1);
}

void buf_puts(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

void buf_u64(struct buf *b, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	buf_put(b, tmp + i, sizeof(tmp) - (size_t)i);
}

void buf_double(struct buf *b, double v)
{
	char tmp[40];
	int prec, n = 0;

	for (prec = 15; prec <= 17; prec++) {
		n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	buf_put(b, tmp, (size_t)n);
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

int buf_drain(struct buf *b, int fd, uint64_t *written, uint64_t committed, bool sync)
{
	size_t off = 0;
	ssize_t n;
	int err;

	while (off < b->len) {
		n = pwrite(fd, b->p + off, b->len - off, (off_t)(*written + off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : EIO;
			goto fail;
		}
		off += (size_t)n;
	}
	*written += b->len;
	b->len = 0;
	if (sync && fsync(fd) < 0) {
		err = errno;
		goto fail;
	}
	return 0;
fail:
	/* nothing past the last commit may survive a failure */
	if (ftruncate(fd, (off_t)committed) == 0)
		*written = committed;
	b->len = 0;
	return -err;
}
