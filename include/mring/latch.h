/* SPDX-License-Identifier: MIT */
/*
 * mring/latch.h - the two-copy latch, the one primitive behind every
 * shared object of more than one word: a metric's live and epoch
 * statistics, the drain position, the loss record.
 *
 * Linux's seqcount_latch (write_seqcount_latch, read_seqcount_latch_retry)
 * for a single writer: the writer fills the copy that the next sequence
 * number selects (seq & 1), then publishes that number.  The copy the
 * current number selects is never written, so a reader always finds a
 * complete copy, and a writer killed mid-update wedges nobody: the latch
 * simply keeps its last published value.
 *
 *	writer					reader
 *	seq = _mring_latch_write_begin(last);	do {
 *	copy[seq & 1].x = ... (relaxed)		    s = _mring_latch_read_begin(&seq);
 *	_mring_latch_write_end(&l->seq, seq);	    x = copy[s & 1].x (relaxed)
 *						} while (_mring_latch_read_retry(&seq, s));
 *
 * seq 0 means "never published".  A writer counts from its own private
 * copy of the last number, which cannot wrap in practice (2^64 updates).
 * One whose last number comes from shared memory (a new drainer taking
 * over the drain position, a reader sealing a dead producer's loss
 * record) passes it through _mring_latch_last() first: a damaged segment
 * may hold UINT64_MAX, and wrapping to 0 would make the latch look
 * unpublished (found by tests/fuzz).
 *
 * A reader bounds its retries with _MRING_LATCH_TRIES; what it does when
 * they run out belongs to each object (see its file).
 *
 * Internal header: included by <mring.h>; the names are not API.
 */
#ifndef MRING_LATCH_H
#define MRING_LATCH_H

#include <stdbool.h>
#include <stdint.h>
#include "atomic.h"

/*
 * Attempts a reader makes before it falls back.  A test build may set
 * fewer (tests/test_stress.c): a failed attempt is harmless, only its
 * cost changes.
 */
#ifdef MRING_LATCH_TRIES
#define _MRING_LATCH_TRIES	MRING_LATCH_TRIES
#else
#define _MRING_LATCH_TRIES	10000
#endif

/* @last, read from shared memory, made safe to count on from (see above). */
static inline uint64_t _mring_latch_last(uint64_t last)
{
	return last == UINT64_MAX ? 1 : last;	/* next: 2, same copy as 0 */
}

/* The sequence number after @last; the caller stores the copy it selects. */
static inline __attribute__((always_inline)) uint64_t _mring_latch_write_begin(uint64_t last)
{
	uint64_t seq = last + 1;

	/* release fence: the last seq store is ordered before the copy
	 * stores that follow; pairs with the acquire fence in
	 * _mring_latch_read_retry */
	_mring_fence_release();
	return seq;
}

/* Publish @seq: its copy is complete. */
static inline __attribute__((always_inline)) void _mring_latch_write_end(_mring_u64 *seqp,
									 uint64_t seq)
{
	/* release: pairs with the acquire load in _mring_latch_read_begin */
	_mring_store_release(seqp, seq);
}

/* The sequence number whose copy (seq & 1) the reader loads next. */
static inline uint64_t _mring_latch_read_begin(const _mring_u64 *seqp)
{
	/* acquire: pairs with the release store in _mring_latch_write_end;
	 * the copy loaded after it is at least this complete */
	return _mring_load_acquire(seqp);
}

/* Was the copy of @seq rewritten while it was loaded?  Then load again. */
static inline bool _mring_latch_read_retry(const _mring_u64 *seqp, uint64_t seq)
{
	/* acquire fence: pairs with the release fence in
	 * _mring_latch_write_begin.  It keeps the copy's relaxed loads
	 * before the load below, which an acquire load alone would not. */
	_mring_fence_acquire();
	return _mring_load_relaxed(seqp) != seq;
}

#endif /* MRING_LATCH_H */
