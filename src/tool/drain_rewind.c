// SPDX-License-Identifier: MIT
/*
 * drain_rewind.c - a run that went back to a step (REWIND: resumed from
 * a checkpoint).  By default the rows of the voided steps (>= the REWIND's
 * step, of the segment's rank) are removed from the JSONL and CSV files,
 * so each file holds one clean history; TensorBoard drops points of a
 * lower step by itself.  --on-rewind keep writes a marker row instead.
 *
 * Exactly once.  Voiding rewrites a file (a temporary file renamed over
 * it), which the drain state's committed sizes cannot describe half
 * done, so the state says it is under way:
 *
 *   1. the rows before the REWIND go to the sinks; sinks committed and
 *      synced, state written with "void STEP SEGMENT" (the library
 *      position does not move: the REWIND is not taken yet);
 *   2. each JSONL/CSV output is closed, rewritten without the voided
 *      rows (reading only its committed bytes), and reopened at its new
 *      size;
 *   3. the state is written again, without the void line and with the
 *      new sizes; then the REWIND is taken like a STEP.
 *
 * A drainer killed between 1 and 3 finds the void line at restart and
 * voids again before opening the outputs (rewind_recover()): the file is
 * then either the committed one or already voided, nothing was appended
 * to it in between, and voiding is idempotent.  The REWIND is read again
 * (the library position is before it) and voids once more, harmlessly.
 *
 * Rows are recognized by what this drain writes: a JSONL row ends with
 * `"rank": R, ` (several segments), `"epoch": E, "step": S}`; a CSV row
 * holds numbers and empty cells under the header's step and rank
 * columns.  A line that does not parse is kept.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drain.h"
#include "text.h"
#include "util.h"

#define CHUNK	(64 * 1024)

struct voider {
	int32_t rank;		/* -1: rows without a rank */
	uint64_t step;
	bool csv;
	bool header_seen;
	int step_col, rank_col;	/* CSV: column indices, -1 if absent */
};

/* JSONL: is this row (without its newline) one to remove? */
static bool jsonl_void(const struct voider *v, const char *line, size_t len)
{
	struct jsonl_row r;

	return jsonl_row_parse(line, len, &r) && r.rank == v->rank && r.step >= v->step;
}

/* The @col-th cell of a CSV line of numbers: [*b, *e). */
static bool csv_cell(const char *line, size_t len, int col, const char **b, const char **e)
{
	const char *p = line, *end = line + len;

	for (int i = 0; i < col; i++) {
		p = memchr(p, ',', (size_t)(end - p));
		if (!p)
			return false;
		p++;
	}
	*b = p;
	*e = memchr(p, ',', (size_t)(end - p));
	if (!*e)
		*e = end;
	return true;
}

/* The header: which columns are step and rank (names are quoted when odd). */
static void csv_header(struct voider *v, const char *line, size_t len)
{
	const char *p = line, *end = line + len;

	v->step_col = v->rank_col = -1;
	for (int col = 0; p <= end; col++) {
		const char *q = p;
		bool quoted = q < end && *q == '"';

		if (quoted) {		/* "..." with "" inside */
			for (q++; q < end; q++)
				if (*q == '"' && (q + 1 >= end || q[1] != '"'))
					break;
				else if (*q == '"')
					q++;
			q = q < end ? q + 1 : end;
		} else {
			q = memchr(p, ',', (size_t)(end - p));
			if (!q)
				q = end;
			if (q - p == 4 && !memcmp(p, "step", 4))
				v->step_col = col;
			if (q - p == 4 && !memcmp(p, "rank", 4))
				v->rank_col = col;
		}
		p = q + 1;
	}
}

static bool csv_void(struct voider *v, const char *line, size_t len)
{
	const char *b, *e;
	uint64_t s, r;
	int32_t row_rank = -1;

	if (!v->header_seen) {
		v->header_seen = true;
		csv_header(v, line, len);
		return false;
	}
	if (v->step_col < 0 || !csv_cell(line, len, v->step_col, &b, &e) ||
	    parse_digits(b, e, &s) != e)
		return false;
	if (v->rank_col >= 0 && csv_cell(line, len, v->rank_col, &b, &e) && b < e) {
		if (parse_digits(b, e, &r) != e)
			return false;
		row_rank = (int32_t)r;
	}
	return row_rank == v->rank && s >= v->step;
}

/* Copy the lines of [0, @size) of @in to @out that are not void. */
static int filter_lines(struct voider *v, int in, int out_fd, uint64_t size, uint64_t *kept)
{
	struct buf line = { 0 }, out = { 0 };
	char *chunk = malloc(CHUNK);
	uint64_t off = 0;
	int ret = chunk ? 0 : -ENOMEM;

	*kept = 0;
	while (!ret && off < size) {
		size_t want = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		ssize_t n = pread(in, chunk, want, (off_t)off);

		if (n <= 0) {
			ret = n < 0 ? -errno : 0;
			break;		/* shorter than recorded: voided already */
		}
		off += (uint64_t)n;
		for (ssize_t i = 0; i < n && !ret; i++) {
			buf_putc(&line, chunk[i]);
			if (chunk[i] != '\n')
				continue;
			if (!(v->csv ? csv_void(v, line.p, line.len - 1) :
			      jsonl_void(v, line.p, line.len - 1))) {
				buf_put(&out, line.p, line.len);
				*kept += line.len;
			}
			line.len = 0;
			if (out.len >= CHUNK)
				ret = buf_write_out(&out, out_fd);
		}
		if (line.oom || out.oom)
			ret = -ENOMEM;
	}
	if (!ret)
		ret = buf_write_out(&out, out_fd);	/* a partial last line: not committed */
	free(chunk);
	buf_free(&line);
	buf_free(&out);
	return ret;
}

struct void_fill {
	struct voider *v;
	int in;
	uint64_t size, kept;
};

static int fill_kept(int fd, void *ctx)
{
	struct void_fill *f = ctx;

	return filter_lines(f->v, f->in, fd, f->size, &f->kept);
}

/* Rewrite @dir/@name without the void rows; *@new_size its size after. */
static int void_file(struct voider *v, const char *dir, const char *name, uint64_t size,
		     uint64_t *new_size)
{
	struct void_fill f = { .v = v, .size = size };
	char tmp[512];
	int dirfd, ret;

	snprintf(tmp, sizeof(tmp), ".%s.rewind.tmp", name);
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	f.in = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	ret = f.in < 0 ? -errno : file_replace_by(dirfd, name, tmp, fill_kept, &f);
	if (f.in >= 0)
		close(f.in);
	close(dirfd);
	if (!ret)
		*new_size = f.kept;
	return ret;
}

/* Void one output (JSONL or CSV; others need nothing): 0, 1 done, -errno. */
static int void_output(struct out *o, int32_t rank, uint64_t step)
{
	struct voider v = { .rank = rank, .step = step };
	char *dir, *name, *slash;
	uint64_t size;
	int ret;

	if (o->ops == &sink_csv_ops) {
		v.csv = true;
		dir = strdup(o->arg);
		name = strdup("metrics.csv");
	} else if (o->ops == &sink_hf_ops) {	/* its rows are JSONL rows */
		dir = strdup(o->arg);
		name = strdup(HF_ROWS_NAME);
	} else if (o->ops == &sink_jsonl_ops) {
		slash = strrchr(o->arg, '/');
		dir = slash ? strndup(o->arg, (size_t)(slash - o->arg)) : strdup(".");
		name = strdup(slash ? slash + 1 : o->arg);
	} else {
		return 0;
	}
	ret = dir && name ? void_file(&v, *dir ? dir : "/", name, o->st.size, &size) : -ENOMEM;
	if (!ret)
		o->st.size = size;
	free(dir);
	free(name);
	return ret ? ret : 1;
}

static void void_failed(struct drain *d, struct out *o, int err)
{
	fprintf(stderr, "mring drain: %s: removing the rows of a rewind: %s\n", o->arg,
		strerror(-err));
	d->failed = d->output_failed = true;
}

/* --on-rewind keep: a row {"mring_rewind": STEP} at the step. */
static int rewind_marker(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	static const char *const key = "mring_rewind";
	double v = (double)ev->step;
	struct row r = {
		.kind = ROW_STEP, .step = ev->step, .epoch = ev->epoch, .rank = g->rank,
		.wall_ns = ev->wall_ns, .n = 1, .keys = &key, .vals = &v,
	};

	return emit(d, &r);
}

int rewind_take(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	int ret = pending_flush(d, g, &g->step_row, ROW_STEP);

	if (!ret && d->every)
		ret = window_flush(d, g);
	if (ret < 0)
		return ret;
	fprintf(stderr, "mring drain: %s: the run went back to step %llu (resumed from a "
		"checkpoint): %s\n", g->path, (unsigned long long)ev->step,
		d->keep_rewinds ? "a mring_rewind row marks it; the rows of the steps "
		"after it stay" : "the rows of steps >= it drained before are removed");
	if (d->keep_rewinds)
		return rewind_marker(d, g, ev);
	/* 1: everything before the REWIND committed, and the void recorded */
	g->void_step = ev->step;
	g->void_pending = true;
	ret = drain_checkpoint(d);
	if (ret < 0)
		return ret;
	/* 2: each file rewritten, its sink reopened at the new size */
	for (int i = 0; i < d->nouts; i++) {
		struct out *o = &d->outs[i];

		if (o->ops != &sink_csv_ops && o->ops != &sink_jsonl_ops &&
		    o->ops != &sink_hf_ops)
			continue;
		o->ops->close(o->s);
		o->s = NULL;
		ret = void_output(o, g->rank, ev->step);
		if (ret >= 0)
			ret = o->ops->open(&o->s, o->arg, &o->st);
		if (ret < 0) {
			void_failed(d, o, ret);
			return ret;
		}
	}
	/* 3: the new sizes recorded, the void done */
	g->void_pending = false;
	return drain_checkpoint(d);
}

int rewind_recover(struct drain *d)
{
	for (int k = 0; k < d->nsegs; k++) {
		struct seg *g = &d->segs[k];

		if (!g->void_pending)
			continue;
		for (int i = 0; i < d->nouts; i++) {
			struct out *o = &d->outs[i];
			int ret = o->in_state ? void_output(o, g->rank, g->void_step) : 0;

			if (ret < 0) {
				void_failed(d, o, ret);
				return ret;
			}
		}
		fprintf(stderr, "mring drain: %s: finished removing the rows of the rewind to "
			"step %llu that a killed drainer had begun\n", g->path,
			(unsigned long long)g->void_step);
		g->void_pending = false;
	}
	return 0;
}
