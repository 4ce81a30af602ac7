// SPDX-License-Identifier: MIT
/*
 * metric.c - registering metrics: validating names (UTF-8, no control
 * characters) and flags, the producer's private name -> id table, and
 * publishing a metric slot.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib.h"

#define KNOWN_FLAGS (MRING_ON_STEP | MRING_ON_EPOCH | MRING_REDUCE_MASK | \
		     MRING_PROG_BAR)

/* Private to the producer: the shm copy of a name is not trusted. */
struct _mring_name_slot {
	uint32_t id1;		/* id + 1; 0 = empty */
	char name[MRING_NAME_MAX + 1];
};

int _mring_names_init(struct mring_writer *w)
{
	uint32_t n = 16;

	while (n < 2 * w->max_metrics)
		n <<= 1;
	w->names = calloc(n, sizeof(*w->names));
	if (!w->names)
		return -ENOMEM;
	w->names_mask = n - 1;
	return 0;
}

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

/* The slot holding @name, or the empty slot where it would go. */
static struct _mring_name_slot *name_find(struct mring_writer *w, const char *name)
{
	uint32_t i = name_hash(name) & w->names_mask;

	while (w->names[i].id1 && strcmp(w->names[i].name, name))
		i = (i + 1) & w->names_mask;
	return &w->names[i];
}

/* Check @flags and add the default reduction; -EINVAL when meaningless. */
static int flags_normalize(unsigned flags)
{
	unsigned red = flags & MRING_REDUCE_MASK;

	if (flags & ~KNOWN_FLAGS)
		return -EINVAL;
	if (!(flags & (MRING_ON_STEP | MRING_ON_EPOCH)))
		return -EINVAL;
	if (red & (red - 1))
		return -EINVAL;
	if (red && !(flags & MRING_ON_EPOCH))
		return -EINVAL;
	if ((flags & MRING_ON_EPOCH) && !red)
		flags |= MRING_MEAN;
	return (int)flags;
}

static void stats_empty(struct _mring_shm_stats *c, uint32_t epoch)
{
	struct _mring_acc a = { .last = NAN };

	_mring_acc_reset(&a);
	_mring_stats_store(c, &a, epoch);
}

static void slot_publish(struct mring_writer *w, uint32_t id, const char *name,
			 unsigned flags)
{
	struct _mring_shm_metric *m = &w->metrics[id];
	struct _mring_acc *a = &w->acc[id];

	memset(m->name, 0, sizeof(m->name));
	strcpy(m->name, name);
	_mring_store_relaxed(&m->flags, flags);
	stats_empty(&m->live.copy[0], w->epoch);
	stats_empty(&m->live.copy[1], w->epoch);
	_mring_store_relaxed(&m->live.seq, 0);
	_mring_store_relaxed(&m->epoch.seq, 0);

	memset(a, 0, sizeof(*a));
	_mring_acc_reset(a);
	a->last = NAN;			/* nothing logged yet */
	a->flags = flags;
	a->live = &m->live;

	/* release: name and flags before READY; pairs with the acquire
	 * load of state in mring_metric_info */
	_mring_store_release(&m->state, _MRING_METRIC_READY);
	/* release: the slot before the count; pairs with the acquire load
	 * of nmetrics in mring_metric_count and the reader's record checks */
	_mring_store_release(&w->hdr->nmetrics, id + 1);
	w->nmetrics = id + 1;
}

MRING_API int mring_metric(struct mring_writer *w, const char *name, unsigned flags)
{
	struct _mring_name_slot *s;
	uint32_t id;
	int ret, norm;

	if (!w || !name)
		return -EINVAL;
	if (w->forked)
		return -EPERM;
	ret = _mring_name_check(name);
	if (ret < 0)
		return ret;
	/* names end up in JSON, CSV, TensorBoard tags and Python str */
	if (!_mring_utf8_valid(name))
		return -EINVAL;
	norm = flags_normalize(flags);
	if (norm < 0)
		return norm;

	s = name_find(w, name);
	if (s->id1) {
		id = s->id1 - 1;
		return w->acc[id].flags == (unsigned)norm ? (int)id : -EEXIST;
	}
	if (w->nmetrics >= w->max_metrics)
		return -ENOSPC;
	id = w->nmetrics;
	s->id1 = id + 1;
	strcpy(s->name, name);
	slot_publish(w, id, name, (unsigned)norm);
	return (int)id;
}
