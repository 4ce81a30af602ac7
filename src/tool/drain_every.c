// SPDX-License-Identifier: MIT
/*
 * drain_every.c - `mring drain --every N` (Hugging Face logging_steps):
 * one row per window of N steps (windows are step / N, cut at epoch ends)
 * holding each metric's mean over its finite values, NaN if it had only
 * non-finite ones, at the window's last step.  An open window is part of
 * the drain state (sums in hex floating point), so a restart continues
 * it exactly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"

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

/* The window's row, through the step row (closed before a window opens). */
int window_flush(struct drain *d, struct seg *g)
{
	struct window *w = &g->win;
	struct pending *p = &g->step_row;
	int ret = 0;

	if (!w->active)
		return 0;
	for (int id = 0; id < w->n && !ret; id++) {
		struct mring_event ev = {
			.step = w->last_step, .epoch = w->epoch, .wall_ns = w->wall_ns,
		};

		if (!w->count[id] && !w->nonfinite[id])
			continue;
		ev.value = w->count[id] ? w->sum[id] / (double)w->count[id] : NAN;
		ret = pending_add(d, p, &ev, id);
		w->sum[id] = 0;
		w->count[id] = w->nonfinite[id] = 0;
	}
	w->active = false;
	return ret ? ret : pending_flush(d, g, p, ROW_STEP);
}

int window_add(struct drain *d, struct seg *g, const struct mring_event *ev)
{
	struct window *w = &g->win;
	uint64_t index = ev->step / d->every;
	int ret;

	if (w->active && (index != w->index || ev->epoch != w->epoch)) {
		ret = window_flush(d, g);
		if (ret < 0)
			return ret;
	}
	ret = window_grow(w, ev->metric + 1);
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

/* The highest metric id the open window holds, -1 if none. */
int window_max_id(const struct window *w)
{
	int max = -1;

	for (int id = 0; w->active && id < w->n; id++)
		if (w->count[id] || w->nonfinite[id])
			max = id;
	return max;
}

void window_save(FILE *f, const struct seg *g)
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

int window_load(struct drain *d, const char *line)
{
	unsigned long long index, last, cnt, nonfin;
	const char *p = line, *path;
	struct seg *g;
	struct window *w;
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
	g = seg_by_path(d, path + 3);
	if (!g)
		return 0;	/* a segment not drained now */
	if (!d->every) {
		fprintf(stderr, "mring drain: %s has an --every window: give --every\n",
			d->state_path);
		return -EINVAL;
	}
	w = &g->win;
	if (w->active)
		return -EBADMSG;
	w->active = true;
	w->index = index;
	w->last_step = last;
	w->epoch = epoch;
	w->wall_ns = wall;
	p += pos;
	for (int k = 0; k < n; k++) {
		pos = 0;
		if (sscanf(p, " %d:%la:%llu:%llu%n", &id, &sum, &cnt, &nonfin, &pos) != 4 ||
		    id < 0 || id >= (int)MRING_MAX_METRICS || p + pos > path)
			return -EBADMSG;
		if (window_grow(w, id + 1) < 0)
			return -ENOMEM;
		w->sum[id] = sum;
		w->count[id] = cnt;
		w->nonfinite[id] = nonfin;
		p += pos;
	}
	return 0;
}

void window_free(struct window *w)
{
	free(w->sum);
	free(w->count);
	free(w->nonfinite);
}
