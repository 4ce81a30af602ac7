// SPDX-License-Identifier: MIT
/*
 * drainpos.c - the drain position, one shared object in one place.
 *
 * Written only by the drainer: {pos, lost, context at pos} through a
 * latch (so a drainer that takes over after a crash gets fields that
 * belong together), then tail, the one word the producer reads to know
 * which slots it may reuse.  Read by the next drainer at attach, and by
 * monitors for "read".
 */
#include "lib.h"

/*
 * Publish @p after the drainer's last latch number @last (a private
 * copy, or the segment's at attach); returns the new number.  Dying
 * between the latch and tail leaves only tail behind, which is safe:
 * the producer then reuses fewer slots, never more.
 */
uint64_t _mring_drainpos_publish(struct _mring_shm_hdr *h, uint64_t last,
				 const struct _mring_drainpos *p)
{
	struct _mring_shm_drainpos *d = &h->dpos;
	uint64_t seq = _mring_latch_write_begin(_mring_latch_last(last));

	_mring_store_relaxed(&d->copy[seq & 1].pos, p->pos);
	_mring_store_relaxed(&d->copy[seq & 1].lost, p->lost);
	_mring_store_relaxed(&d->copy[seq & 1].step, p->ctx.step);
	_mring_store_relaxed(&d->copy[seq & 1].wall_ns, (uint64_t)p->ctx.wall_ns);
	_mring_store_relaxed(&d->copy[seq & 1].ctx,
			     p->ctx.epoch | (p->ctx.known ? _MRING_CTX_KNOWN : 0));
	_mring_latch_write_end(&d->seq, seq);
	/* release: the records below pos were copied out; pairs with the
	 * acquire load of tail in the producer's room() */
	_mring_store_release(&h->tail, p->pos);
	return seq;
}

/*
 * The last published position; before the first, position 0 with the
 * context a writer starts with (step 0, epoch 0, the creation time
 * @created_ns).  When the retries run out (a drainer publishing flat
 * out), tail alone, which is still a position the drainer passed, with
 * no context: the reader then resumes at the next STEP.
 */
void _mring_drainpos_read(const struct _mring_shm_hdr *h, int64_t created_ns,
			  struct _mring_drainpos *out)
{
	const struct _mring_shm_drainpos *d = &h->dpos;

	for (int tries = 0; tries < _MRING_LATCH_TRIES; tries++) {
		uint64_t s = _mring_latch_read_begin(&d->seq);
		uint64_t c = s & 1;
		struct _mring_drainpos p = {
			.pos = _mring_load_relaxed(&d->copy[c].pos),
			.lost = _mring_load_relaxed(&d->copy[c].lost),
			.ctx.step = _mring_load_relaxed(&d->copy[c].step),
			.ctx.wall_ns = (int64_t)_mring_load_relaxed(&d->copy[c].wall_ns),
		};
		uint64_t ctx = _mring_load_relaxed(&d->copy[c].ctx);

		if (_mring_latch_read_retry(&d->seq, s))
			continue;
		if (!s) {
			p = (struct _mring_drainpos){ .ctx.wall_ns = created_ns };
			ctx = _MRING_CTX_KNOWN;
		}
		p.ctx.epoch = (uint32_t)ctx;
		p.ctx.known = (ctx & _MRING_CTX_KNOWN) != 0;
		*out = p;
		return;
	}
	/* acquire: pairs with the release store of tail in _mring_drainpos_publish */
	*out = (struct _mring_drainpos){ .pos = _mring_load_acquire(&h->tail) };
}
