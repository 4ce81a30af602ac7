// SPDX-License-Identifier: MIT
/*
 * text.c - the tool's one append buffer, exact numbers, failure-safe
 * writes, directories.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"
#include "tool.h"

int buf_grow(struct buf *b, size_t n)
{
	size_t cap;
	char *p;

	if (b->oom)
		return -ENOMEM;
	if (n <= b->cap - b->len)
		return 0;
	if (n >= SIZE_MAX / 2 - b->len)
		goto oom;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		goto oom;
	b->p = p;
	b->cap = cap;
	return 0;
oom:
	b->oom = true;
	return -ENOMEM;
}

int buf_puts(struct buf *b, const char *s)
{
	return buf_put(b, s, strlen(s));
}

int buf_fmt(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, err = buf_reserve(b, 256);

	if (err)
		return err;
	va_start(ap, fmt);
	/* vsnprintf writes a NUL after the text: room for it, uncounted */
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = true;	/* sticky like a failed allocation */
		return -EINVAL;
	}
	if ((size_t)n >= b->cap - b->len) {
		err = buf_reserve(b, (size_t)n + 1);
		if (err)
			return err;
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

int buf_u64(struct buf *b, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return buf_put(b, tmp + i, sizeof(tmp) - (size_t)i);
}

int buf_double(struct buf *b, double v)
{
	char tmp[40];
	int n = fmt_shortest(tmp, sizeof(tmp), v);

	return buf_put(b, tmp, (size_t)n);
}

int buf_json_number(struct buf *b, double v)
{
	if (isnan(v))
		return buf_puts(b, "NaN");
	if (isinf(v))
		return buf_puts(b, v > 0 ? "Infinity" : "-Infinity");
	return buf_double(b, v);
}

void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){ 0 };
}

int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int buf_write_out(struct buf *b, int fd)
{
	int ret = b->oom ? -ENOMEM : write_all(fd, b->p, b->len);

	if (!ret)
		b->len = 0;
	return ret;
}

int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
	const char *c = p;

	while (n) {
		ssize_t w = pwrite(fd, c, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		c += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

int buf_drain(struct buf *b, int fd, uint64_t *written, uint64_t committed, bool sync)
{
	/* an append failed: what the buffer holds is not what was asked */
	int err = b->oom ? -ENOMEM : pwrite_all(fd, b->p, b->len, *written);

	if (!err) {
		*written += b->len;
		b->len = 0;
		if (sync && fsync(fd) < 0)
			err = -errno;
	}
	if (!err)
		return 0;
	/* nothing past the last commit may survive a failure */
	if (ftruncate(fd, (off_t)committed) == 0)
		*written = committed;
	b->len = 0;
	return err;
}

/* One level of mkdir -p: fine if @path already is a directory. */
static int mkdir_one(const char *path)
{
	struct stat st;

	if (mkdir(path, 0755) && errno != EEXIST)
		return -errno;
	if (stat(path, &st))
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];
	size_t n = strlen(dir);
	int err;

	if (n == 0)
		return -ENOENT;
	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, dir, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		err = mkdir_one(tmp);
		*p = '/';
		if (err)
			return err;
	}
	return mkdir_one(tmp);
}

int mkdir_parent(const char *file)
{
	const char *slash = strrchr(file, '/');
	char *dir;
	int err;

	if (!slash || slash == file)
		return 0;	/* the working directory, or / */
	dir = strndup(file, (size_t)(slash - file));
	if (!dir)
		return -ENOMEM;
	err = mkdir_p(dir);
	free(dir);
	return err;
}

int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) && errno != EINVAL)
		err = -errno;
	close(fd);
	return err;
}

int lock_output(int fd)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return -EBUSY;
	/* ENOLCK, EINVAL, EOPNOTSUPP: a file system without locks */
	return 0;
}

int sink_state_set_extra(struct sink_state *st, const char *text)
{
	char *copy = NULL;

	/* the same text at every commit: no allocation */
	if (text && st->extra && !strcmp(text, st->extra))
		return 0;
	if (text && !(copy = strdup(text)))
		return -ENOMEM;
	free(st->extra);
	st->extra = copy;
	return 0;
}

void sink_state_clear(struct sink_state *st)
{
	free(st->extra);
	*st = (struct sink_state){ 0 };
}

/*
 * Length of the well-formed UTF-8 sequence at @p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0.  @p is
 * NUL-terminated, and NUL is never a continuation byte.
 */
int utf8_len(const unsigned char *p)
{
	unsigned char lo = 0x80, hi = 0xbf;
	int n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;	/* a continuation byte, C0, C1, F5..FF */
	if (p[0] == 0xe0)
		lo = 0xa0;	/* overlong */
	else if (p[0] == 0xed)
		hi = 0x9f;	/* UTF-16 surrogates */
	else if (p[0] == 0xf0)
		lo = 0x90;	/* overlong */
	else if (p[0] == 0xf4)
		hi = 0x8f;	/* above U+10FFFF */
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/*
 * @s as a JSON string, quotes included.  Text from a segment is trusted
 * no further than its bytes: control characters are escaped, and each
 * byte that is not part of well-formed UTF-8 becomes U+FFFD, so the
 * output is valid JSON (RFC 8259 wants UTF-8) whatever the segment holds.
 */
void buf_json_str(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	buf_putc(b, '"');
	while (*p) {
		int n = utf8_len(p);

		if (n == 0) {
			buf_put(b, "\xef\xbf\xbd", 3);	/* U+FFFD */
			p++;
		} else if (*p < 0x20) {
			buf_fmt(b, "\\u%04x", *p++);
		} else if (*p == '"' || *p == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)*p++);
		} else {
			buf_put(b, p, (size_t)n);
			p += n;
		}
	}
	buf_putc(b, '"');
}

/* The tool's clocks (tool.h). */
double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t now_real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int ends_a_line(int fd, uint64_t size)
{
	char c;
	ssize_t n;

	if (size == 0)
		return 0;
	n = pread(fd, &c, 1, (off_t)(size - 1));
	if (n < 0)
		return -errno;
	return n == 1 && c == '\n' ? 0 : -EBADMSG;
}

const char *mem_last(const char *p, size_t len, const char *pat)
{
	size_t n = strlen(pat);

	for (size_t i = len >= n ? len - n + 1 : 0; i-- > 0;)
		if (!memcmp(p + i, pat, n))
			return p + i;
	return NULL;
}

const char *parse_digits(const char *p, const char *end, uint64_t *v)
{
	const char *start = p;

	*v = 0;
	for (; p < end && *p >= '0' && *p <= '9' && p - start < 20; p++)
		*v = *v * 10 + (uint64_t)(*p - '0');
	return p > start ? p : NULL;
}

int sink_lines_open(int dirfd, const char *name, const struct sink_state *resume, int *fd)
{
	struct stat st;
	int ret;

	*fd = openat(dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
		     0644);
	if (*fd < 0)
		return -errno;
	if (fstat(*fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	ret = lock_output(*fd);
	if (ret)
		return ret;
	if (!resume) {
		/* never clobber a log this drain did not write */
		if (st.st_size > 0 || st.st_uid != geteuid())
			return -EEXIST;
		return 0;
	}
	if ((uint64_t)st.st_size < resume->size)
		return -EIO;
	ret = ends_a_line(*fd, resume->size);
	if (ret)
		return ret;
	if (ftruncate(*fd, (off_t)resume->size) < 0)
		return -errno;
	return 0;
}

bool jsonl_row_parse(const char *line, size_t len, struct jsonl_row *r)
{
	const char *end = line + len, *ep, *q, *rank;
	uint64_t v;

	if (len < 2 || line[0] != '{' || end[-1] != '}')
		return false;
	ep = mem_last(line, len, "\"epoch\": ");
	if (!ep || !(q = parse_digits(ep + 9, end, &v)) || v > UINT32_MAX ||
	    (size_t)(end - q) < 11 || memcmp(q, ", \"step\": ", 10) ||
	    parse_digits(q + 10, end, &r->step) != end - 1)
		return false;
	r->epoch = (uint32_t)v;
	r->members = line + 1;
	r->mlen = (size_t)(ep - r->members);
	r->rank = -1;
	/* "rank": R, directly before "epoch": */
	rank = mem_last(r->members, r->mlen, "\"rank\": ");
	if (rank && (q = parse_digits(rank + 8, ep, &v)) && ep - q == 2 && q[0] == ',' &&
	    q[1] == ' ' && v <= INT32_MAX) {
		r->rank = (int32_t)v;
		r->mlen = (size_t)(rank - r->members);
	}
	return true;
}
