// SPDX-License-Identifier: MIT
/*
 * writer.c - the producer's setup, teardown and slow paths: creating and
 * publishing a segment, waiting or dropping on a full ring, recording
 * losses, closing an epoch, and detaching a forked child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib.h"

#define MRING_DEFAULT_MODE 0600u
#define WAIT_LOCK_CHECK_EVERY 256u	/* backoff rounds between liveness checks */

/* ---- fork: a child must not write into its parent's segment ---------- */

static pthread_mutex_t writers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mring_writer *writers;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
	pthread_mutex_lock(&writers_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&writers_lock);
}

/*
 * In the child: swap the shared mapping for private anonymous memory at
 * the same address (so stray inline stores land nowhere), drop the
 * child's reference to the locked file description (so the parent's
 * death is still seen), and make every entry point fail.
 */
static void atfork_child(void)
{
	struct mring_writer *w;

	for (w = writers; w; w = w->next) {
		mmap(w->map, w->map_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (w->fd >= 0)
			close(w->fd);
		w->fd = -1;
		w->forked = true;
		w->limit = 0;
		w->nmetrics = 0;
	}
	pthread_mutex_unlock(&writers_lock);
}

static void atfork_register(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void writers_add(struct mring_writer *w)
{
	pthread_mutex_lock(&writers_lock);
	w->next = writers;
	writers = w;
	pthread_mutex_unlock(&writers_lock);
}

static void writers_del(struct mring_writer *w)
{
	struct mring_writer **pp;

	pthread_mutex_lock(&writers_lock);
	for (pp = &writers; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	pthread_mutex_unlock(&writers_lock);
}

/* ---- open ---------------------------------------------------------------- */

static int config_resolve(const struct mring_config *in, struct mring_config *c)
{
	static const struct mring_config zero;

	*c = in ? *in : zero;
	if (!c->capacity)
		c->capacity = MRING_DEFAULT_CAPACITY;
	if (!c->max_metrics)
		c->max_metrics = MRING_DEFAULT_MAX_METRICS;
	if (!c->mode)
		c->mode = MRING_DEFAULT_MODE;
	if (c->capacity < MRING_MIN_CAPACITY || c->capacity > MRING_MAX_CAPACITY ||
	    (c->capacity & (c->capacity - 1)))
		return -EINVAL;
	if (c->max_metrics > MRING_MAX_METRICS)
		return -EINVAL;
	if (c->on_full < MRING_FULL_DROP || c->on_full > MRING_FULL_WAIT)
		return -EINVAL;
	if (c->mode & ~0777u)
		return -EINVAL;
	if (c->flags & ~MRING_CFG_REPLACE)
		return -EINVAL;
	if (c->run) {
		int ret = _mring_name_check(c->run);

		if (ret < 0)
			return ret;
		if (!_mring_utf8_valid(c->run))
			return -EINVAL;
	}
	return 0;
}

/*
 * The name is taken.  Alive producer: -EBUSY.  Otherwise -EEXIST, or with
 * MRING_CFG_REPLACE unlink it (only if it is an mring segment or what a
 * creator that died before publishing leaves) and let the caller retry.
 * We hold the producer lock ourselves while we look and unlink, so no
 * creator can take the file over in between.
 */
static int existing_segment(const char *path, bool replace)
{
	struct stat st;
	int fd, ret;

	/* O_NONBLOCK: a FIFO planted at the path must not hang us */
	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	ret = -EEXIST;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto out;
	ret = _mring_lock_take(fd, _MRING_LOCK_PRODUCER);
	if (ret < 0)
		goto out;	/* -EBUSY: alive, or another creator */
	ret = -EEXIST;
	if (!replace)
		goto out;
	ret = _mring_owner_check(&st);
	if (ret < 0)
		goto out;
	ret = -EEXIST;
	if (!_mring_file_ours(fd, &st))
		goto out;
	ret = unlink(path) < 0 && errno != ENOENT ? -errno : 0;
out:
	close(fd);		/* drops our lock */
	return ret;
}

/*
 * Did we lock the file that is at @path?  A replacing creator may have
 * unlinked it between our O_EXCL open and our lock.
 */
static bool still_linked(int fd, const char *path)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && lstat(path, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int create_file(const char *path, const struct mring_config *c)
{
	int attempt, fd, ret;

	for (attempt = 0; attempt < 8; attempt++) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			  c->mode);
		if (fd >= 0) {
			/* lock first: from now on we look alive to everyone */
			ret = _mring_lock_take(fd, _MRING_LOCK_PRODUCER);
			if (ret == 0 && still_linked(fd, path))
				return fd;
			if (ret < 0 && ret != -EBUSY) {
				unlink(path);	/* our own empty file */
				close(fd);
				return ret;
			}
			close(fd);	/* a replacer holds it, or unlinked it */
			continue;
		}
		if (errno != EEXIST)
			return -errno;
		ret = existing_segment(path, c->flags & MRING_CFG_REPLACE);
		if (ret < 0)
			return ret;
	}
	return -EBUSY;	/* lost the race to other creators every time */
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static void header_init(struct mring_writer *w, const struct mring_config *c,
			const struct _mring_geom *g, const char *path)
{
	struct _mring_shm_ident *id = &w->hdr->id;
	const char *run = c->run ? c->run : base_name(path);

	id->abi_major = _MRING_ABI_MAJOR;
	id->abi_minor = _MRING_ABI_MINOR;
	id->header_size = _MRING_HDR_SIZE;
	id->record_size = _MRING_REC_SIZE;
	id->capacity = c->capacity;
	id->max_metrics = c->max_metrics;
	id->metric_stride = _MRING_METRIC_STRIDE;
	id->metrics_offset = g->metrics_offset;
	id->ring_offset = g->ring_offset;
	id->total_size = g->total_size;
	id->hparams_offset = g->total_size;
	id->hparams_size = g->hparams_size;
	id->pid = getpid();
	id->rank = c->rank;
	id->pid_start = _mring_proc_start(id->pid);
	id->created_ns = _mring_now_ns();
	id->on_full = (uint32_t)c->on_full;
	id->cfg_flags = c->flags;
	/*
	 * An explicit run name was checked (UTF-8, 1..63 bytes).  A base
	 * name is any bytes: readers get it as UTF-8 without control
	 * characters ('?' for each bad byte), cut to 63 bytes between
	 * characters, never inside one.
	 */
	_mring_name_copy(id->run, sizeof(id->run), run);
	w->wall_ns = id->created_ns;
	_mring_store_relaxed(&w->hdr->step_wall_ns, (uint64_t)id->created_ns);
	_mring_store_relaxed(&w->hdr->state, _MRING_STATE_OPEN);
}

static int writer_alloc(struct mring_writer **out, const struct mring_config *c)
{
	struct mring_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->acc = calloc(c->max_metrics, sizeof(*w->acc));
	w->dirty = calloc(c->max_metrics ? c->max_metrics : 1, sizeof(*w->dirty));
	if (!w->acc || !w->dirty) {
		free(w->acc);
		free(w->dirty);
		free(w);
		return -ENOMEM;
	}
	w->fd = -1;
	*out = w;
	return 0;
}

static void writer_free(struct mring_writer *w)
{
	free(w->names);
	free(w->acc);
	free(w->dirty);
	free(w);
}

static void limit_reset(struct mring_writer *w, uint64_t tail);

MRING_API int __mring_writer_open(const char *path, const struct mring_config *cfg,
				  struct mring_writer **out, unsigned inline_abi,
				  size_t writer_size)
{
	char file[PATH_MAX];
	struct mring_config c;
	struct _mring_geom g;
	struct mring_writer *w;
	void *map;
	int fd, ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	/* the caller's inline mring_log() would use other offsets than ours */
	if (inline_abi != _MRING_INLINE_ABI || writer_size != sizeof(struct mring_writer))
		return -ELIBBAD;
	ret = config_resolve(cfg, &c);
	if (ret < 0)
		return ret;
	ret = _mring_path_resolve(path, file, sizeof(file));
	if (ret < 0)
		return ret;
	ret = _mring_geom(c.capacity, c.max_metrics, &g);
	if (ret < 0)
		return ret;
	ret = writer_alloc(&w, &c);
	if (ret < 0)
		return ret;
	w->max_metrics = c.max_metrics;
	ret = _mring_names_init(w);
	if (ret < 0)
		goto err_free;

	fd = create_file(file, &c);
	if (fd < 0) {
		ret = fd;
		goto err_free;
	}
	/* exact mode, whatever the umask */
	if (fchmod(fd, c.mode) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	/* every page now: a sparse tmpfs file SIGBUSes the trainer when full */
	ret = posix_fallocate(fd, 0, (off_t)g.file_size);
	if (ret) {
		ret = -ret;
		goto err_unlink;
	}
	map = mmap(NULL, g.file_size, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_POPULATE, fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		goto err_unlink;
	}

	w->fd = fd;
	w->map = map;
	w->map_size = g.file_size;
	w->hdr = map;
	w->ring = (struct _mring_rec *)((char *)map + g.ring_offset);
	w->capacity = c.capacity;
	w->mask = c.capacity - 1;
	w->max_metrics = c.max_metrics;
	w->on_full = c.on_full;
	w->pid = getpid();
	w->metrics = (struct _mring_shm_metric *)((char *)map + g.metrics_offset);
	header_init(w, &c, &g, file);
	limit_reset(w, 0);

	/* release: the header is complete; pairs with the acquire load of
	 * magic in mring_reader_open */
	_mring_store_release(&w->hdr->magic, _MRING_MAGIC);

	pthread_once(&atfork_once, atfork_register);
	writers_add(w);
	*out = w;
	return 0;

err_unlink:
	unlink(file);
	close(fd);
err_free:
	writer_free(w);
	return ret;
}

/* ---- full ring ----------------------------------------------------------- */

static bool drainer_alive(struct mring_writer *w)
{
	if (!_mring_load_relaxed(&w->hdr->drainer))
		return false;
	/* the flag outlives a crashed drainer; its lock does not */
	return _mring_lock_held(w->fd, _MRING_LOCK_DRAINER) == 1;
}

static void backoff(unsigned round)
{
	struct timespec ts = { 0, 20000 };

	if (round < 64)
		_mring_cpu_relax();
	else if (round < 256)
		sched_yield();
	else
		nanosleep(&ts, NULL);
}

/*
 * Room for @need records, keeping the last slot free for a LOST record
 * (so one always fits at close).  Returns the tail seen, or -ENOBUFS.
 */
static int64_t room(struct mring_writer *w, uint64_t need)
{
	unsigned round;

	for (round = 0;; round++) {
		/* acquire: pairs with the release store of tail in
		 * drainpos_publish; the drainer copied out what it passed */
		uint64_t tail = _mring_load_acquire(&w->hdr->tail);

		if (tail > w->head)	/* untrusted: never more room than empty */
			tail = w->head;
		if (w->head + need <= tail + w->capacity - 1)
			return (int64_t)tail;
		if (w->on_full != MRING_FULL_WAIT)
			return -ENOBUFS;
		/* round 0 too: a drainer that died must not cost a backoff
		 * per record; waiting is the slow path anyway */
		if (round % WAIT_LOCK_CHECK_EVERY == 0 && !drainer_alive(w))
			return -ENOBUFS;
		backoff(round);
	}
}

/* Publish {dropped, pending, pending position} as one (a latch). */
static void loss_publish(struct mring_writer *w)
{
	w->loss_seq = _mring_loss_publish(w->hdr, w->loss_seq, w->dropped, w->lost,
					  w->head);
}

static void record_drop(struct mring_writer *w, unsigned slots)
{
	w->lost += slots;
	w->dropped += slots;
	w->limit = 0;	/* every write goes through here until LOST is out */
	loss_publish(w);
	_mring_store_relaxed(&w->hdr->head, w->head);
}

/*
 * Count @slots records as dropped, as a full ring does: readers get a
 * LOST event for them before the next record.  For a binding that drops
 * values before they reach the ring (the Python binding's GPU values
 * beyond its pending bound, docs/python.md).  DROP mode only.
 */
MRING_API int __mring_drop(struct mring_writer *w, unsigned slots)
{
	if (w->forked)
		return -EPERM;
	if (w->on_full != MRING_FULL_DROP || !slots)
		return -EINVAL;
	record_drop(w, slots);
	return 0;
}

/* Write the pending LOST record at head; the caller made room. */
static void record_lost(struct mring_writer *w)
{
	_mring_rec_store(&w->ring[w->head & w->mask],
			 _mring_tag(w->head, MRING_EV_LOST, _MRING_NO_METRIC),
			 _mring_dbits((double)w->lost));
	w->head++;
	w->lost = 0;
	/* after the record: until then a dead producer's reader seals it */
	loss_publish(w);
}

/*
 * A STEP, or a CTX pair: the same context without an event.  A CTX
 * follows a LOST record (a STEP or an EPOCH_END may be among what was
 * lost, and the values that follow need their step, time and epoch).
 */
static void record_step_pair(struct mring_writer *w, unsigned kind)
{
	_mring_step_store(w->ring, w->mask, w->head, kind, w->step, w->wall_ns,
			  w->epoch);
	w->ctx_pos = w->head;
	w->head += 2;
}

/*
 * A reader that was lapped, or attached in the middle of the ring,
 * learns the context from the next STEP.  A producer that steps seldom
 * (or never) writes a CTX pair at least every half ring instead: the
 * slow path comes by every quarter ring, so a context is always less
 * than a ring behind the head.
 */
static bool ctx_due(const struct mring_writer *w)
{
	return w->head - w->ctx_pos >= w->capacity / 2;
}

/*
 * The fast path runs while head < limit.  limit is the end of the room
 * known from the last tail load, and at most a quarter ring ahead, so
 * the slow path also comes by often enough to publish the head hint
 * (readers find the commit frontier from it in O(log capacity)).
 */
static void limit_reset(struct mring_writer *w, uint64_t tail)
{
	uint64_t quarter = w->capacity / 4;
	uint64_t room_end = tail + w->capacity - 1;

	w->limit = w->head + quarter;
	if (w->on_full != MRING_FULL_OVERWRITE && room_end < w->limit)
		w->limit = room_end;
	_mring_store_relaxed(&w->hdr->head, w->head);
}

/*
 * Room for @slots more, after the pending LOST record and the CTX pair
 * that must follow it (@ctx: the record needs a context; a STEP carries
 * its own), and for a CTX pair that is due (ctx_due(), only where it
 * fits: it never causes a drop).  Sets *@tail for limit_reset();
 * -ENOBUFS after counting the @slots as dropped.
 */
static int slow_room(struct mring_writer *w, unsigned slots, bool ctx, int64_t *tail)
{
	bool due = ctx && !w->lost && ctx_due(w);
	uint64_t need = slots;

	*tail = 0;
	if (w->forked)
		return -EPERM;
	ctx = ctx && w->lost;
	if (w->on_full != MRING_FULL_OVERWRITE) {
		need += (w->lost ? 1 : 0) + (ctx ? 2 : 0);
		*tail = room(w, need + (due ? 2 : 0));
		if (*tail < 0 && due) {
			due = false;
			*tail = room(w, need);
		}
		if (*tail < 0) {
			record_drop(w, slots);
			return -ENOBUFS;
		}
		if (w->lost)
			record_lost(w);
	}
	if (ctx || due)
		record_step_pair(w, _MRING_REC_CTX);
	return 0;
}

MRING_API int __mring_put_slow(struct mring_writer *w, unsigned kind_arg, double value)
{
	int64_t tail;
	int ret = slow_room(w, 1, true, &tail);

	if (ret < 0)
		return ret;
	_mring_rec_store(&w->ring[w->head & w->mask], (w->head + 1) << 24 | kind_arg,
			 _mring_dbits(value));
	w->head++;
	limit_reset(w, (uint64_t)tail);
	return 0;
}

MRING_API int __mring_step_slow(struct mring_writer *w)
{
	int64_t tail;
	int ret = slow_room(w, 2, false, &tail);

	if (ret < 0)
		return ret;
	record_step_pair(w, MRING_EV_STEP);
	limit_reset(w, (uint64_t)tail);
	return 0;
}

MRING_API int mring_rewind(struct mring_writer *w, uint64_t step)
{
	int64_t tail;
	int ret;

	if (!w)
		return -EINVAL;
	if (w->ndirty)
		__mring_stats_publish(w);
	w->step = step;
	w->wall_ns = _mring_now_ns();
	/* always the slow path: rare, and it keeps the inline step short */
	ret = slow_room(w, 2, false, &tail);
	if (ret == 0) {
		record_step_pair(w, MRING_EV_REWIND);
		limit_reset(w, (uint64_t)tail);
	}
	_mring_store_relaxed(&w->hdr->step, step);
	_mring_store_relaxed(&w->hdr->step_wall_ns, (uint64_t)w->wall_ns);
	_mring_store_relaxed(&w->hdr->head, w->head);
	return ret;
}

MRING_API int __mring_bad_id(struct mring_writer *w, int id)
{
	(void)id;
	return w->forked ? -EPERM : -EINVAL;
}

/* ---- epoch --------------------------------------------------------------- */

/*
 * The state of a metric at the start of an epoch: empty counts and
 * reductions.  last and last_step are not epoch figures: they stay (a
 * monitor shows a learning rate's last value across an epoch end).
 */
void _mring_acc_reset(struct _mring_acc *a)
{
	a->count = 0;
	a->nonfinite = 0;
	a->weight = 0;
	a->sum = 0;
	a->comp = 0;
	a->min = NAN;
	a->max = NAN;
}

MRING_API int mring_epoch_end(struct mring_writer *w)
{
	uint32_t id;

	if (!w)
		return -EINVAL;
	if (w->forked)
		return -EPERM;
	/* this step's logs into the live latches (and their last_step),
	 * so that the epoch latches below get them too */
	__mring_stats_publish(w);
	for (id = 0; id < w->nmetrics; id++) {
		struct _mring_acc *a = &w->acc[id];

		if (!(a->flags & MRING_ON_EPOCH))
			continue;
		_mring_epoch_publish(w, id);
		(void)_mring_put(w, MRING_EV_EPOCH_VALUE << 16 | id,
				 _mring_reduce(a->flags, a->count, a->weight, a->sum,
					       a->comp, a->min, a->max));
		if (a->flags & MRING_MEAN)
			(void)_mring_put(w, MRING_EV_EPOCH_WEIGHT << 16 | id,
					 a->count ? a->weight : 0.0);
	}
	(void)_mring_put(w, MRING_EV_EPOCH_END << 16 | _MRING_NO_METRIC, 0.0);
	w->epoch++;
	_mring_store_relaxed(&w->hdr->epoch, w->epoch);
	for (id = 0; id < w->nmetrics; id++) {
		_mring_acc_reset(&w->acc[id]);
		_mring_live_publish(&w->acc[id], w->epoch);
	}
	_mring_store_relaxed(&w->hdr->head, w->head);
	return 0;
}

MRING_API int mring_flush(struct mring_writer *w)
{
	if (!w)
		return -EINVAL;
	if (w->forked)
		return -EPERM;
	__mring_stats_publish(w);
	_mring_store_relaxed(&w->hdr->head, w->head);
	return 0;
}

/* ---- getters ------------------------------------------------------------- */

MRING_API uint64_t mring_writer_step(const struct mring_writer *w)
{
	return w ? w->step : 0;
}

MRING_API uint32_t mring_writer_epoch(const struct mring_writer *w)
{
	return w ? w->epoch : 0;
}

MRING_API int mring_writer_check(const struct mring_writer *w)
{
	if (!w)
		return -EINVAL;
	return w->forked ? -EPERM : 0;
}

/* ---- close --------------------------------------------------------------- */

MRING_API int mring_writer_close(struct mring_writer *w)
{
	int ret = 0;

	if (!w)
		return -EINVAL;
	writers_del(w);
	if (w->forked) {
		ret = -EPERM;
	} else {
		/* the reserved slot guarantees room for the last LOST record */
		if (w->lost)
			record_lost(w);
		__mring_stats_publish(w);
		_mring_store_relaxed(&w->hdr->head, w->head);
		/* release: every record is visible to whoever sees CLOSED;
		 * pairs with the acquire load of state in mring_status_read */
		_mring_store_release(&w->hdr->state, _MRING_STATE_CLOSED);
	}
	munmap(w->map, w->map_size);
	if (w->fd >= 0)
		close(w->fd);	/* drops the producer lock */
	writer_free(w);
	return ret;
}
