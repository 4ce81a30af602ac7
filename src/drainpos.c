// SPDX-License-Identifier: MIT
/*
 * drainpos.c - the drain position, one shared object in one place.
 *
 * Written only by the drainer: {pos, lost} through a latch (so a drainer
 * that takes over after a crash gets a pair that belongs together), then
 * tail, the one word the producer reads to know which slots it may reuse.
 * Read by the next drainer at attach, and by monitors for "read".
 */
#include "lib.h"

/*
 * Publish @pos and @lost after the drainer's last latch number @last
 * (a private copy, or the segment's at attach); returns the new number.
 * Dying between the latch and tail leaves only tail behind, which is
 * safe: the producer then reuses fewer slots, never more.
 */
uint64_t _mring_drainpos_publish(struct _mring_shm_hdr *h, uint64_t last,
				 uint64_t pos, uint64_t lost)
{
	struct _mring_shm_drainpos *d = &h->dpos;
	uint64_t seq = _mring_latch_write_begin(_mring_latch_last(last));

	_mring_store_relaxed(&d->copy[seq & 1].pos, pos);
	_mring_store_relaxed(&d->copy[seq & 1].lost, lost);
	_mring_latch_write_end(&d->seq, seq);
	/* release: the records below pos were copied out; pairs with the
	 * acquire load of tail in the producer's room() */
	_mring_store_release(&h->tail, pos);
	return seq;
}

/*
 * The last published {pos, lost}; {0, 0} before the first.  When the
 * retries run out (a drainer publishing flat out), tail alone, which is
 * still a position the drainer passed.
 */
void _mring_drainpos_read(const struct _mring_shm_hdr *h, uint64_t *pos,
			  uint64_t *lost)
{
	const struct _mring_shm_drainpos *d = &h->dpos;

	for (int tries = 0; tries < _MRING_LATCH_TRIES; tries++) {
		uint64_t s = _mring_latch_read_begin(&d->seq);
		uint64_t p = _mring_load_relaxed(&d->copy[s & 1].pos);
		uint64_t l = _mring_load_relaxed(&d->copy[s & 1].lost);

		if (!_mring_latch_read_retry(&d->seq, s)) {
			*pos = s ? p : 0;
			*lost = s ? l : 0;
			return;
		}
	}
	/* acquire: pairs with the release store of tail in _mring_drainpos_publish */
	*pos = _mring_load_acquire(&h->tail);
	*lost = 0;
}
