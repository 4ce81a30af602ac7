// SPDX-License-Identifier: MIT
/*
 * drain_reduce.c - `mring drain --reduce-ranks`: each epoch's cross-rank
 * result, folded from every segment's epoch records (a MEAN from
 * value * weight and weight, so it is the exact weighted mean over all
 * ranks, as Lightning's sync_dist), written once every drained segment
 * has ended that epoch.  Open epochs and a MEAN value waiting for its
 * weight record are part of the drain state.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"

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
	m = &x->m[x->n];
	*m = (struct xmetric){ .flags = flags, .min = NAN, .max = NAN, .name = strdup(name) };
	if (!m->name)
		return NULL;
	x->n++;
	return m;
}

static void xepoch_release(struct xepoch *x)
{
	for (int i = 0; i < x->n; i++)
		free(x->m[i].name);
	free(x->m);
	x->m = NULL;
	x->n = 0;
	x->used = false;
}

/* Fold one rank's epoch result in; an empty rank (NaN) adds nothing. */
static int xfold(struct drain *d, struct seg *g, const struct mring_event *ev,
		 int id, double value, double weight, bool incomplete)
{
	struct xepoch *x = xepoch_get(d, ev->epoch);
	struct xmetric *m = NULL;

	if (x && g->names[id].epoch)
		m = xmetric_get(x, g->names[id].epoch, g->names[id].flags);
	else if (x)
		return -EBADMSG;	/* an epoch result of a metric not ON_EPOCH */
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
			vals[i] = x->lossy && x->m[i].n < (uint64_t)d->nsegs ? NAN :
				  xvalue(&x->m[i]);
		}
		ret = x->n ? emit(d, &r) : 0;
	}
	free(keys);
	free(vals);
	xepoch_release(x);
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

int take_reduce(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct xepoch *x;
	int ret = 0;

	if (ev->kind == MRING_EV_LOST)
		g->lost_in_epoch = true;	/* its epoch's records may be among them */
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
	x->lossy |= g->lost_in_epoch;
	g->lost_in_epoch = false;
	return ++x->done == d->nsegs ? xepoch_emit(d, x) : 0;
}

void xstate_save(FILE *f, const struct drain *d)
{
	for (int i = 0; i < d->nxe; i++) {
		const struct xepoch *x = &d->xe[i];

		if (!x->used)
			continue;
		fprintf(f, "xepoch %u %llu %d %d\n", x->epoch, (unsigned long long)x->step,
			x->done, x->lossy ? 1 : 0);
		for (int k = 0; k < x->n; k++) {
			const struct xmetric *m = &x->m[k];

			fprintf(f, "xm %u %u %a %a %a %a %a %llu %d %s\n", x->epoch, m->flags, m->vw,
				m->w, m->sum, m->min, m->max, (unsigned long long)m->n,
				m->incomplete, m->name);
		}
	}
	for (int i = 0; i < d->nsegs; i++) {
		if (d->segs[i].stash_id >= 0)
			fprintf(f, "xstash %d %a | %s\n", d->segs[i].stash_id,
				d->segs[i].stash_value, d->segs[i].path);
		if (d->segs[i].lost_in_epoch)
			fprintf(f, "xlost | %s\n", d->segs[i].path);
	}
}

int xstate_load(struct drain *d, const char *line)
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
	if (sscanf(line, "xepoch %u %llu %d%n", &epoch, &step, &done, &pos) == 3) {
		int lossy = 0;

		/* an older state has no lossy flag: 0 */
		if (line[pos] && (sscanf(line + pos, " %d", &lossy) != 1 ||
				  (lossy != 0 && lossy != 1)))
			return -EBADMSG;
		if (done < 0 || done >= d->nsegs)
			return -EBADMSG;
		x = xepoch_get(d, epoch);
		if (!x)
			return -ENOMEM;
		x->step = step;
		x->done = done;
		x->lossy = lossy;
		return 0;
	}
	pos = 0;
	if (!strncmp(line, "xlost | ", 8)) {
		struct seg *g = seg_by_path(d, line + 8);

		if (g)
			g->lost_in_epoch = true;
		return 0;
	}
	if (sscanf(line, "xm %u %u %la %la %la %la %la %llu %d %n", &epoch, &flags, &vw, &w,
		   &sum, &min, &max, &n, &inc, &pos) == 9 && pos && line[pos]) {
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
		struct seg *g = seg_by_path(d, path + 3);

		if (id < 0 || id >= (int)MRING_MAX_METRICS)
			return -EBADMSG;
		if (g) {
			g->stash_id = id;
			g->stash_value = v;
		}
		return 0;
	}
	return -EBADMSG;
}

void xstate_free(struct drain *d)
{
	for (int i = 0; i < d->nxe; i++)
		if (d->xe[i].used)
			xepoch_release(&d->xe[i]);
	free(d->xe);
}
