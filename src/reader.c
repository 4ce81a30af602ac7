// SPDX-License-Identifier: MIT
/*
 * reader.c - attaching to a segment (validating it as untrusted input)
 * and reading its ring: commit stamps, laps, losses, the drain position
 * and a dead producer's unwritten LOST record.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib.h"

/* Copy the identity out of shared memory once; only the copy is used. */
static void ident_copy(struct _mring_shm_ident *dst, const struct _mring_shm_hdr *h)
{
	memcpy(dst, (const char *)h + offsetof(struct _mring_shm_hdr, id), sizeof(*dst));
	dst->run[sizeof(dst->run) - 1] = '\0';
}

/* Map the header page alone and decide whether the file is a segment. */
static int header_probe(int fd, uint64_t file_size, struct _mring_shm_ident *id)
{
	struct _mring_shm_hdr *h;
	uint64_t magic;

	h = _mring_map(_MRING_HDR_SIZE, PROT_READ, fd);
	if (h == MAP_FAILED)
		return -errno;
	/* acquire: pairs with the release store of magic in mring_writer_open */
	magic = _mring_load_acquire(&h->magic);
	ident_copy(id, h);
	_mring_unmap(h, _MRING_HDR_SIZE);
	if (magic == 0)
		return -EAGAIN;		/* being created */
	if (magic != _MRING_MAGIC)
		return -EPROTO;
	return _mring_ident_validate(id, file_size);
}

/*
 * A file shorter than a header: empty is a creator that has not sized it
 * yet (-EAGAIN); one that starts with our magic is a truncated segment
 * (-EBADMSG); anything else, a text file say, is not a segment (-EPROTO).
 */
static int short_file(int fd, off_t size)
{
	uint64_t magic = 0;

	if (size == 0)
		return -EAGAIN;
	if (pread(fd, &magic, sizeof(magic), 0) != (ssize_t)sizeof(magic))
		return -EPROTO;
	return magic == _MRING_MAGIC ? -EBADMSG : -EPROTO;
}

static int reader_map(struct mring_reader *r, uint64_t file_size)
{
	int prot = PROT_READ | (r->flags & MRING_DRAIN ? PROT_WRITE : 0);
	void *map;
	int ret;

	ret = header_probe(r->fd, file_size, &r->id);
	if (ret < 0)
		return ret;
	/* a 2.1 segment's hyperparameters follow the ring (validated) */
	r->map_size = r->id.abi_minor >= 1 ? r->id.hparams_offset + r->id.hparams_size :
		      r->id.total_size;
	map = _mring_map(r->map_size, prot, r->fd);
	if (map == MAP_FAILED)
		return -errno;
	r->map = map;
	if (r->id.abi_minor >= 1)
		r->hparams = (struct _mring_shm_hparams *)((char *)map + r->id.hparams_offset);
	r->hdr = map;
	r->capacity = r->id.capacity;
	r->mask = r->capacity - 1;
	r->max_metrics = r->id.max_metrics;
	r->metrics = (struct _mring_shm_metric *)((char *)map + r->id.metrics_offset);
	r->ring = (struct _mring_rec *)((char *)map + r->id.ring_offset);
	return 0;
}

static int drainer_attach(struct mring_reader *r)
{
	struct _mring_drainpos dp;
	uint64_t written;
	int ret;

	ret = _mring_lock_take(r->fd, _MRING_LOCK_DRAINER);
	if (ret < 0)
		return ret;
	_mring_drainpos_read(r->hdr, r->id.created_ns, &dp);
	written = _mring_written(r->hdr, r->ring, r->capacity);
	/* untrusted: a position past the data would let the producer
	 * overwrite records nobody read */
	if (dp.pos > written)
		return -EBADMSG;
	r->pos = dp.pos;
	r->lost = dp.lost;
	r->ctx = dp.ctx;
	r->published = dp.pos;
	r->dseq = _mring_load_relaxed(&r->hdr->dpos.seq);
	/* release: pairs with the acquire load of tail in the producer's room() */
	_mring_store_release(&r->hdr->tail, dp.pos);
	_mring_store_relaxed(&r->hdr->drainer, 1);
	return 0;
}

/*
 * An observer starts at the oldest slot still in the ring.  At position
 * 0 it knows the context a writer starts with; anywhere else it learns
 * it from the first STEP.
 */
static void observer_attach(struct mring_reader *r)
{
	uint64_t written = _mring_written(r->hdr, r->ring, r->capacity);

	r->pos = written > r->capacity ? written - r->capacity : 0;
	if (!r->pos)
		r->ctx = (struct _mring_ctx){ .wall_ns = r->id.created_ns, .known = true };
}

MRING_API int mring_reader_open(const char *path, unsigned flags,
				struct mring_reader **out)
{
	char file[PATH_MAX];
	struct mring_reader *r;
	struct stat st;
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (flags != MRING_DRAIN && flags != MRING_OBSERVE &&
	    flags != (MRING_DRAIN | MRING_NO_AUTOCOMMIT))
		return -EINVAL;
	ret = _mring_path_resolve(path, file, sizeof(file));
	if (ret < 0)
		return ret;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->flags = flags;
	/* O_NONBLOCK: a FIFO planted at the path must not hang us */
	r->fd = open(file, (flags & MRING_DRAIN ? O_RDWR : O_RDONLY) |
			   O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (r->fd < 0) {
		ret = -errno;
		goto err;
	}
	if (fstat(r->fd, &st) < 0) {
		ret = -errno;
		goto err;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EPROTO;
		goto err;
	}
	if (flags & MRING_DRAIN) {
		ret = _mring_owner_check(&st);
		if (ret < 0)
			goto err;
	}
	if (st.st_size < (off_t)_MRING_HDR_SIZE) {
		ret = short_file(r->fd, st.st_size);
		goto err;
	}
	ret = reader_map(r, (uint64_t)st.st_size);
	if (ret < 0)
		goto err;
	if (flags & MRING_DRAIN)
		ret = drainer_attach(r);
	else
		observer_attach(r);
	if (ret < 0)
		goto err;
	*out = r;
	return 0;
err:
	if (r->map)
		_mring_unmap(r->map, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
	return ret;
}

/*
 * Publish the drain position: the {pos, lost} latch for the next
 * drainer, then the tail the producer reads.  Dying between the two only
 * leaves the tail behind, which is safe.
 */
static void drainpos_publish(struct mring_reader *r)
{
	struct _mring_drainpos p = { .pos = r->pos, .lost = r->lost, .ctx = r->ctx };

	r->dseq = _mring_drainpos_publish(r->hdr, r->dseq, &p);
	r->published = r->pos;
}

MRING_API int mring_commit(struct mring_reader *r)
{
	if (!r || !(r->flags & MRING_DRAIN))
		return -EINVAL;
	if (r->pos != r->published)
		drainpos_publish(r);
	return 0;
}

MRING_API void mring_reader_close(struct mring_reader *r)
{
	if (!r)
		return;
	if (r->flags & MRING_DRAIN) {
		if (!(r->flags & MRING_NO_AUTOCOMMIT) && r->pos != r->published)
			drainpos_publish(r);
		_mring_store_relaxed(&r->hdr->drainer, 0);
	}
	_mring_unmap(r->map, r->map_size);
	close(r->fd);		/* drops the drainer lock */
	free(r);
}

struct rec_copy {
	uint64_t stamp;		/* position + 1 of what the slot holds */
	unsigned kind, arg;
	uint64_t value;
	uint64_t wall;		/* STEP and CTX: their WALL slot's value */
	unsigned epoch_hi;	/* STEP and CTX: their WALL slot's arg */
};

/* What rec_load() found at r->pos. */
enum rec_state {
	REC_CORRUPT = -1,	/* a tag that cannot be: -EBADMSG */
	REC_NOT_YET = 0,	/* not committed yet */
	REC_READY,		/* a consistent copy of the record */
	REC_LAPPED,		/* a later lap is there; the copy's stamp says which */
};

/*
 * Classify @tag read at @pos.  Its stamp is the position + 1 it was
 * written for, modulo 2^40: the same as ours, a later lap (a forward
 * distance under 2^39; *@stamp gets the whole number), or an older one.
 */
static enum rec_state tag_state(const struct mring_reader *r, uint64_t pos,
				uint64_t tag, uint64_t *stamp)
{
	uint64_t s = tag >> 24, d = (s - (pos + 1)) & _MRING_STAMP_MASK;

	if (!tag)
		return REC_NOT_YET;
	if (((s - 1) & r->mask) != (pos & r->mask))
		return REC_CORRUPT;
	*stamp = pos + 1 + d;
	if (!d)
		return REC_READY;
	return d < (UINT64_C(1) << (_MRING_STAMP_BITS - 1)) ? REC_LAPPED : REC_NOT_YET;
}

static unsigned tag_kind(uint64_t tag)
{
	return (unsigned)(tag >> 16) & 0xff;
}

/* STEP and CTX: two slots, the second a WALL; they set the context. */
static bool step_pair(unsigned kind)
{
	return kind == MRING_EV_STEP || kind == _MRING_REC_CTX || kind == MRING_EV_REWIND;
}

/*
 * The WALL slot of the STEP or CTX at r->pos.  The producer commits it
 * before the STEP slot, so it is there; a tag that is not ours means a
 * later lap is being written over it (not yet: the STEP slot's tag will
 * say so), or damage.
 */
static enum rec_state wall_state(const struct mring_reader *r, uint64_t tag)
{
	uint64_t stamp;
	enum rec_state st = tag_state(r, r->pos + 1, tag, &stamp);

	if (st == REC_READY)
		return tag_kind(tag) == _MRING_REC_WALL ? REC_READY : REC_CORRUPT;
	return st == REC_CORRUPT ? REC_CORRUPT : REC_NOT_YET;
}

/* Copy the record at r->pos (two slots for a STEP or CTX). */
static enum rec_state rec_load(struct mring_reader *r, struct rec_copy *c)
{
	const struct _mring_rec *rec = &r->ring[r->pos & r->mask], *wall = NULL;
	uint64_t tag, tag2 = 0, again;
	enum rec_state st;

	/* acquire: pairs with the release store of tag in _mring_rec_store
	 * and _mring_step_store */
	tag = _mring_load_acquire(&rec->tag);
	st = tag_state(r, r->pos, tag, &c->stamp);
	if (st != REC_READY)
		return st;
	c->kind = tag_kind(tag);
	c->arg = (unsigned)tag & 0xffff;
	c->wall = 0;
	c->epoch_hi = 0;
	if (step_pair(c->kind)) {
		wall = &r->ring[(r->pos + 1) & r->mask];
		/* acquire: pairs with the release store of the WALL tag in
		 * _mring_step_store */
		tag2 = _mring_load_acquire(&wall->tag);
		c->wall = _mring_load_relaxed(&wall->value);
		c->epoch_hi = (unsigned)tag2 & 0xffff;
	}
	c->value = _mring_load_relaxed(&rec->value);
	/* acquire fence: pairs with the release fence in _mring_rec_store and
	 * _mring_step_store; a rewrite that started shows in the tags */
	_mring_fence_acquire();
	again = _mring_load_relaxed(&rec->tag);
	if (again != tag) {
		st = tag_state(r, r->pos, again, &c->stamp);
		return st == REC_READY ? REC_CORRUPT : st;
	}
	if (wall) {
		st = wall_state(r, tag2);
		if (st == REC_READY && _mring_load_relaxed(&wall->tag) != tag2)
			st = REC_NOT_YET;
	}
	return st;
}

static uint32_t metric_limit(struct mring_reader *r)
{
	/* acquire: pairs with the release store of nmetrics in slot_publish */
	uint32_t n = _mring_load_acquire(&r->hdr->nmetrics);

	return n > r->max_metrics ? r->max_metrics : n;
}

/* Ring slots the record at r->pos takes. */
static unsigned rec_span(const struct rec_copy *c)
{
	return step_pair(c->kind) ? 2 : 1;
}

/* Records a reader can take without knowing the stream context. */
static bool needs_no_context(const struct rec_copy *c)
{
	return step_pair(c->kind) || c->kind == MRING_EV_LOST;
}

/*
 * Decode @c against the context; STEP and CTX set it, EPOCH_END moves
 * it to the next epoch.  Returns 1 with an event in @ev, 0 for a CTX
 * (no event), -EBADMSG for a record that cannot be.
 */
static int rec_decode(struct mring_reader *r, const struct rec_copy *c,
		      struct mring_event *ev)
{
	double value = _mring_bitsd(c->value);
	struct _mring_ctx *x = &r->ctx;

	ev->seq = r->pos;
	ev->kind = c->kind;
	ev->flags = 0;
	ev->value = value;
	switch (c->kind) {
	case MRING_EV_VALUE:
	case MRING_EV_EPOCH_VALUE:
	case MRING_EV_EPOCH_WEIGHT:
		if (c->arg >= r->nmetrics)
			r->nmetrics = metric_limit(r);
		if (c->arg >= r->nmetrics)
			return -EBADMSG;
		ev->metric = (int32_t)c->arg;
		break;
	case MRING_EV_LOST:
		if (!(value >= 1.0 && value <= 9007199254740992.0))
			return -EBADMSG;
		/* fallthrough */
	case MRING_EV_EPOCH_END:
		if (c->arg != _MRING_NO_METRIC)
			return -EBADMSG;
		ev->metric = -1;
		break;
	case MRING_EV_STEP:
	case MRING_EV_REWIND:
	case _MRING_REC_CTX:
		x->step = c->value;
		x->wall_ns = (int64_t)c->wall;
		x->epoch = c->epoch_hi << 16 | c->arg;
		x->known = true;
		ev->metric = -1;
		ev->value = 0.0;
		break;
	default:
		return -EBADMSG;
	}
	ev->step = x->step;
	ev->epoch = x->epoch;
	ev->wall_ns = x->wall_ns;
	if (c->kind == MRING_EV_EPOCH_END)
		x->epoch++;
	return c->kind != _MRING_REC_CTX;
}

static void lost_event(struct mring_reader *r, struct mring_event *ev,
		       uint64_t seq, uint64_t count)
{
	memset(ev, 0, sizeof(*ev));
	ev->seq = seq;
	ev->kind = MRING_EV_LOST;
	ev->metric = -1;
	ev->step = r->ctx.step;
	ev->epoch = r->ctx.epoch;
	ev->wall_ns = r->ctx.wall_ns;
	ev->value = (double)count;
}

/*
 * Nothing is committed at r->pos.  If the producer is gone and died with
 * drops it never wrote down (its LOST record was to go exactly here),
 * report them: a drainer writes the record into the ring (the producer
 * is dead, the drainer is the only writer left) so it is delivered and
 * counted once, across drainer restarts too; an observer only reports it.
 */
enum seal_result {
	SEAL_NONE,		/* nothing to seal: the ring really ends here */
	SEAL_WRITTEN,		/* a drainer wrote the LOST record at r->pos */
	SEAL_REPORTED,		/* an observer filled @ev with it */
};

static enum seal_result seal_dead_producer(struct mring_reader *r, struct mring_event *ev)
{
	struct _mring_shm_hdr *h = r->hdr;
	struct _mring_loss loss;

	_mring_loss_read(h, &loss);
	if (!loss.pending || loss.pending_pos != r->pos)
		return SEAL_NONE;
	if (_mring_lock_held(r->fd, _MRING_LOCK_PRODUCER) != 0)
		return SEAL_NONE;	/* alive: it writes the record itself */
	/* the producer is dead: everything it stored is visible and final */
	_mring_loss_read(h, &loss);
	if (!loss.pending || loss.pending > (UINT64_C(1) << 53) || loss.pending_pos != r->pos)
		return SEAL_NONE;
	if (!(r->flags & MRING_DRAIN)) {
		lost_event(r, ev, r->pos, loss.pending);
		r->pos++;
		return SEAL_REPORTED;
	}
	_mring_rec_store(&r->ring[r->pos & r->mask],
			 _mring_tag(r->pos, MRING_EV_LOST, _MRING_NO_METRIC),
			 _mring_dbits((double)loss.pending));
	/* the producer's last loss record, with nothing pending any more */
	_mring_loss_publish(h, loss.seq, loss.dropped, 0, r->pos + 1);
	return SEAL_WRITTEN;
}

/*
 * Overrun: the slot at r->pos holds position stamp-1 >= pos + capacity,
 * so everything up to stamp-1-capacity is gone; so is everything more
 * than a ring behind the producer's current position.
 */
static uint64_t lap_skip(struct mring_reader *r, uint64_t stamp)
{
	uint64_t next = stamp - r->capacity;
	uint64_t written = _mring_written(r->hdr, r->ring, r->capacity);

	if (written > r->capacity && written - r->capacity > next)
		next = written - r->capacity;
	return next;
}

/* The LOST event of the gap mring_read() is in, if any. */
struct gap {
	int idx;		/* its index in the caller's array, or -2 */
	uint64_t end;		/* the position after it */
};

/*
 * @count slots from @seq on are gone (overrun, or records without their
 * context): one LOST event per gap, however many steps told us.  An
 * observer that has not delivered anything yet skips silently.
 */
static int gap_note(struct mring_reader *r, struct mring_event *ev, int n, struct gap *g,
		    uint64_t seq, uint64_t count)
{
	if (!r->started && !(r->flags & MRING_DRAIN))
		return n;
	r->lost += count;
	if (g->idx == n - 1 && g->end == seq) {
		ev[g->idx].value += (double)count;
		g->end += count;
		return n;
	}
	lost_event(r, &ev[n], seq, count);
	ev[n].flags = MRING_EVF_OVERRUN;
	g->idx = n;
	g->end = seq + count;
	return n + 1;
}

MRING_API int mring_read(struct mring_reader *r, struct mring_event *ev, int max)
{
	struct gap gap = { .idx = -2 };
	struct rec_copy c;
	int n = 0, ret = 0;
	enum seal_result seal;

	if (!r || !ev || max < 0)
		return -EINVAL;
	while (n < max) {
		enum rec_state st = rec_load(r, &c);

		if (st == REC_READY && !r->ctx.known && !needs_no_context(&c)) {
			n = gap_note(r, ev, n, &gap, r->pos, 1);
			r->pos++;
		} else if (st == REC_READY) {
			ret = rec_decode(r, &c, &ev[n]);
			if (ret < 0)
				break;
			r->pos += rec_span(&c);
			if (ret) {
				r->started = true;
				n++;
			}
			ret = 0;
		} else if (st == REC_LAPPED) {
			uint64_t next = lap_skip(r, c.stamp);

			if (next <= r->pos) {	/* positions wrapped past 2^64: damage */
				ret = -EBADMSG;
				break;
			}
			n = gap_note(r, ev, n, &gap, r->pos, next - r->pos);
			r->pos = next;
			r->ctx.known = false;
		} else if (st == REC_NOT_YET) {
			seal = seal_dead_producer(r, &ev[n]);
			if (seal == SEAL_REPORTED)
				n++;
			else if (seal == SEAL_NONE)
				break;
		} else {
			ret = -EBADMSG;
			break;
		}
	}
	if (r->flags == MRING_DRAIN && r->pos != r->published)
		drainpos_publish(r);
	if (ret < 0 && n == 0)
		return ret;
	return n;
}

MRING_API uint64_t __mring_producer_start(const struct mring_reader *r)
{
	return r ? r->id.pid_start : 0;
}

MRING_API uint64_t __mring_proc_start(int pid)
{
	return _mring_proc_start((pid_t)pid);
}

MRING_API int64_t __mring_observe_skip(struct mring_reader *r, uint64_t keep)
{
	uint64_t written, to;

	if (!r || r->flags != MRING_OBSERVE)
		return -EINVAL;
	written = _mring_written(r->hdr, r->ring, r->capacity);
	if (written <= keep || (to = written - keep) <= r->pos)
		return 0;
	/* as after a lap: the values up to the next STEP or CTX have no
	 * context and are reported lost */
	to -= r->pos;
	r->pos += to;
	r->ctx.known = false;
	return (int64_t)to;
}
