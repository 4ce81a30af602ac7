// SPDX-License-Identifier: MIT
/*
 * loss.c - the loss record, one shared object in one place.
 *
 * {dropped, pending, pending_pos}: every drop so far, the drops not yet
 * written as a LOST ring record, and the position that record will take.
 * A latch, because a producer killed between "dropped" and "pending" must
 * not leave them disagreeing.  Written by the producer when it drops and
 * when its LOST record is out; after the producer died, by the drainer
 * that writes the pending LOST record in its place (seal_dead_producer in
 * reader.c), so it is delivered once.  Read by readers when the ring is
 * empty, and by monitors.
 */
#include "lib.h"

/*
 * Publish the three after latch number @last (the writer's private copy,
 * or the segment's when a reader seals a dead producer); returns the new
 * number.
 */
uint64_t _mring_loss_publish(struct _mring_shm_hdr *h, uint64_t last, uint64_t dropped,
			     uint64_t pending, uint64_t pending_pos)
{
	struct _mring_shm_loss *l = &h->loss;
	uint64_t seq = _mring_latch_write_begin(_mring_latch_last(last));

	_mring_store_relaxed(&l->copy[seq & 1].dropped, dropped);
	_mring_store_relaxed(&l->copy[seq & 1].pending, pending);
	_mring_store_relaxed(&l->copy[seq & 1].pending_pos, pending_pos);
	_mring_latch_write_end(&l->seq, seq);
	return seq;
}

/*
 * The last published loss record.  When the retries run out (a producer
 * dropping flat out), nothing pending: a reader then simply does not
 * report the pending drops this time; the producer's LOST record will.
 */
void _mring_loss_read(const struct _mring_shm_hdr *h, struct _mring_loss *out)
{
	const struct _mring_shm_loss *l = &h->loss;

	for (int tries = 0; tries < _MRING_LATCH_TRIES; tries++) {
		uint64_t s = _mring_latch_read_begin(&l->seq);

		out->seq = s;
		out->dropped = _mring_load_relaxed(&l->copy[s & 1].dropped);
		out->pending = _mring_load_relaxed(&l->copy[s & 1].pending);
		out->pending_pos = _mring_load_relaxed(&l->copy[s & 1].pending_pos);
		if (!_mring_latch_read_retry(&l->seq, s))
			return;
	}
	out->pending = 0;
}
