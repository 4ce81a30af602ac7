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
	map = _mring_map(r->id.total_size, prot, r->fd);
	if (map == MAP_FAILED)
		return -errno;
	r->map = map;
	r->map_size = r->id.total_size;
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
	uint64_t pos, lost, written;
	int ret;

	ret = _mring_lock_take(r->fd, _MRING_LOCK_DRAINER);
	if (ret < 0)
		return ret;
	_mring_drainpos_read(r->hdr, &pos, &lost);
	written = _mring_written(r->hdr, r->ring, r->capacity);
	/* untrusted: a position past the data would let the producer
	 * overwrite records nobody read */
	if (pos > written)
		return -EBADMSG;
	r->pos = pos;
	r->lost = lost;
	r->published = pos;
	r->dseq = _mring_load_relaxed(&r->hdr->dpos.seq);
	/* release: pairs with the acquire load of tail in the producer's room() */
	_mring_store_release(&r->hdr->tail, pos);
	_mring_store_relaxed(&r->hdr->drainer, 1);
	return 0;
}

static void observer_attach(struct mring_reader *r)
{
	uint64_t written = _mring_written(r->hdr, r->ring, r->capacity);

	r->pos = written > r->capacity ? written - r->capacity : 0;
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
	r->dseq = _mring_drainpos_publish(r->hdr, r->dseq, r->pos, r->lost);
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
	uint64_t stamp, step, value, wall, meta;
};

/* What rec_load() found at r->pos. */
enum rec_state {
	REC_CORRUPT = -1,	/* a stamp that cannot be: -EBADMSG */
	REC_NOT_YET = 0,	/* not committed yet */
	REC_READY,		/* a consistent copy of the record */
	REC_LAPPED,		/* a later lap is there; the copy's stamp says which */
};

/* Copy the record at r->pos. */
static enum rec_state rec_load(struct mring_reader *r, struct rec_copy *c)
{
	const struct _mring_rec *rec = &r->ring[r->pos & r->mask];
	uint64_t want = r->pos + 1;

	/* acquire: pairs with the release store of stamp in _mring_rec_store */
	c->stamp = _mring_load_acquire(&rec->stamp);
	if (c->stamp == want) {
		c->step = _mring_load_relaxed(&rec->step);
		c->value = _mring_load_relaxed(&rec->value);
		c->wall = _mring_load_relaxed(&rec->wall_ns);
		c->meta = _mring_load_relaxed(&rec->meta);
		/* acquire fence: pairs with the release fence in
		 * _mring_rec_store; a rewrite that started shows in stamp */
		_mring_fence_acquire();
		c->stamp = _mring_load_relaxed(&rec->stamp);
		if (c->stamp == want)
			return REC_READY;
	}
	if (c->stamp == 0)
		return REC_NOT_YET;
	if (((c->stamp - 1) & r->mask) != (r->pos & r->mask))
		return REC_CORRUPT;
	return c->stamp > want ? REC_LAPPED : REC_NOT_YET;
}

static uint32_t metric_limit(struct mring_reader *r)
{
	/* acquire: pairs with the release store of nmetrics in slot_publish */
	uint32_t n = _mring_load_acquire(&r->hdr->nmetrics);

	return n > r->max_metrics ? r->max_metrics : n;
}

static int rec_decode(struct mring_reader *r, const struct rec_copy *c,
		      struct mring_event *ev)
{
	uint32_t kind = (uint32_t)(c->meta >> 16) & 0xffff;
	uint32_t metric = (uint32_t)c->meta & 0xffff;
	double value = _mring_bitsd(c->value);

	switch (kind) {
	case MRING_EV_VALUE:
	case MRING_EV_EPOCH_VALUE:
	case MRING_EV_EPOCH_WEIGHT:
		if (metric >= r->nmetrics)
			r->nmetrics = metric_limit(r);
		if (metric >= r->nmetrics)
			return -EBADMSG;
		ev->metric = (int32_t)metric;
		break;
	case MRING_EV_LOST:
		if (!(value >= 1.0 && value <= 9007199254740992.0))
			return -EBADMSG;
		/* fallthrough */
	case MRING_EV_STEP:
	case MRING_EV_EPOCH_END:
		if (metric != _MRING_NO_METRIC)
			return -EBADMSG;
		ev->metric = -1;
		break;
	default:
		return -EBADMSG;
	}
	ev->seq = r->pos;
	ev->kind = kind;
	ev->step = c->step;
	ev->epoch = (uint32_t)(c->meta >> 32);
	ev->flags = 0;
	ev->wall_ns = (int64_t)c->wall;
	ev->value = value;
	return 0;
}

static void note_event(struct mring_reader *r, const struct mring_event *ev)
{
	r->last_step = ev->step;
	r->last_epoch = ev->epoch;
	r->last_wall = ev->wall_ns;
}

static void lost_event(struct mring_reader *r, struct mring_event *ev,
		       uint64_t seq, uint64_t count)
{
	memset(ev, 0, sizeof(*ev));
	ev->seq = seq;
	ev->kind = MRING_EV_LOST;
	ev->metric = -1;
	ev->step = r->last_step;
	ev->epoch = r->last_epoch;
	ev->wall_ns = r->last_wall;
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
	_mring_rec_store(&r->ring[r->pos & r->mask], r->pos,
			 _mring_load_relaxed(&h->epoch) << 32 | MRING_EV_LOST << 16 |
			 _MRING_NO_METRIC,
			 _mring_load_relaxed(&h->step),
			 (int64_t)_mring_load_relaxed(&h->step_wall_ns), (double)loss.pending);
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

MRING_API int mring_read(struct mring_reader *r, struct mring_event *ev, int max)
{
	struct rec_copy c;
	int n = 0, ret = 0, gap = -2;
	enum seal_result seal;

	if (!r || !ev || max < 0)
		return -EINVAL;
	while (n < max) {
		enum rec_state st = rec_load(r, &c);

		if (st == REC_READY) {
			ret = rec_decode(r, &c, &ev[n]);
			if (ret < 0)
				break;
			note_event(r, &ev[n]);
			r->started = true;
			r->pos++;
			n++;
		} else if (st == REC_LAPPED) {
			uint64_t next = lap_skip(r, c.stamp);

			if (r->started || (r->flags & MRING_DRAIN)) {
				/* one LOST per gap, however many slots told us */
				if (gap == n - 1) {
					ev[gap].value += (double)(next - r->pos);
				} else {
					lost_event(r, &ev[n], r->pos, next - r->pos);
					ev[n].flags = MRING_EVF_OVERRUN;
					gap = n++;
				}
				r->lost += next - r->pos;
			}
			r->pos = next;
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
