// SPDX-License-Identifier: MIT
/*
 * drain.c - `mring drain`: ring events -> rows -> sinks, exactly once.
 *
 * Exactly once, across SIGKILL at any instant (docs/drain.md):
 *  1. Readers are opened with MRING_NO_AUTOCOMMIT: the library position
 *     moves only when we say so.
 *  2. Every --flush-ms (and at exit), a commit: pending rows are handed to
 *     the sinks; each sink writes and fsyncs and reports its file size;
 *     then the drain state (each segment's next seq, each sink's size and
 *     extra) is written to a temporary file, fsynced and renamed over the
 *     state file; only then are the library positions committed.
 *  3. On start, an existing state file means resume: each sink cuts its
 *     file back to the recorded size (dropping what a killed drainer wrote
 *     after its last commit), and events below the recorded next seq are
 *     skipped (they were written, but the library position had not moved
 *     yet when the drainer died).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"
#include "tool.h"

#define READ_BATCH 1024
#define SMALL_BATCH 64	/* fewer events than this per segment: we are caught up */
#define STATE_MAGIC "mring-drain-state 1"

struct pending {
	bool active;
	uint64_t step;
	uint32_t epoch;
	int64_t wall_ns;
	int n, cap;
	const char **keys;
	double *vals;
	uint64_t gen;		/* marks which metrics are in this row */
};

struct names {
	unsigned flags;
	char step[80];		/* name, or name_step when also ON_EPOCH */
	char epoch[80];		/* name, or name_epoch when also ON_STEP */
	uint64_t mark;		/* pending.gen of the step row holding it */
};

/*
 * --every N (Hugging Face logging_steps): one row per window of N steps
 * holding each metric's mean over the window.  The window is part of the
 * drain state, so a restart continues it exactly.
 */
struct window {
	bool active;
	uint64_t index;		/* step / N */
	uint64_t last_step;
	uint32_t epoch;
	int64_t wall_ns;
	int n;			/* metrics with a slot below */
	double *sum;		/* per metric id: finite values */
	uint64_t *count;
	uint64_t *nonfinite;
};

/*
 * --reduce-ranks: each epoch's cross-rank result, folded from every
 * segment's epoch records (a MEAN from value * weight and weight, so it
 * is the exact weighted mean over all ranks, as Lightning's sync_dist);
 * written once every drained segment has ended that epoch.
 */
struct xmetric {
	char name[80];
	unsigned flags;
	double vw, w, sum, min, max;
	uint64_t n;		/* ranks folded in */
	bool incomplete;	/* a MEAN whose weight record was lost */
};

struct xepoch {
	bool used;
	uint32_t epoch;
	uint64_t step;		/* the latest last step among the ranks */
	int done;		/* segments that ended this epoch */
	int n;
	struct xmetric *m;
};

struct seg {
	char *path;
	struct mring_reader *r;
	int32_t rank;		/* -1 with a single segment */
	int64_t created_ns;	/* identifies this segment in the state */
	uint64_t skip_below;	/* events below this seq are in the sinks */
	uint64_t next_seq;	/* after the last event taken */
	bool done, crashed;
	struct names *names;
	int nnames;
	struct pending step_row, epoch_row;
	struct window win;
	int stash_id;		/* --reduce-ranks: a MEAN epoch value waiting */
	double stash_value;	/* for its weight record; -1: none */
	uint64_t events, lost;
};

struct out {
	const struct sink_ops *ops;
	const char *arg;
	struct sink *s;
	struct sink_state st;
	bool in_state;		/* the drain state records this output */
};

struct drain {
	struct seg *segs;
	int nsegs;
	struct out outs[3];
	int nouts;
	char *state_path;
	long flush_ms;
	uint64_t every;		/* --every N, 0: every step */
	bool reduce;		/* --reduce-ranks */
	struct xepoch *xe;
	int nxe;
	bool follow, wait;
	bool dirty;
	bool output_failed;	/* a sink write failed: never commit after it */
	uint64_t rows;
	uint64_t gen;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static const char drain_usage[] =
	"usage: mring drain [OPTIONS] SEGMENT...\n"
	"Drain mring segments into logger files, exactly once across restarts.\n"
	"\n"
	"  --jsonl FILE        one JSON object per row (Hugging Face log_history shape)\n"
	"  --csv DIR           DIR/metrics.csv (Lightning CSVLogger layout)\n"
	"  --tensorboard DIR   a TensorBoard event file in DIR\n"
	"  --state FILE        drain state (default: FILE.mring-state next to the\n"
	"                      JSONL file, or DIR/.mring-drain-state)\n"
	"  --follow            keep draining while producers live; exit when all are gone\n"
	"  --wait              wait for the segments to appear\n"
	"  --flush-ms N        a logged value reaches the files within N ms (default 1000)\n"
	"  --every N           one row per N steps with each metric's window mean\n"
	"                      (Hugging Face logging_steps); epoch rows unchanged\n"
	"  --reduce-ranks      also one cross-rank epoch row (no \"rank\") once every\n"
	"                      segment ended the epoch: exact weighted mean, sum, min, max\n"
	"\n"
	"Names follow Lightning: a metric logged ON_STEP and ON_EPOCH appears as\n"
	"name_step per step and name_epoch per epoch.  Losses appear as mring_lost rows.\n"
	"Exit: 0 done; 1 usage or segment error; 2 output error; 3 a producer crashed;\n"
	"128+N after signal N (everything read was flushed first).\n";

/* ---- names ----------------------------------------------------------- */

static int names_refresh(struct seg *g, int need)
{
	int n = mring_metric_count(g->r), old = g->nnames;
	struct names *p;

	if (n <= need)
		return -EBADMSG;
	p = realloc(g->names, (size_t)n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	g->names = p;
	for (int id = old; id < n; id++) {
		char name[64];
		unsigned flags;
		bool both;
		int ret = mring_metric_info(g->r, id, name, sizeof(name), &flags);

		if (ret < 0)
			return ret;
		both = (flags & MRING_ON_STEP) && (flags & MRING_ON_EPOCH);
		snprintf(p[id].step, sizeof(p[id].step), "%s%s%s", sink_key_reserved(name) ? "metric/" : "",
			 name, both ? "_step" : "");
		snprintf(p[id].epoch, sizeof(p[id].epoch), "%s%s%s", sink_key_reserved(name) ? "metric/" : "",
			 name, both ? "_epoch" : "");
		p[id].mark = 0;
		p[id].flags = flags;
	}
	g->nnames = n;
	return 0;
}

/* ---- rows ------------------------------------------------------------ */

static int emit(struct drain *d, const struct row *r)
{
	for (int i = 0; i < d->nouts; i++) {
		int ret = d->outs[i].ops->write(d->outs[i].s, r);

		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n",
				d->outs[i].ops->path(d->outs[i].s), strerror(-ret));
			d->output_failed = true;	/* no commit after this */
			return ret;
		}
	}
	d->rows++;
	return 0;
}

static int pending_flush(struct drain *d, struct seg *g, struct pending *p,
			 enum row_kind kind)
{
	struct row r = {
		.kind = kind, .step = p->step, .epoch = p->epoch, .rank = g->rank,
		.wall_ns = p->wall_ns, .n = p->n, .keys = p->keys, .vals = p->vals,
	};
	int ret = 0;

	if (p->active && p->n)
		ret = emit(d, &r);
	p->active = false;
	p->n = 0;
	return ret;
}

static int pending_add(struct drain *d, struct pending *p, const struct mring_event *ev,
		       const char *key)
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
		const char **k = realloc(p->keys, (size_t)cap * sizeof(*k));
		double *v;

		if (!k)
			return -ENOMEM;
		p->keys = k;
		v = realloc(p->vals, (size_t)cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		p->vals = v;
		p->cap = cap;
	}
	p->keys[p->n] = key;
	p->vals[p->n++] = ev->value;
	return 0;
}

static int window_grow(struct window *w, int n)
{
	double *sum;
	uint64_t *count, *nonfinite;

	if (n <= w->n)
		return 0;
	sum = realloc(w->sum, (size_t)n * sizeof(*sum));
	if (sum)
		w->sum = sum;
	count = realloc(w->count, (size_t)n * sizeof(*count));
	if (count)
		w->count = count;
	nonfinite = realloc(w->nonfinite, (size_t)n * sizeof(*nonfinite));
	if (nonfinite)
		w->nonfinite = nonfinite;
	if (!sum || !count || !nonfinite)
		return -ENOMEM;
	for (int i = w->n; i < n; i++) {
		w->sum[i] = 0;
		w->count[i] = w->nonfinite[i] = 0;
	}
	w->n = n;
	return 0;
}

/* The window's row: the mean of each metric's finite values (NaN if it
 * only had non-finite ones), at the window's last step. */
static int window_flush(struct drain *d, struct seg *g)
{
	struct window *w = &g->win;
	struct pending *p = &g->step_row;
	int ret = 0;

	if (!w->active)
		return 0;
	p->active = true;
	p->step = w->last_step;
	p->epoch = w->epoch;
	p->wall_ns = w->wall_ns;
	p->n = 0;
	for (int id = 0; id < w->n && !ret; id++) {
		struct mring_event ev = { .step = w->last_step, .epoch = w->epoch };

		if (!w->count[id] && !w->nonfinite[id])
			continue;
		ev.value = w->count[id] ? w->sum[id] / (double)w->count[id] : NAN;
		ret = pending_add(d, p, &ev, g->names[id].step);
		w->sum[id] = 0;
		w->count[id] = w->nonfinite[id] = 0;
	}
	w->active = false;
	return ret ? ret : pending_flush(d, g, p, ROW_STEP);
}

static int window_add(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct window *w = &g->win;
	uint64_t index = ev->step / d->every;
	int ret;

	if (w->active && (index != w->index || ev->epoch != w->epoch)) {
		ret = window_flush(d, g);
		if (ret < 0)
			return ret;
	}
	ret = window_grow(w, g->nnames);
	if (ret < 0)
		return ret;
	if (!w->active) {
		w->active = true;
		w->index = index;
		w->epoch = ev->epoch;
	}
	w->last_step = ev->step;
	w->wall_ns = ev->wall_ns;
	if (isfinite(ev->value)) {
		w->sum[ev->metric] += ev->value;
		w->count[ev->metric]++;
	} else {
		w->nonfinite[ev->metric]++;
	}
	return 0;
}

static int take_value(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct pending *p = &g->step_row;
	struct names *nm = &g->names[ev->metric];
	int ret;

	/* a new step, or the same metric twice in one step: a new row */
	if (p->active && (ev->step != p->step || ev->epoch != p->epoch || nm->mark == p->gen)) {
		ret = pending_flush(d, g, p, ROW_STEP);
		if (ret < 0)
			return ret;
	}
	ret = pending_add(d, p, ev, nm->step);
	nm->mark = p->gen;
	return ret;
}

static struct xepoch *xepoch_get(struct drain *d, uint32_t epoch)
{
	struct xepoch *x;
	int free_slot = -1;

	for (int i = 0; i < d->nxe; i++) {
		if (d->xe[i].used && d->xe[i].epoch == epoch)
			return &d->xe[i];
		if (!d->xe[i].used && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0) {
		x = realloc(d->xe, (size_t)(d->nxe + 1) * sizeof(*x));
		if (!x)
			return NULL;
		d->xe = x;
		free_slot = d->nxe++;
	}
	x = &d->xe[free_slot];
	*x = (struct xepoch){ .used = true, .epoch = epoch };
	return x;
}

static struct xmetric *xmetric_get(struct xepoch *x, const char *name, unsigned flags)
{
	struct xmetric *m;

	for (int i = 0; i < x->n; i++)
		if (!strcmp(x->m[i].name, name))
			return &x->m[i];
	m = realloc(x->m, (size_t)(x->n + 1) * sizeof(*m));
	if (!m)
		return NULL;
	x->m = m;
	m = &x->m[x->n++];
	*m = (struct xmetric){ .flags = flags, .min = NAN, .max = NAN };
	snprintf(m->name, sizeof(m->name), "%s", name);
	return m;
}

/* Fold one rank's epoch result in; an empty rank (NaN) adds nothing. */
static int xfold(struct drain *d, struct seg *g, const struct mring_event *ev,
		 int id, double value, double weight, bool incomplete)
{
	struct xepoch *x = xepoch_get(d, ev->epoch);
	struct xmetric *m = x ? xmetric_get(x, g->names[id].epoch, g->names[id].flags) : NULL;

	if (!m)
		return -ENOMEM;
	m->incomplete |= incomplete;
	if (isnan(value))
		return 0;
	m->n++;
	m->vw += value * weight;
	m->w += weight;
	m->sum += value;
	if (!(value >= m->min))
		m->min = value;
	if (!(value <= m->max))
		m->max = value;
	return 0;
}

static double xvalue(const struct xmetric *m)
{
	if (!m->n || m->incomplete)
		return NAN;
	if (m->flags & MRING_SUM)
		return m->sum;
	if (m->flags & MRING_MIN)
		return m->min;
	if (m->flags & MRING_MAX)
		return m->max;
	return m->w > 0 ? m->vw / m->w : NAN;
}

static int xepoch_emit(struct drain *d, struct xepoch *x)
{
	const char **keys = calloc((size_t)x->n + 1, sizeof(*keys));
	double *vals = calloc((size_t)x->n + 1, sizeof(*vals));
	struct row r = {
		.kind = ROW_EPOCH, .step = x->step, .epoch = x->epoch, .rank = -1,
		.n = x->n, .keys = keys, .vals = vals,
	};
	int ret = -ENOMEM;

	if (keys && vals) {
		for (int i = 0; i < x->n; i++) {
			keys[i] = x->m[i].name;
			vals[i] = xvalue(&x->m[i]);
		}
		ret = x->n ? emit(d, &r) : 0;
	}
	free(keys);
	free(vals);
	free(x->m);
	x->used = false;
	return ret;
}

/* A weight record that did not come: fold the value as incomplete. */
static int xstash_drop(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	int id = g->stash_id;

	if (id < 0)
		return 0;
	g->stash_id = -1;
	return xfold(d, g, ev, id, g->stash_value, 0, true);
}

static int take_reduce(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct xepoch *x;
	int ret = 0;

	if (ev->kind == MRING_EV_EPOCH_WEIGHT && g->stash_id == ev->metric) {
		g->stash_id = -1;
		return xfold(d, g, ev, ev->metric, g->stash_value, ev->value, false);
	}
	ret = xstash_drop(d, g, ev);
	if (ret < 0 || (ev->kind != MRING_EV_EPOCH_VALUE && ev->kind != MRING_EV_EPOCH_END))
		return ret;
	if (ev->kind == MRING_EV_EPOCH_VALUE) {
		if (g->names[ev->metric].flags & MRING_MEAN) {
			g->stash_id = ev->metric;
			g->stash_value = ev->value;
			return 0;
		}
		return xfold(d, g, ev, ev->metric, ev->value, 1, false);
	}
	x = xepoch_get(d, ev->epoch);
	if (!x)
		return -ENOMEM;
	if (ev->step > x->step)
		x->step = ev->step;
	return ++x->done == d->nsegs ? xepoch_emit(d, x) : 0;
}

static int take_event(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	int ret = 0;

	if ((ev->kind == MRING_EV_VALUE || ev->kind == MRING_EV_EPOCH_VALUE ||
	     ev->kind == MRING_EV_EPOCH_WEIGHT) && ev->metric >= g->nnames) {
		ret = names_refresh(g, ev->metric);
		if (ret < 0)
			return ret;
	}
	/* the per-rank rows come first, then the cross-rank one */
	if (d->reduce && ev->kind == MRING_EV_EPOCH_END) {
		ret = pending_flush(d, g, &g->step_row, ROW_STEP);
		if (!ret)
			ret = window_flush(d, g);
		if (!ret)
			ret = pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
		return ret ? ret : take_reduce(d, g, ev);
	}
	if (d->reduce) {
		ret = take_reduce(d, g, ev);
		if (ret < 0)
			return ret;
	}
	switch (ev->kind) {
	case MRING_EV_VALUE:
		return d->every ? window_add(d, g, ev) : take_value(d, g, ev);
	case MRING_EV_STEP:
		return pending_flush(d, g, &g->step_row, ROW_STEP);
	case MRING_EV_EPOCH_VALUE:
		ret = pending_flush(d, g, &g->step_row, ROW_STEP);
		if (!ret)
			ret = window_flush(d, g);
		if (!ret && g->epoch_row.active && g->epoch_row.epoch != ev->epoch)
			ret = pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
		if (!ret)
			ret = pending_add(d, &g->epoch_row, ev, g->names[ev->metric].epoch);
		return ret;
	case MRING_EV_EPOCH_END:
		ret = pending_flush(d, g, &g->step_row, ROW_STEP);
		if (!ret)
			ret = window_flush(d, g);	/* a window never spans epochs */
		if (!ret)
			ret = pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
		return ret;
	case MRING_EV_LOST: {
		struct row r = {
			.kind = ROW_LOST, .step = ev->step, .epoch = ev->epoch,
			.rank = g->rank, .wall_ns = ev->wall_ns, .lost = (uint64_t)ev->value,
		};

		ret = pending_flush(d, g, &g->step_row, ROW_STEP);
		g->lost += r.lost;
		return ret ? ret : emit(d, &r);
	}
	}
	return 0;
}

/* ---- state ------------------------------------------------------------ */

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int ret;

	if (!copy)
		return -ENOMEM;
	ret = fsync_dir(dirname(copy));
	free(copy);
	return ret;
}

/* An open --every window, exactly: sums in hex floating point. */
static void window_save(FILE *f, const struct seg *g)
{
	const struct window *w = &g->win;
	int n = 0;

	if (!w->active)
		return;
	for (int id = 0; id < w->n; id++)
		n += w->count[id] || w->nonfinite[id];
	fprintf(f, "window %llu %llu %u %lld %d", (unsigned long long)w->index,
		(unsigned long long)w->last_step, w->epoch, (long long)w->wall_ns, n);
	for (int id = 0; id < w->n; id++)
		if (w->count[id] || w->nonfinite[id])
			fprintf(f, " %d:%a:%llu:%llu", id, w->sum[id],
				(unsigned long long)w->count[id],
				(unsigned long long)w->nonfinite[id]);
	fprintf(f, " | %s\n", g->path);
}

static int window_load(struct drain *d, const char *line)
{
	unsigned long long index, last, cnt, nonfin;
	const char *p = line, *path;
	struct window *w = NULL;
	long long wall;
	unsigned epoch;
	int n, id, pos = 0;
	double sum;

	if (sscanf(p, "window %llu %llu %u %lld %d%n", &index, &last, &epoch, &wall, &n,
		   &pos) != 5 || n < 0 || n > (int)MRING_MAX_METRICS)
		return -EBADMSG;
	path = strstr(line, " | ");
	if (!path)
		return -EBADMSG;
	for (int i = 0; i < d->nsegs; i++)
		if (!strcmp(d->segs[i].path, path + 3))
			w = &d->segs[i].win;
	if (!w)
		return 0;	/* a segment not drained now */
	if (!d->every) {
		fprintf(stderr, "mring drain: %s has an --every window: give --every\n",
			d->state_path);
		return -EINVAL;
	}
	w->active = true;
	w->index = index;
	w->last_step = last;
	w->epoch = epoch;
	w->wall_ns = wall;
	p += pos;
	for (int k = 0; k < n; k++) {
		pos = 0;
		if (sscanf(p, " %d:%la:%llu:%llu%n", &id, &sum, &cnt, &nonfin, &pos) != 4 ||
		    id < 0 || id >= (int)MRING_MAX_METRICS || window_grow(w, id + 1) < 0)
			return -EBADMSG;
		w->sum[id] = sum;
		w->count[id] = cnt;
		w->nonfinite[id] = nonfin;
		p += pos;
	}
	return 0;
}

/* --reduce-ranks state: open epochs and a MEAN value awaiting its weight */
static void xstate_save(FILE *f, const struct drain *d)
{
	for (int i = 0; i < d->nxe; i++) {
		const struct xepoch *x = &d->xe[i];

		if (!x->used)
			continue;
		fprintf(f, "xepoch %u %llu %d\n", x->epoch, (unsigned long long)x->step, x->done);
		for (int k = 0; k < x->n; k++) {
			const struct xmetric *m = &x->m[k];

			fprintf(f, "xm %u %u %a %a %a %a %a %llu %d %s\n", x->epoch, m->flags, m->vw,
				m->w, m->sum, m->min, m->max, (unsigned long long)m->n,
				m->incomplete, m->name);
		}
	}
	for (int i = 0; i < d->nsegs; i++)
		if (d->segs[i].stash_id >= 0)
			fprintf(f, "xstash %d %a | %s\n", d->segs[i].stash_id,
				d->segs[i].stash_value, d->segs[i].path);
}

static int xstate_load(struct drain *d, const char *line)
{
	unsigned epoch, flags;
	unsigned long long step, n;
	double vw, w, sum, min, max, v;
	int done, inc, id, pos = 0;
	struct xepoch *x;
	struct xmetric *m;
	const char *path;

	if (!d->reduce) {
		fprintf(stderr, "mring drain: %s has --reduce-ranks state: give --reduce-ranks\n",
			d->state_path);
		return -EINVAL;
	}
	if (sscanf(line, "xepoch %u %llu %d", &epoch, &step, &done) == 3) {
		x = xepoch_get(d, epoch);
		if (!x)
			return -ENOMEM;
		x->step = step;
		x->done = done;
		return 0;
	}
	if (sscanf(line, "xm %u %u %la %la %la %la %la %llu %d %n", &epoch, &flags, &vw, &w,
		   &sum, &min, &max, &n, &inc, &pos) == 9 && pos) {
		x = xepoch_get(d, epoch);
		m = x ? xmetric_get(x, line + pos, flags) : NULL;
		if (!m)
			return -ENOMEM;
		m->vw = vw;
		m->w = w;
		m->sum = sum;
		m->min = min;
		m->max = max;
		m->n = n;
		m->incomplete = inc;
		return 0;
	}
	path = strstr(line, " | ");
	if (sscanf(line, "xstash %d %la", &id, &v) == 2 && path) {
		for (int i = 0; i < d->nsegs; i++) {
			if (!strcmp(d->segs[i].path, path + 3)) {
				d->segs[i].stash_id = id;
				d->segs[i].stash_value = v;
			}
		}
		return 0;
	}
	return -EBADMSG;
}

static int state_write(struct drain *d)
{
	char tmp[4200];
	FILE *f;
	int ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", d->state_path);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "%s\n", STATE_MAGIC);
	for (int i = 0; i < d->nsegs; i++)
		fprintf(f, "segment %llu %lld %s\n", (unsigned long long)d->segs[i].next_seq,
			(long long)d->segs[i].created_ns, d->segs[i].path);
	for (int i = 0; i < d->nsegs; i++)
		window_save(f, &d->segs[i]);
	xstate_save(f, d);
	for (int i = 0; i < d->nouts; i++)
		fprintf(f, "sink %s %llu %s\nextra %s\n", d->outs[i].ops->name,
			(unsigned long long)d->outs[i].st.size, d->outs[i].arg,
			d->outs[i].st.extra);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ret = -errno;
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, d->state_path) != 0)
		ret = -errno;
	if (!ret)
		ret = fsync_dir_of(d->state_path);
	return ret;
}

static void chomp(char *s)
{
	size_t n = strlen(s);

	if (n && s[n - 1] == '\n')
		s[n - 1] = '\0';
}

/*
 * Read the state of a previous drain with the same outputs.  Returns 1
 * when there is one, 0 when there is none (fresh start), -errno.
 */
static int state_read(struct drain *d)
{
	char *line = NULL;
	size_t cap = 0;
	int out = -1, ret = 1;
	FILE *f = fopen(d->state_path, "re");

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	if (getline(&line, &cap, f) < 0 || strncmp(line, STATE_MAGIC, strlen(STATE_MAGIC))) {
		ret = -EBADMSG;
		goto done;
	}
	while (ret > 0 && getline(&line, &cap, f) >= 0) {
		unsigned long long a;
		long long b;
		char name[32];
		int pos = 0;

		chomp(line);
		if (sscanf(line, "segment %llu %lld %n", &a, &b, &pos) == 2 && pos) {
			for (int i = 0; i < d->nsegs; i++) {
				struct seg *g = &d->segs[i];

				if (strcmp(g->path, line + pos))
					continue;
				if (g->created_ns != b) {
					fprintf(stderr, "mring drain: %s was replaced since %s was "
						"written\n", g->path, d->state_path);
					ret = -ESTALE;
				}
				g->skip_below = g->next_seq = a;
			}
		} else if (sscanf(line, "sink %31s %llu %n", name, &a, &pos) == 2 && pos) {
			out = -1;
			for (int i = 0; i < d->nouts; i++)
				if (!strcmp(d->outs[i].ops->name, name) &&
				    !strcmp(d->outs[i].arg, line + pos))
					out = i;
			if (out < 0) {
				fprintf(stderr, "mring drain: %s records an output (%s %s) not "
					"given now: use the same outputs, or another --state\n",
					d->state_path, name, line + pos);
				ret = -EINVAL;
			} else {
				d->outs[out].st.size = a;
				d->outs[out].in_state = true;
			}
		} else if (line[0] == 'x') {
			int err = xstate_load(d, line);

			if (err < 0)
				ret = err;
		} else if (!strncmp(line, "window ", 7)) {
			int err = window_load(d, line);

			if (err < 0)
				ret = err;
		} else if (!strncmp(line, "extra ", 6) && out >= 0) {
			snprintf(d->outs[out].st.extra, sizeof(d->outs[out].st.extra), "%s",
				 line + 6);
		} else {
			ret = -EBADMSG;
		}
	}
done:
	if (ret == -EBADMSG)
		fprintf(stderr, "mring drain: %s: not a drain state file\n", d->state_path);
	free(line);
	fclose(f);
	return ret;
}

/* Hand over every pending row, make the sinks durable, then the state,
 * and only then move the library positions. */
static int drain_commit(struct drain *d)
{
	int ret;

	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		ret = pending_flush(d, g, &g->step_row, ROW_STEP);
		if (!ret)
			ret = pending_flush(d, g, &g->epoch_row, ROW_EPOCH);
		if (ret < 0)
			return ret;
	}
	for (int i = 0; i < d->nouts; i++) {
		ret = d->outs[i].ops->commit(d->outs[i].s, &d->outs[i].st);
		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n",
				d->outs[i].ops->path(d->outs[i].s), strerror(-ret));
			return ret;
		}
	}
	ret = state_write(d);
	if (ret < 0) {
		fprintf(stderr, "mring drain: %s: %s\n", d->state_path, strerror(-ret));
		return ret;
	}
	for (int i = 0; i < d->nsegs; i++)
		if (d->segs[i].r)
			mring_commit(d->segs[i].r);
	d->dirty = false;
	return 0;
}

/* ---- setup ----------------------------------------------------------- */

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static void nap_ms(long ms)
{
	nap_us(ms * 1000);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int open_segments(struct drain *d, char **args, int nargs)
{
	struct seglist l;
	int ret;

	for (;;) {
		ret = seglist_expand(&l, args, nargs);
		if (ret != -ENOENT || !d->wait || stop_signal)
			break;
		nap_ms(50);
	}
	if (ret < 0) {
		fprintf(stderr, "mring drain: no segment matches %s%s\n", args[0],
			nargs > 1 ? " ..." : "");
		return ret;
	}
	d->segs = calloc((size_t)l.n, sizeof(*d->segs));
	if (!d->segs)
		return -ENOMEM;
	d->nsegs = l.n;
	for (int i = 0; i < l.n; i++) {
		struct seg *g = &d->segs[i];
		struct mring_status st;

		g->path = l.paths[i];
		g->stash_id = -1;
		for (;;) {
			ret = mring_reader_open(g->path, MRING_DRAIN | MRING_NO_AUTOCOMMIT, &g->r);
			if (ret != -EAGAIN || stop_signal)
				break;
			nap_ms(10);	/* being created */
		}
		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n", g->path, mring_strerror(ret));
			return ret;
		}
		mring_status_read(g->r, &st);
		g->rank = l.n > 1 ? st.rank : -1;
		g->created_ns = st.created_ns;
	}
	free(l.paths);		/* the strings now belong to the segments */
	return 0;
}

static char *default_state_path(const char *jsonl, const char *csv, const char *tb)
{
	char *p = NULL;

	if (jsonl)
		return asprintf(&p, "%s.mring-state", jsonl) < 0 ? NULL : p;
	return asprintf(&p, "%s/.mring-drain-state", csv ? csv : tb) < 0 ? NULL : p;
}

/*
 * Resume the outputs the state records.  One it does not record is new
 * (added since the last run): it is created like a fresh output, so an
 * existing file is never truncated, and starts at the drain position.
 */
static int open_outputs(struct drain *d, bool resume)
{
	for (int i = 0; i < d->nouts; i++) {
		struct out *o = &d->outs[i];
		bool resumed = resume && o->in_state;
		int ret = o->ops->open(&o->s, o->arg, resumed ? &o->st : NULL);

		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s%s\n", o->arg, strerror(-ret),
				ret == -EEXIST ? " (output exists and no drain state "
						 "says it is ours: remove it or give --state)" : "");
			return ret;
		}
		if (resume && !resumed)
			fprintf(stderr, "mring drain: %s: new output; it starts where %s "
				"left off, without the rows drained before\n", o->arg,
				d->state_path);
	}
	return 0;
}

/* ---- the loop ---------------------------------------------------------- */

static int read_segment(struct drain *d, struct seg *g, int *got)
{
	static struct mring_event ev[READ_BATCH];
	int n = mring_read(g->r, ev, READ_BATCH), ret;

	if (n < 0) {
		fprintf(stderr, "mring drain: %s: %s\n", g->path, mring_strerror(n));
		return n;
	}
	for (int i = 0; i < n; i++) {
		if (ev[i].seq < g->skip_below)
			continue;	/* already in the sinks before a restart */
		ret = take_event(d, g, &ev[i]);
		if (ret < 0)
			return ret;
		g->next_seq = ev[i].seq + 1;
		g->events++;
		d->dirty = true;
	}
	*got += n;
	return 0;
}

/*
 * A producer that is gone is done once its ring is read to the end:
 * nothing can be added after its death, but it may have written a lot
 * between our last empty read and the moment we saw it gone.
 */
static int check_ended(struct drain *d, struct seg *g)
{
	struct mring_status st;
	int got, ret;

	if (mring_status_read(g->r, &st) < 0 || st.alive)
		return 0;
	do {
		got = 0;
		ret = read_segment(d, g, &got);
	} while (!ret && got);
	if (ret < 0)
		return ret;
	g->done = true;
	g->crashed = !st.closed;
	return 0;
}

static int drain_loop(struct drain *d)
{
	int64_t last_commit = mono_ms();

	while (!stop_signal) {
		int got = 0, live = 0, ret;

		for (int i = 0; i < d->nsegs; i++) {
			if (d->segs[i].done)
				continue;
			ret = read_segment(d, &d->segs[i], &got);
			if (ret < 0 && d->output_failed)
				return EXIT_OUTPUT;
			if (ret == -ENOMEM || ret == -EBADMSG || ret == -EINVAL)
				return EXIT_USAGE;
			if (ret < 0)
				return EXIT_OUTPUT;
		}
		if (d->dirty && mono_ms() - last_commit >= d->flush_ms) {
			if (drain_commit(d) < 0)
				return EXIT_OUTPUT;
			last_commit = mono_ms();
		}
		/*
		 * Caught up with a producer that is still writing: let a batch
		 * build up instead of reading right behind it, where the
		 * record we read shares a cache line with the one it writes
		 * next (that costs the producer ~4x, docs/performance.md).
		 */
		if (got && got < SMALL_BATCH * d->nsegs)
			nap_us(200);
		if (got)
			continue;
		if (!d->follow)
			break;		/* drained what was there */
		for (int i = 0; i < d->nsegs; i++) {
			if (!d->segs[i].done) {
				if (check_ended(d, &d->segs[i]) < 0)
					return EXIT_OUTPUT;
			}
			live += !d->segs[i].done;
		}
		if (!live && !got)
			break;
		if (!got)
			nap_ms(1);
	}
	return 0;
}

static void summary(struct drain *d)
{
	uint64_t events = 0, lost = 0;

	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		events += g->events;
		lost += g->lost;
		if (g->crashed)
			fprintf(stderr, "mring drain: %s: producer crashed (gone without "
				"closing); everything it committed was drained\n", g->path);
	}
	fprintf(stderr, "mring drain: %llu events, %llu rows, %llu lost, %d segment%s\n",
		(unsigned long long)events, (unsigned long long)d->rows,
		(unsigned long long)lost, d->nsegs, d->nsegs == 1 ? "" : "s");
}

static void drain_free(struct drain *d)
{
	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		mring_reader_close(g->r);	/* no autocommit: nothing moves */
		free(g->path);
		free(g->names);
		free(g->step_row.keys);
		free(g->step_row.vals);
		free(g->epoch_row.keys);
		free(g->epoch_row.vals);
		free(g->win.sum);
		free(g->win.count);
		free(g->win.nonfinite);
	}
	free(d->segs);
	for (int i = 0; i < d->nxe; i++)
		if (d->xe[i].used)
			free(d->xe[i].m);
	free(d->xe);
	for (int i = 0; i < d->nouts; i++)
		if (d->outs[i].s)
			d->outs[i].ops->close(d->outs[i].s);
	free(d->state_path);
}

static int parse_args(struct drain *d, int argc, char **argv, const char **state)
{
	static const struct option opts[] = {
		{ "jsonl", required_argument, NULL, 'j' },
		{ "csv", required_argument, NULL, 'c' },
		{ "tensorboard", required_argument, NULL, 't' },
		{ "state", required_argument, NULL, 's' },
		{ "follow", no_argument, NULL, 'f' },
		{ "wait", no_argument, NULL, 'w' },
		{ "flush-ms", required_argument, NULL, 'F' },
		{ "every", required_argument, NULL, 'e' },
		{ "reduce-ranks", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *jsonl = NULL, *csv = NULL, *tb = NULL;
	char *end;
	int c;

	d->flush_ms = 1000;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': jsonl = optarg; break;
		case 'c': csv = optarg; break;
		case 't': tb = optarg; break;
		case 's': *state = optarg; break;
		case 'f': d->follow = true; break;
		case 'w': d->wait = true; break;
		case 'r': d->reduce = true; break;
		case 'F':
			errno = 0;
			d->flush_ms = strtol(optarg, &end, 10);
			if (errno || *end || d->flush_ms < 0 || d->flush_ms > 3600000) {
				fprintf(stderr, "mring drain: --flush-ms: not a number of "
					"milliseconds (0..3600000): %s\n", optarg);
				return -EINVAL;
			}
			break;
		case 'e':
			errno = 0;
			d->every = strtoull(optarg, &end, 10);
			if (errno || *end || !d->every || *optarg == '-') {
				fprintf(stderr, "mring drain: --every: not a positive number "
					"of steps: %s\n", optarg);
				return -EINVAL;
			}
			break;
		case 'h':
			fputs(drain_usage, stdout);
			return 1;
		default:
			fputs(drain_usage, stderr);
			return -EINVAL;
		}
	}
	if (optind >= argc || !(jsonl || csv || tb)) {
		fprintf(stderr, "mring drain: %s\n%s", optind >= argc ?
			"no SEGMENT given" : "no output given (--jsonl, --csv or --tensorboard)",
			drain_usage);
		return -EINVAL;
	}
	if (jsonl)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_jsonl_ops, .arg = jsonl };
	if (csv)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_csv_ops, .arg = csv };
	if (tb)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_tfevents_ops, .arg = tb };
	if (!*state)
		d->state_path = default_state_path(jsonl, csv, tb);
	else
		d->state_path = strdup(*state);
	return d->state_path ? 0 : -ENOMEM;
}

int cmd_drain(int argc, char **argv)
{
	struct drain d = { 0 };
	const char *state = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	int ret, status;

	ret = parse_args(&d, argc, argv, &state);
	if (ret)
		return ret > 0 ? 0 : EXIT_USAGE;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	status = EXIT_USAGE;
	if (open_segments(&d, argv + optind, argc - optind) < 0)
		goto out;
	ret = state_read(&d);
	if (ret < 0)
		goto out;
	status = EXIT_OUTPUT;
	if (open_outputs(&d, ret > 0) < 0)
		goto out;
	status = drain_loop(&d);
	/* a segment whose producer is gone and whose ring is empty gets its
	 * last, partial --every window; others keep it in the state */
	for (int i = 0; i < d.nsegs && status != EXIT_OUTPUT; i++) {
		if (!d.segs[i].done && !stop_signal && check_ended(&d, &d.segs[i]) < 0)
			status = EXIT_OUTPUT;
		if (d.segs[i].done && d.segs[i].nnames && window_flush(&d, &d.segs[i]) < 0)
			status = EXIT_OUTPUT;
	}
	/* flush what was read, whatever stopped us, unless output failed */
	if (status != EXIT_OUTPUT && drain_commit(&d) < 0)
		status = EXIT_OUTPUT;
	summary(&d);
	if (!status) {
		for (int i = 0; i < d.nsegs; i++)
			if (d.segs[i].crashed)
				status = EXIT_CRASHED;
		if (stop_signal)
			status = 128 + stop_signal;
	}
out:
	drain_free(&d);
	return status;
}
