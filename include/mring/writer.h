/* SPDX-License-Identifier: MIT */
/*
 * mring/writer.h - the producer's private handle and the inline helpers
 * behind mring_log() and mring_step().
 *
 * Internal header: included by <mring.h> after its constants.  Applications must not touch
 * these fields; they are here only so the hot path can be inline.
 */
#ifndef MRING_WRITER_H
#define MRING_WRITER_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include "latch.h"
#include "layout.h"

/*
 * Writer-private running state of one metric.  The producer is the only
 * writer of a metric's latch, so it keeps the truth here and copies it
 * out; no read-modify-write ever touches shared memory.
 */
struct _mring_acc {
	uint32_t flags;			/* normalized MRING_* flags, 0 = unused */
	uint32_t dirty;			/* 1 while on the writer's dirty list */
	uint64_t count;
	uint64_t nonfinite;
	double weight;
	double sum;
	double comp;
	double min;
	double max;
	double last;
	uint64_t last_step;		/* set when published: see _mring_acc_note */
	uint64_t seq;			/* mirrors live->seq */
	uint64_t eseq;			/* mirrors the epoch latch's seq */
	struct _mring_shm_latch *live;
	uint64_t pad1[3];		/* 128 bytes: id * 128 is one shift */
};

_MRING_STATIC_ASSERT(sizeof(struct _mring_acc) == 128, "accumulator stride");

struct _mring_name_slot;

/*
 * The layout of struct mring_writer and struct _mring_acc that the inline
 * hot path compiles into applications.  Bump it with any change to either
 * (the asserts after the struct are there to make you notice):
 * mring_writer_open() passes it to the library, which refuses another.
 */
#define _MRING_INLINE_ABI	3

struct mring_writer {
	/* hot: read by every mring_log(), the first 80 bytes */
	uint64_t head;			/* next ring position */
	uint64_t limit;			/* head < limit: room without a tail load */
	uint64_t mask;			/* capacity - 1 */
	struct _mring_rec *ring;
	uint64_t step;
	int64_t wall_ns;
	uint32_t epoch;			/* current epoch, in STEP records */
	uint32_t pad0;
	uint32_t nmetrics;		/* registered ids are < nmetrics */
	uint32_t max_metrics;
	struct _mring_acc *acc;
	struct _mring_shm_hdr *hdr;
	uint32_t *dirty;		/* ids logged since the last publish */
	uint32_t ndirty;
	uint32_t pad1;
	uint64_t ctx_pos;		/* position of the last STEP or CTX */

	/* cold: slow paths only */
	uint64_t capacity;
	uint64_t lost;			/* drops not yet written as a LOST record */
	uint64_t dropped;		/* every drop so far */
	uint64_t loss_seq;		/* mirrors hdr->loss.seq */
	int on_full;
	int fd;
	int pid;			/* owner; a forked child is not */
	bool forked;
	void *map;
	size_t map_size;
	struct _mring_shm_metric *metrics;	/* private copy of the offset */
	struct _mring_name_slot *names;	/* name -> id hash, private */
	uint32_t names_mask;
	struct mring_writer *next;	/* atfork list */
};

/* The offsets the inline hot path uses; see _MRING_INLINE_ABI. */
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, head) == 0, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, limit) == 8, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, mask) == 16, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, ring) == 24, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, step) == 32, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, wall_ns) == 40, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, epoch) == 48, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, nmetrics) == 56, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, acc) == 64, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, hdr) == 72, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, dirty) == 80, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, ndirty) == 88, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct mring_writer, ctx_pos) == 96, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct _mring_acc, dirty) == 4, "inline ABI");
_MRING_STATIC_ASSERT(offsetof(struct _mring_acc, live) == 96, "inline ABI");

/* The commit word of the record at @pos: see struct _mring_rec. */
static inline uint64_t _mring_tag(uint64_t pos, unsigned kind, unsigned arg)
{
	return (pos + 1) << 24 | (uint64_t)kind << 16 | arg;
}

/*
 * Store one slot at @pos.  The tag is cleared first so that an observer
 * copying this slot from an older lap sees it change; the value follows,
 * then the tag that commits it.
 */
static inline __attribute__((always_inline)) void
_mring_rec_store(struct _mring_rec *r, uint64_t tag, uint64_t value)
{
	_mring_store_relaxed(&r->tag, 0);
	/* release fence: pairs with the acquire fence in rec_load (src/reader.c) */
	_mring_fence_release();
	_mring_store_relaxed(&r->value, value);
	/* release: pairs with the acquire load of tag in rec_load (src/reader.c) */
	_mring_store_release(&r->tag, tag);
}

/*
 * Store a STEP (or CTX) at @pos and @pos + 1.  Both tags are cleared
 * first; the WALL slot is committed before the STEP slot, so a reader
 * that sees the STEP committed finds its WALL committed too.
 */
static inline __attribute__((always_inline)) void
_mring_step_store(struct _mring_rec *ring, uint64_t mask, uint64_t pos,
		  unsigned kind, uint64_t step, int64_t wall_ns, uint32_t epoch)
{
	struct _mring_rec *a = &ring[pos & mask], *b = &ring[(pos + 1) & mask];

	_mring_store_relaxed(&a->tag, 0);
	_mring_store_relaxed(&b->tag, 0);
	/* release fence: pairs with the acquire fence in rec_load (src/reader.c) */
	_mring_fence_release();
	_mring_store_relaxed(&b->value, (uint64_t)wall_ns);
	/* release: pairs with the acquire load of the WALL tag in rec_load (src/reader.c) */
	_mring_store_release(&b->tag, _mring_tag(pos + 1, _MRING_REC_WALL, epoch >> 16));
	_mring_store_relaxed(&a->value, step);
	/* release: pairs with the acquire load of tag in rec_load (src/reader.c) */
	_mring_store_release(&a->tag, _mring_tag(pos, kind, epoch & 0xffff));
}

/*
 * ON_STEP-only metric: keep last and the counts, privately;
 * __mring_stats_publish() copies them out once per step, with the step
 * as last_step (a metric on the dirty list was logged in this step).
 */
static inline __attribute__((always_inline)) void _mring_acc_note(struct _mring_acc *a, double v)
{
	a->last = v;
	if (__builtin_expect(isfinite(v), 1))
		a->count++;
	else
		a->nonfinite++;
}

/*
 * A compensated sum's value.  Once the running sum overflowed to +-Inf
 * the compensation term is meaningless (Inf - Inf); the sum says it all.
 */
static inline double _mring_total(double sum, double comp)
{
	return isfinite(sum) ? sum + comp : sum;
}

/* The epoch reduction of an accumulator; NaN when it is empty. */
static inline double _mring_reduce(uint32_t flags, uint64_t count, double weight,
				   double sum, double comp, double min, double max)
{
	if (!count)
		return NAN;
	if (flags & MRING_SUM)
		return _mring_total(sum, comp);
	if (flags & MRING_MIN)
		return min;
	if (flags & MRING_MAX)
		return max;
	if (flags & MRING_MEAN)
		return weight > 0 ? _mring_total(sum, comp) / weight : NAN;
	return NAN;			/* ON_STEP only: no reduction */
}

/*
 * Neumaier's compensated sum: the error no longer grows with the count
 * (about one rounding of the total for sums of like-signed terms).
 */
static inline __attribute__((always_inline)) void _mring_neumaier(double *sum, double *comp, double x)
{
	double s = *sum, t = s + x;

	if (fabs(s) >= fabs(x))
		*comp += (s - t) + x;
	else
		*comp += (x - t) + s;
	*sum = t;
}

#endif /* MRING_WRITER_H */
