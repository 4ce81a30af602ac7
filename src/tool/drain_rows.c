// SPDX-License-Identifier: MIT
/*
 * drain_rows.c - events of one segment -> rows for the sinks.
 *
 *  - Step rows: every ON_STEP value of one step, in one row.  The row is
 *    written when the step ends: at the next step, an epoch end, a LOST
 *    event, or when the segment is finished.  A metric logged twice in
 *    one step starts a new row (a row never holds a key twice).  A row
 *    still open at a commit is kept in the drain state, not written, so
 *    read batches and commits never split a step.
 *  - Epoch rows: the epoch results of one mring_epoch_end(), in one row at
 *    the epoch's last step.
 *  - Loss rows: one per LOST event, with mring_lost.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"

/* Hand @r to every sink; after a failure, nothing more is written. */
int emit(struct drain *d, const struct row *r)
{
	if (d->failed)
		return -ECANCELED;
	for (int i = 0; i < d->nouts; i++) {
		int ret = d->outs[i].ops->write(d->outs[i].s, r);

		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n",
				d->outs[i].ops->path(d->outs[i].s), strerror(-ret));
			d->failed = d->output_failed = true;
			return ret;
		}
	}
	d->rows++;
	return 0;
}

static int keybuf_reserve(struct drain *d, int n)
{
	const char **k, **h;

	if (n <= d->keycap)
		return 0;
	k = realloc(d->keybuf, (size_t)n * sizeof(*k));
	if (!k)
		return -ENOMEM;
	d->keybuf = k;
	h = realloc(d->hfbuf, (size_t)n * sizeof(*h));
	if (!h)
		return -ENOMEM;
	d->hfbuf = h;
	d->keycap = n;
	return 0;
}

/* Write the row @p holds (if any) and empty it. */
int pending_flush(struct drain *d, struct seg *g, struct pending *p, enum row_kind kind)
{
	struct row r = {
		.kind = kind, .step = p->step, .epoch = p->epoch, .rank = g->rank,
		.wall_ns = p->wall_ns, .n = p->n, .vals = p->vals,
	};
	int ret = 0;

	if (p->active && p->n) {
		ret = keybuf_reserve(d, p->n);
		for (int i = 0; i < p->n && !ret; i++) {
			ret = names_cover(g, p->ids[i]);
			if (!ret) {
				const struct names *nm = &g->names[p->ids[i]];

				d->keybuf[i] = kind == ROW_EPOCH ? nm->epoch : nm->step;
				ret = d->keybuf[i] ? 0 : -EBADMSG;
				/* HF has no per-epoch mean of what is logged per step */
				d->hfbuf[i] = kind == ROW_EPOCH && (nm->flags & MRING_ON_STEP) ?
					      NULL : nm->hf;
			}
		}
		r.keys = d->keybuf;
		r.hf = d->hfbuf;
		ret = ret ? ret : emit(d, &r);
	}
	p->active = false;
	p->n = 0;
	return ret;
}

int pending_add(struct drain *d, struct pending *p, const struct mring_event *ev, int id)
{
	if (!p->active) {
		p->active = true;
		p->step = ev->step;
		p->epoch = ev->epoch;
		p->wall_ns = ev->wall_ns;
		p->gen = ++d->gen;
	}
	if (p->n == p->cap) {
		int cap = p->cap ? 2 * p->cap : 32;
		int *ids = realloc(p->ids, (size_t)cap * sizeof(*ids));
		double *v;

		if (!ids)
			return -ENOMEM;
		p->ids = ids;
		v = realloc(p->vals, (size_t)cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		p->vals = v;
		p->cap = cap;
	}
	p->ids[p->n] = id;
	p->vals[p->n++] = ev->value;
	return 0;
}

void pending_free(struct pending *p)
{
	free(p->ids);
	free(p->vals);
}

static int take_value(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct pending *p = &g->step_row;
	struct names *nm = &g->names[ev->metric];
	int ret;

	if (!nm->step)
		return -EBADMSG;	/* a value of a metric not ON_STEP */
	if (d->every)
		return window_add(d, g, ev);
	/* a new step, or the same metric twice in one step: a new row */
	if (p->active && (ev->step != p->step || ev->epoch != p->epoch || nm->mark == p->gen)) {
		ret = pending_flush(d, g, p, ROW_STEP);
		if (ret < 0)
			return ret;
	}
	ret = pending_add(d, p, ev, ev->metric);
	nm->mark = p->gen;
	return ret;
}

static int take_epoch_value(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	int ret;

	if (!g->names[ev->metric].epoch)
		return -EBADMSG;	/* an epoch result of a metric not ON_EPOCH */
	ret = pending_flush(d, g, &g->step_row, ROW_STEP);
	if (!ret)
		ret = window_flush(d, g);
	if (!ret && g->epoch_row.active && g->epoch_row.epoch != ev->epoch)
		ret = pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
	return ret ? ret : pending_add(d, &g->epoch_row, ev, ev->metric);
}

/* Everything of the epoch that ended: its last step row, window, epoch row. */
static int epoch_rows_flush(struct drain *d, struct seg *g)
{
	int ret = pending_flush(d, g, &g->step_row, ROW_STEP);

	if (!ret)
		ret = window_flush(d, g);	/* a window never spans epochs */
	return ret ? ret : pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
}

/* An EPOCH_END: the epoch's rows, then the sinks that want to know. */
static int epoch_ended(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	int ret = epoch_rows_flush(d, g);

	for (int i = 0; !ret && i < d->nouts; i++) {
		struct out *o = &d->outs[i];

		if (!o->ops->epoch_end)
			continue;
		ret = o->ops->epoch_end(o->s, g->rank, ev->epoch, ev->step);
		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n", o->ops->path(o->s),
				strerror(-ret));
			d->failed = d->output_failed = true;
		}
	}
	return ret;
}

static int take_lost(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct row r = {
		.kind = ROW_LOST, .step = ev->step, .epoch = ev->epoch,
		.rank = g->rank, .wall_ns = ev->wall_ns, .lost = (uint64_t)ev->value,
	};
	int ret = pending_flush(d, g, &g->step_row, ROW_STEP);

	if (ret < 0)
		return ret;
	ret = emit(d, &r);
	if (!ret)
		g->lost += r.lost;
	return ret;
}

/*
 * Take one event of @g into rows.  Returns 0, or -errno: -EBADMSG for an
 * event the segment cannot have sent (a metric it does not have, a value
 * of a metric without that flag), -ENOMEM, or a sink's error.
 */
int take_event(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	int ret = 0;

	if (ev->kind == MRING_EV_VALUE || ev->kind == MRING_EV_EPOCH_VALUE ||
	    ev->kind == MRING_EV_EPOCH_WEIGHT) {
		ret = names_cover(g, ev->metric);
		if (ret < 0)
			return ret;
	}
	/* the per-rank rows come first, then the cross-rank one */
	if (d->reduce && ev->kind == MRING_EV_EPOCH_END) {
		ret = epoch_ended(d, g, ev);
		return ret ? ret : take_reduce(d, g, ev);
	}
	if (d->reduce) {
		ret = take_reduce(d, g, ev);
		if (ret < 0)
			return ret;
	}
	switch (ev->kind) {
	case MRING_EV_VALUE:
		return take_value(d, g, ev);
	case MRING_EV_REWIND:
		return rewind_take(d, g, ev);	/* a step too */
	case MRING_EV_STEP:
		return pending_flush(d, g, &g->step_row, ROW_STEP);
	case MRING_EV_EPOCH_VALUE:
		return take_epoch_value(d, g, ev);
	case MRING_EV_EPOCH_END:
		return epoch_ended(d, g, ev);
	case MRING_EV_LOST:
		return take_lost(d, g, ev);
	}
	return 0;
}

/* The producer is gone and its ring read to the end: write what is open. */
int seg_finish(struct drain *d, struct seg *g)
{
	int ret = pending_flush(d, g, &g->step_row, ROW_STEP);

	if (!ret)
		ret = window_flush(d, g);
	return ret ? ret : pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
}

/* ---- open rows in the drain state ------------------------------------- */

static void row_save(FILE *f, const struct seg *g, const struct pending *p, char kind)
{
	if (!p->active || !p->n)
		return;
	fprintf(f, "row %c %llu %u %lld %d", kind, (unsigned long long)p->step, p->epoch,
		(long long)p->wall_ns, p->n);
	for (int i = 0; i < p->n; i++)
		fprintf(f, " %d:%a", p->ids[i], p->vals[i]);
	fprintf(f, " | %s\n", g->path);
}

void rows_save(FILE *f, const struct seg *g)
{
	row_save(f, g, &g->step_row, 's');
	row_save(f, g, &g->epoch_row, 'e');
}

int rows_load(struct drain *d, const char *line)
{
	unsigned long long step;
	long long wall;
	unsigned epoch;
	int n, pos = 0;
	char kind;
	const char *p = line, *path = strstr(line, " | ");
	struct seg *g = path ? seg_by_path(d, path + 3) : NULL;
	struct pending *row;

	if (sscanf(p, "row %c %llu %u %lld %d%n", &kind, &step, &epoch, &wall, &n, &pos) != 5 ||
	    (kind != 's' && kind != 'e') || n <= 0 || n > (int)MRING_MAX_METRICS || !path)
		return -EBADMSG;
	if (!g)
		return 0;	/* a segment not drained now */
	row = kind == 's' ? &g->step_row : &g->epoch_row;
	if (row->active)
		return -EBADMSG;
	p += pos;
	for (int k = 0; k < n; k++) {
		struct mring_event ev = { .step = step, .epoch = epoch, .wall_ns = wall };
		int id;

		pos = 0;
		if (sscanf(p, " %d:%la%n", &id, &ev.value, &pos) != 2 || !pos ||
		    id < 0 || id >= (int)MRING_MAX_METRICS || p + pos > path)
			return -EBADMSG;
		if (pending_add(d, row, &ev, id) < 0)
			return -ENOMEM;
		p += pos;
	}
	return p == path ? 0 : -EBADMSG;
}

/*
 * After a resume: the names of every metric the restored rows, window and
 * stash refer to (the segment must have them), and the marks of the
 * restored step row.
 */
int rows_restored(struct drain *d, struct seg *g)
{
	int max = window_max_id(&g->win), ret;

	(void)d;
	if (g->stash_id > max)
		max = g->stash_id;
	for (int i = 0; i < g->step_row.n; i++)
		max = g->step_row.ids[i] > max ? g->step_row.ids[i] : max;
	for (int i = 0; i < g->epoch_row.n; i++)
		max = g->epoch_row.ids[i] > max ? g->epoch_row.ids[i] : max;
	if (max < 0)
		return 0;
	ret = names_cover(g, max);
	if (ret < 0)
		return ret;
	for (int i = 0; i < g->step_row.n; i++) {
		struct names *nm = &g->names[g->step_row.ids[i]];

		if (!nm->step || nm->mark == g->step_row.gen)
			return -EBADMSG;	/* not ON_STEP, or twice in the row */
		nm->mark = g->step_row.gen;
	}
	for (int i = 0; i < g->epoch_row.n; i++)
		if (!g->names[g->epoch_row.ids[i]].epoch)
			return -EBADMSG;
	return 0;
}
