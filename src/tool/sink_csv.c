// SPDX-License-Identifier: MIT
/*
 * sink_csv.c - `mring drain --csv DIR`: DIR/metrics.csv, laid out like
 * Lightning's CSVLogger (sorted union of all keys as the header, one row
 * per event, empty cells for keys a row lacks), without its cost: rows
 * are appended, and the file is rewritten only when a new key appears
 * (Lightning #17725 rewrote the whole file on every flush).
 *
 * Durability protocol.  The drain state records (size, header) at each
 * commit.  A header rewrite writes DIR/.metrics.csv.tmp (new header, every
 * row on disk re-mapped, then the buffered rows), fsyncs it, renames it
 * over metrics.csv and fsyncs DIR.  It runs whenever buffered rows must
 * reach the disk and the column set has grown since the header on disk
 * was written: normally inside commit(), or earlier when the buffer
 * outgrows FLUSH_AT.  Rows with a new key therefore never touch the old
 * file, and there is one rewrite per flush, not one per key.
 *
 * Resume, from the recorded (size, header):
 *  - first line == recorded header: no rewrite since; truncate to size.
 *  - first line differs: a rewrite was renamed into place after the
 *    commit that was recorded.  The rewritten file starts with the
 *    committed rows, each re-mapped (only empty cells inserted, so each
 *    row grew by exactly ncols_new - ncols_old bytes), possibly followed
 *    by rows that were never committed (the rewrite also carries the
 *    buffered rows, and rows may be appended after the rename before the
 *    caller records the new state).  The committed prefix is found by
 *    that arithmetic and the file truncated to it; when the file holds
 *    exactly the committed rows this accepts it as is.  So whatever
 *    instant the process is killed, the file comes back to the commit.
 *
 * A fresh start refuses an existing metrics.csv (-EEXIST): whether to
 * move it away or resume is the drain tool's decision, not the sink's.
 * Except an empty one of ours that no drain has open: a drain killed
 * between creating it and recording it in its state left it, and
 * reusing an empty file loses nothing.
 *
 * The directory may be shared: metrics.csv is opened O_NOFOLLOW (a
 * symlink there is -ELOOP, its target untouched), and the temporary file
 * is created O_EXCL | O_NOFOLLOW after removing a stale one, so nobody
 * can make the drain write a file of their choosing.
 *
 * Rows contain only numbers and empty cells, so splitting rows on ','
 * is safe; header cells are RFC 4180-quoted when needed and parsed as
 * such.  Keys must not contain control characters: the header is kept in
 * the drain state as one line (of any length).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"
#include "util.h"

#define CSV_NAME	"metrics.csv"
#define CSV_TMP		".metrics.csv.tmp"
#define HP_NAME		"hparams.yaml"	/* Lightning's name, next to metrics.csv */
#define HP_TMP		".hparams.yaml.tmp"
#define FLUSH_AT	(64 * 1024)
#define CHUNK		(64 * 1024)

/* per-row cell sources besides "index into r->vals" */
enum { CELL_EMPTY = -1, CELL_STEP = -2, CELL_EPOCH = -3, CELL_RANK = -4,
       CELL_LOST = -5 };



struct sink {
	int dirfd, fd;
	char *path;		/* DIR/metrics.csv, for messages */
	char **cols;		/* sorted (strcmp) column names, owned */
	int ncols;
	const char **dcols;	/* columns of the header on disk, into cols[] */
	int ndcols;		/* 0: nothing on disk yet */
	char *dhdr;		/* header line on disk, without '\n' */
	size_t hdr_len;		/* length of the header line of cols[] */
	int *cell;		/* per-row scratch, ncols entries */
	unsigned *mark;		/* per-row duplicate detection, ncols entries */
	unsigned gen;
	struct buf out;		/* rows not yet written, laid out by cols[] */
	uint64_t disk;		/* bytes in the file */
	uint64_t committed;	/* bytes made durable by the last commit */
	int err;		/* sticky: rows since the last commit are gone */
};

/* ---- file helpers ---- */

static ssize_t pread_full(int fd, char *p, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

typedef int (*line_fn)(void *ctx, const char *line, size_t len);

/*
 * Call @fn on each '\n'-terminated line of [@from, @to), '\n' included,
 * reading in chunks: the file may be far larger than memory wants.
 * Returns 1 if @fn stopped the walk (returned > 0), 0 at @to, or -errno;
 * an unterminated last line is -EBADMSG.
 */
static int for_each_line(int fd, uint64_t from, uint64_t to, line_fn fn, void *ctx)
{
	struct buf in = { 0 };
	uint64_t off = from;
	int err = 0;

	while (!err && off < to) {
		size_t want = to - off < CHUNK ? (size_t)(to - off) : CHUNK;
		size_t start = 0;
		ssize_t n;
		char *nl;

		err = buf_reserve(&in, want);
		if (err)
			break;
		n = pread_full(fd, in.p + in.len, want, off);
		if (n <= 0) {
			err = n < 0 ? (int)n : -EBADMSG;	/* shrank under us */
			break;
		}
		off += (uint64_t)n;
		in.len += (size_t)n;
		while (!err && (nl = memchr(in.p + start, '\n', in.len - start))) {
			size_t len = (size_t)(nl - (in.p + start)) + 1;

			err = fn(ctx, in.p + start, len);
			start += len;
		}
		memmove(in.p, in.p + start, in.len - start);
		in.len -= start;
	}
	if (!err && in.len)
		err = -EBADMSG;
	free(in.p);
	return err;
}

/* ---- header: RFC 4180 cells ---- */

static bool needs_quote(const char *name)
{
	return strpbrk(name, ",\"\r\n") != NULL;
}

static size_t cell_len(const char *name)
{
	size_t n = strlen(name);
	const char *q;

	if (!needs_quote(name))
		return n;
	n += 2;
	for (q = name; (q = strchr(q, '"')); q++)
		n++;
	return n;
}

static size_t hdr_length(char *const *cols, int n)
{
	size_t len = n ? (size_t)n - 1 : 0;

	for (int i = 0; i < n; i++)
		len += cell_len(cols[i]);
	return len;
}

static char *hdr_build(char *const *cols, int n)
{
	struct buf b = { 0 };
	int err = 0;

	for (int i = 0; i < n && !err; i++) {
		const char *c = cols[i];

		if (i)
			err = buf_putc(&b, ',');
		if (!needs_quote(c)) {
			err = err ?: buf_put(&b, c, strlen(c));
			continue;
		}
		err = err ?: buf_putc(&b, '"');
		for (; *c && !err; c++)
			err = *c == '"' ? buf_put(&b, "\"\"", 2) : buf_putc(&b, *c);
		err = err ?: buf_putc(&b, '"');
	}
	err = err ?: buf_putc(&b, '\0');
	if (err) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

static void cols_free(char **cols, int n)
{
	for (int i = 0; i < n; i++)
		free(cols[i]);
	free(cols);
}

/* One cell at *@pp; leaves *@pp after it (on ',' or @end). */
static int hdr_cell(const char **pp, const char *end, struct buf *b)
{
	const char *p = *pp;
	int err = 0;

	b->len = 0;
	if (p < end && *p == '"') {
		for (p++;; p++) {
			if (p == end)
				return -EBADMSG;	/* unterminated quote */
			if (*p == '"' && (p + 1 == end || p[1] != '"'))
				break;
			if (*p == '"')
				p++;			/* "" is one quote */
			err = buf_putc(b, *p);
			if (err)
				return err;
		}
		p++;
		if (p != end && *p != ',')
			return -EBADMSG;
	} else {
		const char *c = memchr(p, ',', (size_t)(end - p));

		if (!c)
			c = end;
		if (memchr(p, '"', (size_t)(c - p)))
			return -EBADMSG;
		err = buf_put(b, p, (size_t)(c - p));
		p = c;
	}
	*pp = p;
	return err ?: buf_putc(b, '\0');
}

static bool has_col(char *const *cols, int n, const char *name);

/*
 * Parse a header line we wrote: non-empty cells, strictly sorted, with
 * epoch and step.  Anything else is not our file (-EBADMSG).
 */
static int hdr_parse(const char *line, size_t len, char ***out, int *nout)
{
	const char *p = line, *end = line + len;
	struct buf cell = { 0 };
	char **cols = NULL;
	int n = 0, err = 0;

	while (!err) {
		char **c;

		err = hdr_cell(&p, end, &cell);
		if (err)
			break;
		if (cell.len <= 1 || (n && strcmp(cols[n - 1], cell.p) >= 0)) {
			err = -EBADMSG;
			break;
		}
		c = realloc(cols, sizeof(*cols) * (size_t)(n + 1));
		if (!c || !(c[n] = strdup(cell.p))) {
			cols = c ?: cols;
			err = -ENOMEM;
			break;
		}
		cols = c;
		n++;
		if (p == end)
			break;
		p++;			/* the ',' */
	}
	free(cell.p);
	if (!err && (!has_col(cols, n, "epoch") || !has_col(cols, n, "step")))
		err = -EBADMSG;
	if (err) {
		cols_free(cols, n);
		return err;
	}
	*out = cols;
	*nout = n;
	return 0;
}

/* ---- columns ---- */

static int col_cmp(const void *key, const void *elem)
{
	return strcmp(key, *(char *const *)elem);
}

static int col_index(char *const *cols, int n, const char *name)
{
	char *const *c = bsearch(name, cols, (size_t)n, sizeof(*cols), col_cmp);

	return c ? (int)(c - cols) : -1;
}

static bool has_col(char *const *cols, int n, const char *name)
{
	return col_index(cols, n, name) >= 0;
}

/* map[i]: index in @to of from[i]; @to is a superset, both sorted. */
static int cols_map(const char *const *from, int nfrom, char *const *to, int nto,
		    int **out)
{
	int *map = malloc(sizeof(*map) * (size_t)(nfrom ? nfrom : 1));

	if (!map)
		return -ENOMEM;
	for (int i = 0; i < nfrom; i++) {
		map[i] = col_index(to, nto, from[i]);
		if (map[i] < 0) {
			free(map);
			return -EBADMSG;	/* columns only ever grow */
		}
	}
	*out = map;
	return 0;
}

/*
 * Re-lay one row of @nold cells as a row of @nnew cells, cell i going to
 * column map[i] (strictly increasing): only empty cells are inserted, so
 * the row grows by exactly nnew - nold bytes.  @len includes the '\n'.
 */
static int remap_line(struct buf *dst, const char *line, size_t len,
		      const int *map, int nold, int nnew)
{
	const char *p = line, *end = line + len - 1;
	int err = buf_reserve(dst, len + (size_t)(nnew - nold));
	int i = 0;

	for (int j = 0; j < nnew && !err; j++) {
		const char *c;

		if (j)
			err = buf_putc(dst, ',');
		if (i >= nold || map[i] != j)
			continue;
		c = memchr(p, ',', (size_t)(end - p)) ?: end;
		if ((i == nold - 1) != (c == end))
			return -EBADMSG;	/* wrong number of cells */
		err = err ?: buf_put(dst, p, (size_t)(c - p));
		p = c + 1;
		i++;
	}
	if (!err && i != nold)
		return -EBADMSG;
	return err ?: buf_putc(dst, '\n');
}

static int remap_rows(struct buf *dst, const char *src, size_t len,
		      const int *map, int nold, int nnew)
{
	const char *p = src, *end = src + len, *nl;
	int err = 0;

	while (!err && (nl = memchr(p, '\n', (size_t)(end - p)))) {
		err = remap_line(dst, p, (size_t)(nl - p) + 1, map, nold, nnew);
		p = nl + 1;
	}
	return err ?: (p == end ? 0 : -EBADMSG);
}

/* (Re)size the per-row scratch arrays to ncols. */
static int scratch_resize(struct sink *s)
{
	int *cell = realloc(s->cell, sizeof(*cell) * (size_t)s->ncols);
	unsigned *mark;

	if (!cell)
		return -ENOMEM;
	s->cell = cell;
	mark = realloc(s->mark, sizeof(*mark) * (size_t)s->ncols);
	if (!mark)
		return -ENOMEM;
	memset(mark, 0, sizeof(*mark) * (size_t)s->ncols);
	s->mark = mark;
	s->gen = 0;
	return 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Add the @n new names (sorted, unique, absent from cols) and re-lay the
 * buffered rows under the grown header.  On failure nothing changed.
 */
static int cols_add(struct sink *s, const char **names, int n)
{
	int nnew = s->ncols + n, i = 0, j = 0, k = 0, err;
	char **cols = calloc((size_t)nnew, sizeof(*cols));
	int *map = malloc(sizeof(*map) * (size_t)(s->ncols ? s->ncols : 1));
	struct buf out = { 0 };

	err = !cols || !map ? -ENOMEM : 0;
	for (; !err && k < nnew; k++) {
		if (j < n && (i == s->ncols || strcmp(names[j], s->cols[i]) < 0)) {
			cols[k] = strdup(names[j++]);
			err = cols[k] ? 0 : -ENOMEM;
		} else {
			map[i] = k;
			cols[k] = s->cols[i++];
		}
	}
	if (!err && s->out.len)
		err = remap_rows(&out, s->out.p, s->out.len, map, s->ncols, nnew);
	if (err) {
		for (k = 0; cols && k < nnew; k++)
			if (!has_col(s->cols, s->ncols, cols[k] ?: ""))
				free(cols[k]);
		free(cols);
		free(map);
		free(out.p);
		return err;
	}
	free(map);
	free(s->cols);		/* the names moved to cols */
	s->cols = cols;
	s->ncols = nnew;
	s->hdr_len = hdr_length(cols, nnew);
	if (s->out.len) {
		free(s->out.p);
		s->out = out;
	}
	return scratch_resize(s);
}

/* ---- rows ---- */

/* Shortest round-trip text; nan/inf/-inf as Python's float() spells them. */
static int fmt_double(char *out, size_t len, double v)
{
	if (isnan(v))
		return snprintf(out, len, "nan");
	if (isinf(v))
		return snprintf(out, len, v < 0 ? "-inf" : "inf");
	return fmt_shortest(out, len, v);
}

static bool key_ok(const char *key)
{
	if (!key || !*key || sink_key_reserved(key))
		return false;
	for (const unsigned char *c = (const unsigned char *)key; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return false;
	return true;
}

/*
 * Check the row and grow the columns for it.  Validation comes first so
 * that a rejected row leaves the header alone.
 */
static int row_columns(struct sink *s, const struct row *r)
{
	const char **miss = malloc(sizeof(*miss) * (size_t)(r->n + 2));
	int nmiss = 0, err = 0;

	if (!miss)
		return -ENOMEM;
	if (++s->gen == 0) {	/* wrapped: old marks could collide */
		memset(s->mark, 0, sizeof(*s->mark) * (size_t)s->ncols);
		s->gen = 1;
	}
	for (int k = 0; k < r->n && !err; k++) {
		int j;

		if (!key_ok(r->keys[k])) {
			err = -EINVAL;
			break;
		}
		j = col_index(s->cols, s->ncols, r->keys[k]);
		if (j < 0)
			miss[nmiss++] = r->keys[k];
		else if (s->mark[j] == s->gen)
			err = -EINVAL;		/* the same key twice */
		else
			s->mark[j] = s->gen;
	}
	if (!err && r->rank >= 0 && !has_col(s->cols, s->ncols, "rank"))
		miss[nmiss++] = "rank";
	if (!err && r->kind == ROW_LOST && !has_col(s->cols, s->ncols, "mring_lost"))
		miss[nmiss++] = "mring_lost";
	qsort(miss, (size_t)nmiss, sizeof(*miss), str_cmp);
	for (int k = 1; k < nmiss && !err; k++)
		if (!strcmp(miss[k - 1], miss[k]))
			err = -EINVAL;
	if (!err && nmiss)
		err = cols_add(s, miss, nmiss);
	free(miss);
	return err;
}

static int cell_text(const struct row *r, int src, char *t, size_t len)
{
	switch (src) {
	case CELL_EMPTY:
		return 0;
	case CELL_STEP:
		return snprintf(t, len, "%" PRIu64, r->step);
	case CELL_EPOCH:
		return snprintf(t, len, "%" PRIu32, r->epoch);
	case CELL_RANK:
		return snprintf(t, len, "%" PRId32, r->rank);
	case CELL_LOST:
		return snprintf(t, len, "%" PRIu64, r->lost);
	default:
		return fmt_double(t, len, r->vals[src]);
	}
}

/* Append the row to the buffer; on failure the buffer is as it was. */
static int row_format(struct sink *s, const struct row *r)
{
	size_t len = s->out.len;
	char t[40];
	int err = 0;

	for (int j = 0; j < s->ncols; j++)
		s->cell[j] = CELL_EMPTY;
	for (int k = 0; k < r->n; k++)
		s->cell[col_index(s->cols, s->ncols, r->keys[k])] = k;
	s->cell[col_index(s->cols, s->ncols, "step")] = CELL_STEP;
	s->cell[col_index(s->cols, s->ncols, "epoch")] = CELL_EPOCH;
	if (r->rank >= 0)
		s->cell[col_index(s->cols, s->ncols, "rank")] = CELL_RANK;
	if (r->kind == ROW_LOST)
		s->cell[col_index(s->cols, s->ncols, "mring_lost")] = CELL_LOST;

	for (int j = 0; j < s->ncols && !err; j++) {
		int n = cell_text(r, s->cell[j], t, sizeof(t));

		if (j)
			err = buf_putc(&s->out, ',');
		err = err ?: buf_put(&s->out, t, (size_t)n);
	}
	err = err ?: buf_putc(&s->out, '\n');
	if (err)
		s->out.len = len;
	return err;
}

/* ---- flushing ---- */

/*
 * A write failed: nothing after the last commit is on disk any more, and
 * the rows buffered since are dropped, so the sink refuses further work;
 * the caller reopens from its last state and replays.
 */
static int fail(struct sink *s, int err)
{
	if (ftruncate(s->fd, (off_t)s->committed) == 0)
		lseek(s->fd, (off_t)s->committed, SEEK_SET);
	s->disk = s->committed;
	s->out.len = 0;
	s->err = err;
	return err;
}

/* The header on disk is now the one of cols[]. */
static int disk_cols_sync(struct sink *s, char *hdr)
{
	const char **d = malloc(sizeof(*d) * (size_t)s->ncols);

	if (!d) {
		free(hdr);
		return -ENOMEM;
	}
	for (int i = 0; i < s->ncols; i++)
		d[i] = s->cols[i];
	free(s->dcols);
	free(s->dhdr);
	s->dcols = d;
	s->ndcols = s->ncols;
	s->dhdr = hdr;
	return 0;
}

struct rewrite {
	int tmpfd;
	struct buf w;		/* staged for tmpfd */
	int *map;
	int nold, nnew;
	uint64_t in_pos, out_pos, committed, new_committed;
};

static int rewrite_line(void *ctx, const char *line, size_t len)
{
	struct rewrite *rw = ctx;
	size_t before = rw->w.len;
	int err = remap_line(&rw->w, line, len, rw->map, rw->nold, rw->nnew);

	if (err)
		return err;
	rw->in_pos += len;
	rw->out_pos += rw->w.len - before;
	/* where the committed prefix ends in the new layout */
	if (rw->in_pos == rw->committed)
		rw->new_committed = rw->out_pos;
	if (rw->w.len >= FLUSH_AT) {
		err = write_all(rw->tmpfd, rw->w.p, rw->w.len);
		rw->w.len = 0;
	}
	return err;
}

/* Fill the temporary file: new header, old rows re-mapped, buffered rows. */
static int rewrite_fill(struct sink *s, struct rewrite *rw, const char *hdr)
{
	uint64_t dhdr_len = strlen(s->dhdr) + 1;
	int err;

	rw->in_pos = dhdr_len;
	rw->out_pos = s->hdr_len + 1;
	rw->committed = s->committed;
	/* nothing committed stays nothing; a committed bare header can't be */
	rw->new_committed = s->committed ? rw->out_pos : 0;
	err = cols_map(s->dcols, s->ndcols, s->cols, s->ncols, &rw->map);
	if (err)
		return err;
	rw->nold = s->ndcols;
	rw->nnew = s->ncols;
	err = buf_put(&rw->w, hdr, s->hdr_len);
	err = err ?: buf_putc(&rw->w, '\n');
	err = err ?: for_each_line(s->fd, dhdr_len, s->disk, rewrite_line, rw);
	err = err ?: buf_put(&rw->w, s->out.p, s->out.len);
	err = err ?: write_all(rw->tmpfd, rw->w.p, rw->w.len);
	rw->out_pos += s->out.len;
	err = err ?: (fsync(rw->tmpfd) ? -errno : 0);
	free(rw->map);
	free(rw->w.p);
	return err;
}

/*
 * The column set grew since the header on disk was written: write the
 * whole file anew under the new header and rename it into place.  The
 * old file is never modified, so a kill before the rename leaves it as
 * it was; after the rename, resume finds the committed prefix (above).
 */
static int rewrite(struct sink *s)
{
	struct rewrite rw = { .tmpfd = -1 };
	char *hdr = hdr_build(s->cols, s->ncols);
	int err;

	if (!hdr)
		return fail(s, -ENOMEM);
	/*
	 * A name someone else may have put there (a symlink to their
	 * choice of file): remove it, and create ours or fail.
	 */
	err = unlinkat(s->dirfd, CSV_TMP, 0) && errno != ENOENT ? -errno : 0;
	if (!err) {
		rw.tmpfd = openat(s->dirfd, CSV_TMP, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
				  O_CLOEXEC, 0644);
		err = rw.tmpfd < 0 ? -errno : 0;
	}
	/* locked before the rename makes it metrics.csv */
	err = err ?: lock_output(rw.tmpfd);
	err = err ?: rewrite_fill(s, &rw, hdr);
	if (!err && renameat(s->dirfd, CSV_TMP, s->dirfd, CSV_NAME))
		err = -errno;
	if (err) {
		if (rw.tmpfd >= 0) {
			close(rw.tmpfd);
			unlinkat(s->dirfd, CSV_TMP, 0);
		}
		free(hdr);
		return fail(s, err);
	}
	/* renamed: from here on the new file is the file */
	close(s->fd);
	s->fd = rw.tmpfd;
	lseek(s->fd, 0, SEEK_END);
	s->disk = rw.out_pos;
	s->committed = rw.new_committed;
	s->out.len = 0;
	err = disk_cols_sync(s, hdr);
	if (!err && fsync(s->dirfd))
		err = -errno;
	return err ? fail(s, err) : 0;
}

/* Append the buffered rows (after the header if the file is empty). */
static int append(struct sink *s)
{
	char *hdr = NULL;
	int err = 0;

	if (!s->out.len)
		return 0;
	if (!s->ndcols) {
		hdr = hdr_build(s->cols, s->ncols);
		if (!hdr)
			return fail(s, -ENOMEM);
		err = write_all(s->fd, hdr, s->hdr_len);
		err = err ?: write_all(s->fd, "\n", 1);
		if (err) {
			free(hdr);
			return fail(s, err);
		}
		s->disk += s->hdr_len + 1;
		err = disk_cols_sync(s, hdr);
	}
	err = err ?: write_all(s->fd, s->out.p, s->out.len);
	if (err)
		return fail(s, err);
	s->disk += s->out.len;
	s->out.len = 0;
	return 0;
}

static int flush(struct sink *s)
{
	if (s->ndcols && s->ndcols != s->ncols)
		return rewrite(s);
	return append(s);
}

/* ---- resume ---- */

struct prefix {
	uint64_t target;	/* committed row bytes in the old layout */
	uint64_t acc;		/* row bytes seen so far, old layout */
	uint64_t pos;		/* file offset after the rows seen */
	int grow;		/* bytes each row grew by */
};

static int prefix_line(void *ctx, const char *line, size_t len)
{
	struct prefix *pf = ctx;

	(void)line;		/* rows of numbers: only their length counts */
	if (len <= (size_t)pf->grow)
		return -EBADMSG;
	pf->acc += len - (size_t)pf->grow;
	pf->pos += len;
	if (pf->acc > pf->target)
		return -EBADMSG;	/* no row boundary at the commit */
	return pf->acc == pf->target;
}

/*
 * The file's header @line differs from the committed @old one: find the
 * end of the committed rows in the rewritten file.
 */
static int resume_rewritten(struct sink *s, const struct sink_state *st,
			    const char *line, size_t len, uint64_t fsize)
{
	const char *extra = st->extra ?: "";
	struct prefix pf = { .pos = len + 1 };
	char **old;
	int nold, *map = NULL, err;

	err = hdr_parse(extra, strlen(extra), &old, &nold);
	if (err)
		return err;
	err = hdr_parse(line, len, &s->cols, &s->ncols);
	err = err ?: cols_map((const char **)old, nold, s->cols, s->ncols, &map);
	cols_free(old, nold);
	if (err)
		return err;
	free(map);		/* only needed to check old ⊆ new */
	if (st->size < strlen(extra) + 1)
		return -EBADMSG;
	pf.target = st->size - (strlen(extra) + 1);
	pf.grow = s->ncols - nold;
	if (pf.target) {
		err = for_each_line(s->fd, pf.pos, fsize, prefix_line, &pf);
		if (err <= 0)		/* 0: ran out of rows before the commit */
			return err ?: -EBADMSG;
	}
	s->committed = pf.pos;
	return 0;
}

/* for_each_line() callback: keep the first line, without its '\n', and stop */
static int first_line(void *ctx, const char *line, size_t len)
{
	char **out = ctx;

	if (memchr(line, '\0', len - 1))
		return -EBADMSG;	/* not a header we wrote */
	*out = strndup(line, len - 1);
	return *out ? 1 : -ENOMEM;
}

static int resume(struct sink *s, const struct sink_state *st)
{
	const char *extra = st->extra ?: "";
	char *line = NULL;
	struct stat sb;
	size_t len;
	int err;

	if (fstat(s->fd, &sb))
		return -errno;
	if (st->size == 0)
		return 0;		/* nothing was committed: start empty */
	/* the header has no length limit: read up to its '\n' */
	err = for_each_line(s->fd, 0, (uint64_t)sb.st_size, first_line, &line);
	if (err <= 0)
		return err ?: -EBADMSG;	/* 0: no line at all */
	len = strlen(line);
	if (!strcmp(line, extra)) {
		if ((uint64_t)sb.st_size < st->size || st->size < (uint64_t)len + 1)
			err = -EBADMSG;	/* lost committed bytes */
		else
			err = hdr_parse(line, len, &s->cols, &s->ncols);
		s->committed = st->size;
	} else {
		err = resume_rewritten(s, st, line, len, (uint64_t)sb.st_size);
	}
	if (err) {
		free(line);
		return err;
	}
	s->hdr_len = len;
	return disk_cols_sync(s, line);
}

/* ---- sink_ops ---- */

static void csv_close(struct sink *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	cols_free(s->cols, s->ncols);
	free(s->dcols);
	free(s->dhdr);
	free(s->cell);
	free(s->mark);
	free(s->out.p);
	free(s->path);
	free(s);
}

static int default_cols(struct sink *s)
{
	s->cols = calloc(2, sizeof(*s->cols));
	if (!s->cols)
		return -ENOMEM;
	s->cols[0] = strdup("epoch");
	s->cols[1] = strdup("step");
	s->ncols = 2;
	if (!s->cols[0] || !s->cols[1])
		return -ENOMEM;
	s->hdr_len = hdr_length(s->cols, 2);
	return 0;
}

/*
 * metrics.csv, never through a symlink (-ELOOP), nor a FIFO or device
 * (O_NONBLOCK: a FIFO would hang the open), nor one another drain has
 * open (-EBUSY).
 */
static int open_file(struct sink *s, const struct sink_state *st)
{
	const int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
	bool created = false;
	struct stat sb;
	int err;

	/* fresh, or nothing committed yet: create it if it is not there */
	if (!st || st->size == 0) {
		s->fd = openat(s->dirfd, CSV_NAME, flags | O_CREAT | O_EXCL, 0644);
		created = s->fd >= 0;
	}
	if (!created)
		s->fd = openat(s->dirfd, CSV_NAME, flags);
	if (s->fd < 0)
		return -errno;
	if (fstat(s->fd, &sb))
		return -errno;
	if (!S_ISREG(sb.st_mode))
		return -EINVAL;
	err = lock_output(s->fd);
	if (err)
		return err;
	/* fresh: never clobber, but an empty one of ours is a killed drain's */
	if (!st && !created && (sb.st_size > 0 || sb.st_uid != geteuid()))
		return -EEXIST;
	/* the new name must survive a crash too */
	return created && fsync(s->dirfd) ? -errno : 0;
}

static int csv_open(struct sink **out, const char *dir, const struct sink_state *st)
{
	struct sink *s;
	int err;

	if (!out || !dir || !*dir)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = s->dirfd = -1;
	err = asprintf(&s->path, "%s/" CSV_NAME, dir) < 0 ? -ENOMEM : 0;
	if (err)
		s->path = NULL;
	err = err ?: mkdir_p(dir);
	if (!err) {
		s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		err = s->dirfd < 0 ? -errno : 0;
	}
	/* a rewrite killed before its rename */
	if (!err && unlinkat(s->dirfd, CSV_TMP, 0) && errno != ENOENT)
		err = -errno;
	err = err ?: open_file(s, st);
	if (!err && st)
		err = resume(s, st);
	if (!err && !s->cols)
		err = default_cols(s);
	if (!err && ftruncate(s->fd, (off_t)s->committed))
		err = -errno;
	if (!err && lseek(s->fd, (off_t)s->committed, SEEK_SET) < 0)
		err = -errno;
	err = err ?: scratch_resize(s);
	if (err) {
		csv_close(s);
		return err;
	}
	s->disk = s->committed;
	*out = s;
	return 0;
}

static int csv_write(struct sink *s, const struct row *r)
{
	int err;

	if (s->err)
		return s->err;
	if (!r || r->n < 0 || (r->n && (!r->keys || !r->vals)))
		return -EINVAL;
	err = row_columns(s, r);
	if (err)
		return err;
	err = row_format(s, r);
	if (err)
		return err;
	return s->out.len > FLUSH_AT ? flush(s) : 0;
}

static int csv_commit(struct sink *s, struct sink_state *st)
{
	int err;

	if (s->err)
		return s->err;
	if (s->out.len || s->disk != s->committed) {
		err = flush(s);
		if (err)
			return err;
	}
	/* the header of what is committed; out of memory commits nothing */
	err = sink_state_set_extra(st, s->disk ? s->dhdr : NULL);
	if (err)
		return fail(s, err);
	s->committed = s->disk;
	st->size = s->committed;
	return 0;
}

static int csv_sync(struct sink *s)
{
	if (s->err)
		return s->err;
	return fsync(s->fd) ? fail(s, -errno) : 0;
}

/* DIR/hparams.yaml, replaced atomically when its text changes. */
static int csv_hparams(struct sink *s, const struct hparams *hp)
{
	return hp->replace(s->dirfd, HP_NAME, HP_TMP, hp->yaml, hp->yaml_len);
}

static const char *csv_path(struct sink *s)
{
	return s->path;
}

const struct sink_ops sink_csv_ops = {
	.name = "csv",
	.open = csv_open,
	.write = csv_write,
	.commit = csv_commit,
	.sync = csv_sync,
	.path = csv_path,
	.close = csv_close,
	.hparams = csv_hparams,
};
