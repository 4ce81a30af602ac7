// SPDX-License-Identifier: MIT
/*
 * stats.c - the live and epoch statistics of every metric, both sides:
 * the producer's once-per-step publish of what it logged, and what a
 * reader sees besides the ring (metric names and flags, consistent
 * statistics snapshots, the producer's status).
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "lib.h"

/* ---- producer: publishing ----------------------------------------------- */

void _mring_stats_store(struct _mring_shm_stats *c, const struct _mring_acc *a,
			uint32_t epoch)
{
	_mring_store_relaxed(&c->epoch, epoch);
	_mring_store_relaxed(&c->count, a->count);
	_mring_store_relaxed(&c->nonfinite, a->nonfinite);
	_mring_store_relaxed(&c->weight, _mring_dbits(a->weight));
	_mring_store_relaxed(&c->sum, _mring_dbits(a->sum));
	_mring_store_relaxed(&c->comp, _mring_dbits(a->comp));
	_mring_store_relaxed(&c->min, _mring_dbits(a->min));
	_mring_store_relaxed(&c->max, _mring_dbits(a->max));
	_mring_store_relaxed(&c->last, _mring_dbits(a->last));
	_mring_store_relaxed(&c->last_step, a->last_step);
}

/*
 * Publish @a into the copy of latch @l that the previous seq @last + 1
 * selects, then that seq (the latch of mring/latch.h).  Returns the new seq.
 */
static uint64_t latch_put(struct _mring_shm_latch *l, uint64_t last,
			  const struct _mring_acc *a, uint32_t epoch)
{
	uint64_t seq = _mring_latch_write_begin(last);

	_mring_stats_store(&l->copy[seq & 1], a, epoch);
	_mring_latch_write_end(&l->seq, seq);
	return seq;
}

void _mring_live_publish(struct _mring_acc *a, uint32_t epoch)
{
	a->seq = latch_put(a->live, a->seq, a, epoch);
}

void _mring_epoch_publish(struct mring_writer *w, uint32_t id)
{
	struct _mring_acc *a = &w->acc[id];

	a->eseq = latch_put(&w->metrics[id].epoch, a->eseq, a, w->epoch);
}

/*
 * The live statistics of every metric logged since the last publish.
 * mring_step(), mring_epoch_end(), mring_flush() and mring_writer_close()
 * call it, so a reader's figures lag the producer by at most one step.
 * A metric on the list was logged since the last publish, which every
 * mring_step() does first: in the current step, its last_step.
 */
MRING_API void __mring_stats_publish(struct mring_writer *w)
{
	for (uint32_t i = 0; i < w->ndirty; i++) {
		struct _mring_acc *a = &w->acc[w->dirty[i]];

		a->dirty = 0;
		a->last_step = w->step;
		_mring_live_publish(a, w->epoch);
	}
	w->ndirty = 0;
}

/* ---- reader --------------------------------------------------------------- */

MRING_API int mring_metric_count(const struct mring_reader *r)
{
	uint32_t n;

	if (!r)
		return -EINVAL;
	/* acquire: pairs with the release store of nmetrics in slot_publish */
	n = _mring_load_acquire(&r->hdr->nmetrics);
	return (int)(n > r->max_metrics ? r->max_metrics : n);
}

static const struct _mring_shm_metric *metric_slot(const struct mring_reader *r, int id)
{
	int n = mring_metric_count(r);

	if (id < 0 || id >= n)
		return NULL;
	return &r->metrics[id];
}

static unsigned metric_flags(const struct _mring_shm_metric *m)
{
	return _mring_load_relaxed(&m->flags) &
	       (MRING_ON_STEP | MRING_ON_EPOCH | MRING_REDUCE_MASK | MRING_PROG_BAR);
}

MRING_API int mring_metric_info(const struct mring_reader *r, int id, char *name,
				size_t len, unsigned *flags)
{
	const struct _mring_shm_metric *m;
	char buf[sizeof(m->name)];
	size_t n;

	if (!r || (name && !len))
		return -EINVAL;
	m = metric_slot(r, id);
	if (!m)
		return -EINVAL;
	/* acquire: pairs with the release store of state in slot_publish */
	if (_mring_load_acquire(&m->state) != _MRING_METRIC_READY)
		return -EBADMSG;
	memcpy(buf, m->name, sizeof(buf));	/* one copy, then check it */
	if (!memchr(buf, '\0', sizeof(buf)) || _mring_name_check(buf) < 0)
		return -EBADMSG;
	n = strlen(buf);
	if (name) {
		if (n >= len)
			return -ERANGE;
		memcpy(name, buf, n + 1);
	}
	if (flags)
		*flags = metric_flags(m);
	return 0;
}

/* One copy's words as loaded, before any arithmetic on them. */
struct stats_words {
	uint64_t epoch, count, nonfinite, weight, sum, comp, min, max, last,
		 last_step;
};

/*
 * Ten loads back to back, no arithmetic between them: the window in which
 * a producer update makes the attempt fail is only as long as these loads
 * take, which matters against a producer updating every few ns.
 */
static void stats_load(struct stats_words *w, const struct _mring_shm_stats *c)
{
	w->epoch = _mring_load_relaxed(&c->epoch);
	w->count = _mring_load_relaxed(&c->count);
	w->nonfinite = _mring_load_relaxed(&c->nonfinite);
	w->weight = _mring_load_relaxed(&c->weight);
	w->sum = _mring_load_relaxed(&c->sum);
	w->comp = _mring_load_relaxed(&c->comp);
	w->min = _mring_load_relaxed(&c->min);
	w->max = _mring_load_relaxed(&c->max);
	w->last = _mring_load_relaxed(&c->last);
	w->last_step = _mring_load_relaxed(&c->last_step);
}

static void stats_fill(struct mring_stats *out, const struct stats_words *w,
		       unsigned flags)
{
	double sum = _mring_bitsd(w->sum);
	double comp = _mring_bitsd(w->comp);

	out->epoch = (uint32_t)w->epoch;
	out->flags = flags;
	out->count = w->count;
	out->nonfinite = w->nonfinite;
	out->weight = _mring_bitsd(w->weight);
	out->sum = _mring_total(sum, comp);
	out->min = _mring_bitsd(w->min);
	out->max = _mring_bitsd(w->max);
	out->last = _mring_bitsd(w->last);
	out->last_step = w->last_step;
	out->value = _mring_reduce(flags, out->count, out->weight, sum, comp,
				   out->min, out->max);
}

/*
 * Read a metric's statistics latch (include/mring/latch.h): the copy the
 * sequence selects, then the sequence again; equal means no update began
 * meanwhile.  A writer killed mid-update left the sequence on a complete
 * copy, so this never wedges.
 *
 * A failed attempt starts the next one at once: the producer never waits for readers, so pausing would not
 * make a quiet moment likelier, only the answer later.  Against a
 * producer updating flat out, reads got about 3x faster and, at 4
 * attempts each, 2 to 6 times as many were answered (docs/performance.md
 * 3.2; not measured with both on hyperthreads of one core).
 */
int _mring_latch_read(const struct _mring_shm_latch *l, struct mring_stats *out,
		      unsigned flags)
{
	struct stats_words w;

	for (int tries = 0; tries < _MRING_LATCH_TRIES; tries++) {
		uint64_t s = _mring_latch_read_begin(&l->seq);

		stats_load(&w, &l->copy[s & 1]);
		if (!_mring_latch_read_retry(&l->seq, s)) {
			stats_fill(out, &w, flags);
			return 0;
		}
	}
	/* the producer updated the metric flat out: the caller retries */
	return -EAGAIN;
}

MRING_API int mring_stats_read(const struct mring_reader *r, int id, struct mring_stats *out)
{
	const struct _mring_shm_metric *m;

	if (!r || !out)
		return -EINVAL;
	m = metric_slot(r, id);
	if (!m)
		return -EINVAL;
	return _mring_latch_read(&m->live, out, metric_flags(m));
}

MRING_API int mring_epoch_read(const struct mring_reader *r, int id, struct mring_stats *out)
{
	const struct _mring_shm_metric *m;
	unsigned flags;

	if (!r || !out)
		return -EINVAL;
	m = metric_slot(r, id);
	if (!m)
		return -EINVAL;
	flags = metric_flags(m);
	/* acquire: pairs with the release store of seq in epoch_publish */
	if (!(flags & MRING_ON_EPOCH) || !_mring_load_acquire(&m->epoch.seq))
		return -ENOENT;
	return _mring_latch_read(&m->epoch, out, flags);
}

MRING_API int mring_status_read(const struct mring_reader *r, struct mring_status *out)
{
	const struct _mring_shm_hdr *h;
	uint64_t dpos, dlost, behind;
	struct _mring_drainpos dp;
	struct _mring_loss loss;
	uint32_t state;
	int held;

	if (!r || !out)
		return -EINVAL;
	h = r->hdr;
	memset(out, 0, sizeof(*out));
	/* acquire: pairs with the release store of state in mring_writer_close */
	state = _mring_load_acquire(&h->state);
	held = _mring_lock_held(r->fd, _MRING_LOCK_PRODUCER);
	out->closed = state == _MRING_STATE_CLOSED;
	out->alive = held == 1 && !out->closed;
	out->pid = r->id.pid;
	out->rank = r->id.rank;
	memcpy(out->run, r->id.run, sizeof(out->run));
	out->capacity = r->capacity;
	out->written = _mring_written(h, r->ring, r->capacity);
	_mring_drainpos_read(h, r->id.created_ns, &dp);
	dpos = dp.pos;
	dlost = dp.lost;
	out->read = dpos;
	_mring_loss_read(h, &loss);
	out->dropped = loss.dropped;
	out->on_full = (int)r->id.on_full;
	if (r->id.on_full == MRING_FULL_OVERWRITE) {
		behind = out->written > r->capacity ? out->written - r->capacity : 0;
		out->overwritten = dlost + (behind > dpos ? behind - dpos : 0);
	}
	out->step = _mring_load_relaxed(&h->step);
	out->epoch = (uint32_t)_mring_load_relaxed(&h->epoch);
	out->metrics = (uint32_t)mring_metric_count(r);
	/* a description never sees its own lock: the drainer asks itself */
	out->drainer = (r->flags & MRING_DRAIN) ||
		       (_mring_load_relaxed(&h->drainer) &&
			_mring_lock_held(r->fd, _MRING_LOCK_DRAINER) == 1);
	out->step_wall_ns = (int64_t)_mring_load_relaxed(&h->step_wall_ns);
	out->created_ns = r->id.created_ns;
	return 0;
}
