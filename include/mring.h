/* SPDX-License-Identifier: MIT */
/*
 * mring.h - nanosecond metric logging through a shared-memory ring.
 *
 * A training process (the producer) opens a segment, registers metrics,
 * and on every step calls mring_step() and mring_log(): inline stores into
 * a single-producer ring of 16-byte slots in an mmap'd file, plus
 * per-metric running epoch statistics kept privately and published into
 * the same file once per step.  No syscall, no lock, no allocation, no
 * atomic read-modify-write on that path.  A separate
 * process drains the ring (MRING_DRAIN, one at a time, exactly-once
 * resumption), and any number of sidecars observe it (MRING_OBSERVE,
 * read-only).
 *
 * Conventions: functions return 0 or a count on success and -errno on
 * failure; they never set errno.  A writer handle belongs to one thread of
 * the process that opened it; a reader handle to one thread at a time.
 *
 * Caveats (see docs/reliability.md):
 *  - fork(): a child inherits no writer.  Its copy of a writer handle is
 *    detached from the segment (logging returns -EPERM); open a new
 *    segment in the child.
 *  - A producer killed at any instant loses nothing whose mring_log()
 *    returned; a reader can tell a crash (alive 0, closed 0) from a clean
 *    close.  Losses on a full ring are counted and appear in the stream.
 *  - The segment lives in tmpfs (/dev/shm or $MRING_DIR) and is fully
 *    allocated at creation: a full /dev/shm fails mring_writer_open() with
 *    -ENOSPC instead of killing the trainer with SIGBUS later.
 *  - Same host only.  Do not build code that includes this header with
 *    -ffast-math: compensated sums and the NaN checks need IEEE-754.
 *  - A reader trusts nothing in the segment but cannot stop another
 *    process with write access from truncating the file under its mapping
 *    (SIGBUS); the default mode 0600 leaves that to the same user.
 */
#ifndef MRING_H
#define MRING_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mring/atomic.h"
#include "mring/layout.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MRING_VERSION_MAJOR 0
#define MRING_VERSION_MINOR 1
#define MRING_VERSION_PATCH 0

/*
 * MRING_INLINE marks every inline function of the API.  src/ffi.c defines
 * it empty before including this header, so the library also exports a
 * real symbol for each (for FFI and dlopen users).
 */
#ifndef MRING_INLINE
#define MRING_INLINE static inline
#endif
/* Internal helpers of the hot path: inlined whatever the optimizer thinks. */
#define _MRING_HOT static inline __attribute__((always_inline))

#define mring_likely(x)   __builtin_expect(!!(x), 1)
#define mring_unlikely(x) __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------------ */
/* Constants                                                           */
/* ------------------------------------------------------------------ */

/* struct mring_config.on_full: what mring_log() does on a full ring. */
#define MRING_FULL_DROP      0	/* drop the new record, count it (default) */
#define MRING_FULL_OVERWRITE 1	/* overwrite the oldest record (flight recorder) */
#define MRING_FULL_WAIT      2	/* wait for a live drainer; drop if none */

/* struct mring_config.flags */
#define MRING_CFG_REPLACE    (1u << 0)	/* replace a segment whose producer is gone */

/* mring_metric() flags */
#define MRING_ON_STEP   (1u << 0)	/* every value goes into the ring */
#define MRING_ON_EPOCH  (1u << 1)	/* values feed the epoch accumulator */
#define MRING_MEAN      (1u << 2)	/* epoch reduction: weighted mean (default) */
#define MRING_SUM       (1u << 3)	/* epoch reduction: sum (weight ignored) */
#define MRING_MIN       (1u << 4)	/* epoch reduction: minimum */
#define MRING_MAX       (1u << 5)	/* epoch reduction: maximum */
#define MRING_PROG_BAR  (1u << 6)	/* shown by default in live monitors */
#define MRING_REDUCE_MASK (MRING_MEAN | MRING_SUM | MRING_MIN | MRING_MAX)

/* mring_reader_open() flags */
#define MRING_DRAIN   (1u << 0)	/* consume; one drainer per segment */
#define MRING_OBSERVE (1u << 1)	/* read-only; never moves the drain position */
#define MRING_NO_AUTOCOMMIT (1u << 2)	/* with MRING_DRAIN: only mring_commit() publishes */

/* struct mring_event.kind */
#define MRING_EV_VALUE       1	/* an ON_STEP value */
#define MRING_EV_STEP        2	/* mring_step(): value unused, metric -1 */
#define MRING_EV_EPOCH_VALUE 3	/* an epoch result at mring_epoch_end() */
#define MRING_EV_EPOCH_END   4	/* end of epoch .epoch, metric -1 */
#define MRING_EV_LOST        5	/* .value ring slots lost here, metric -1 */
#define MRING_EV_EPOCH_WEIGHT 6	/* right after a MEAN metric's EPOCH_VALUE:
				 * its epoch weight (sum of weights), so that
				 * readers can combine ranks exactly */
#define MRING_EV_REWIND      9	/* (format 2.2) a STEP that goes back: the
				 * run resumed from a checkpoint at .step;
				 * what was logged at steps >= .step before
				 * is void.  Value unused, metric -1 */

/* struct mring_event.flags */
#define MRING_EVF_OVERRUN    (1u << 0)	/* LOST: the records at positions
					 * [seq, seq + value) were overwritten
					 * unread; the next event is at
					 * seq + value.  Without it a LOST
					 * event holds one position. */

/* Limits */
#define MRING_NAME_MAX       63	/* bytes in a metric or run name */
#define MRING_HPARAMS_MAX    _MRING_HPARAMS_MAX	/* 65536 bytes of hparams JSON */
#define MRING_MAX_METRICS    65535u
#define MRING_MIN_CAPACITY   8u
#define MRING_MAX_CAPACITY   (UINT64_C(1) << 32)
#define MRING_DEFAULT_CAPACITY    (UINT64_C(1) << 20)
#define MRING_DEFAULT_MAX_METRICS 1024u

#include "mring/writer.h"

/* ------------------------------------------------------------------ */
/* Types                                                               */
/* ------------------------------------------------------------------ */

struct mring_config {
	uint64_t capacity;	/* records, power of two; 0: 1 << 20 */
	uint32_t max_metrics;	/* 0: 1024; at most MRING_MAX_METRICS */
	int on_full;		/* MRING_FULL_* */
	const char *run;	/* run name for readers, 1..63 bytes of UTF-8
				 * without control characters; NULL: the
				 * segment's base name (mring_writer_open) */
	int32_t rank;		/* data-parallel rank */
	uint32_t mode;		/* file mode; 0: 0600 */
	uint32_t flags;		/* MRING_CFG_* */
};

struct mring_event {
	uint64_t seq;		/* ring position of its first slot, strictly
				 * increasing; a STEP takes two slots */
	uint32_t kind;		/* MRING_EV_* */
	int32_t metric;		/* metric id, or -1 */
	uint64_t step;		/* step current when logged */
	uint32_t epoch;		/* epoch current when logged */
	uint32_t flags;		/* MRING_EVF_* */
	int64_t wall_ns;	/* ns since the Unix epoch, of the step */
	double value;		/* LOST: how many ring slots were lost here */
};

struct mring_stats {
	uint32_t epoch;		/* the epoch these figures belong to */
	uint32_t flags;		/* the metric's flags */
	uint64_t count;		/* finite values accumulated */
	uint64_t nonfinite;	/* NaN and +-Inf values seen (not accumulated) */
	double weight;		/* sum of weights of finite values */
	double sum;		/* MEAN: sum of value*weight; else sum of values */
	double value;		/* the reduction; NaN when empty */
	double min;		/* NaN when empty */
	double max;		/* NaN when empty */
	double last;		/* last logged value (may be non-finite) */
	uint64_t last_step;	/* step of @last */
};

struct mring_status {
	int32_t pid;		/* producer pid */
	int alive;		/* a producer has the segment open now */
	int closed;		/* the producer closed it cleanly */
	int32_t rank;
	char run[64];
	uint64_t capacity;
	uint64_t written;	/* records committed to the ring */
	uint64_t read;		/* drain position */
	uint64_t dropped;	/* records dropped on a full ring (DROP, WAIT) */
	uint64_t overwritten;	/* records overwritten before being drained */
	uint64_t step;		/* current step */
	uint32_t epoch;		/* current epoch */
	int on_full;		/* MRING_FULL_* */
	uint32_t metrics;	/* registered metrics */
	int drainer;		/* a drainer is attached now */
	int64_t step_wall_ns;	/* wall time of the current step (heartbeat) */
	int64_t created_ns;	/* segment creation time */
};

struct mring_writer;
struct mring_reader;

/* ------------------------------------------------------------------ */
/* Writer: setup and slow paths (src/writer.c, src/metric.c)           */
/* ------------------------------------------------------------------ */

/**
 * mring_writer_open - create a segment and become its producer
 * @path: a path, or a bare name (no '/') for a file in $MRING_DIR
 *        (default /dev/shm); "." and ".." are refused
 * @cfg: configuration, or NULL; zero fields mean defaults
 * @out: receives the writer handle
 *
 * Creates the file with O_EXCL | O_NOFOLLOW and exactly @cfg->mode,
 * allocates every byte of it (no sparse pages: a full tmpfs fails here,
 * not with SIGBUS later), maps and prefaults it, and publishes the header
 * last.  Locks byte 0 of the file (an open-file-description lock) for as
 * long as the producer lives; readers use it to tell alive from crashed.
 *
 * Run name: @cfg->run must be 1..63 bytes of well-formed UTF-8 without
 * control characters (< 0x20, 0x7f).  Without it the run name is the
 * path's base name, which may hold any bytes: each byte that is not part
 * of a well-formed UTF-8 character, and each control character, becomes
 * '?', and a name over 63 bytes is cut before the first character that
 * does not fit whole, never inside one.  Readers always get UTF-8.
 *
 * Who may call: any thread; the handle then belongs to that thread.
 *
 * Return: 0; -EINVAL (bad argument or config; a run name that is empty,
 * has a control character or is not well-formed UTF-8), -ENAMETOOLONG
 * (run name over 63 bytes, or path too long), -EBUSY (a
 * live producer has the segment), -EEXIST (a segment is there and its
 * producer is gone; set MRING_CFG_REPLACE to replace it), -EACCES (also
 * when replacing a segment another user owns, whatever its mode; root
 * may), -ENOSPC (shm full), -ENOMEM, -ELIBBAD (this program was built
 * against an mring.h whose inline hot path does not match the loaded
 * libmring: rebuild it), or the -errno of open/mmap (-ELOOP ...).
 *
 * An inline wrapper: it passes the layout the inline hot path was
 * compiled against (_MRING_INLINE_ABI, sizeof(struct mring_writer)) to
 * __mring_writer_open(), which refuses a mismatch, as zlib's deflateInit()
 * passes ZLIB_VERSION and sizeof(z_stream).
 */
MRING_INLINE int mring_writer_open(const char *path, const struct mring_config *cfg,
				   struct mring_writer **out);

/**
 * mring_writer_step - the step the last mring_step() set
 * @w: writer handle
 *
 * Who may call: the writer's thread.
 *
 * Return: the step (0 before the first mring_step()).
 */
uint64_t mring_writer_step(const struct mring_writer *w);

/**
 * mring_writer_epoch - the current epoch
 * @w: writer handle
 *
 * Who may call: the writer's thread.
 *
 * Return: the number of mring_epoch_end() calls so far.
 */
uint32_t mring_writer_epoch(const struct mring_writer *w);

/**
 * mring_writer_check - can this process use the writer?
 * @w: writer handle
 *
 * Who may call: any thread.
 *
 * Return: 0; -EPERM in a child forked after the writer was opened (every
 * writer call fails there with -EPERM); -EINVAL for NULL.
 */
int mring_writer_check(const struct mring_writer *w);

/**
 * mring_writer_close - end the run cleanly and release the writer
 * @w: writer handle
 *
 * Writes the pending LOST record if any (a slot is always kept for it),
 * publishes the final position, marks the segment closed (readers report
 * closed, not crashed), releases the producer lock and unmaps.  The file
 * stays for readers to finish; remove it with unlink(2).
 *
 * Return: 0; -EINVAL for NULL; -EPERM when called in a forked child (the
 * handle is still released, the segment untouched).
 */
int mring_writer_close(struct mring_writer *w);

/**
 * mring_metric - register a metric and get its id
 * @w: writer handle
 * @name: 1..63 bytes of well-formed UTF-8, no control characters
 *        (< 0x20, 0x7f)
 * @flags: MRING_ON_STEP and/or MRING_ON_EPOCH, at most one of
 *         MRING_MEAN (default with ON_EPOCH), MRING_SUM, MRING_MIN,
 *         MRING_MAX (only with ON_EPOCH), optionally MRING_PROG_BAR
 *
 * Ids are dense from 0 in registration order.  Registering the same name
 * with the same flags again returns the same id.  Readers learn names and
 * flags from the segment (mring_metric_info()).  Names end up in JSON,
 * CSV, TensorBoard tags and Python str, so a name that is not
 * well-formed UTF-8 (a stray or truncated sequence, an overlong form, a
 * surrogate U+D800..U+DFFF, a code point above U+10FFFF) is refused;
 * cut a long name at a character boundary, not at byte 63.
 *
 * Who may call: the writer's thread, at any time (also mid-run).
 * Memory order: the slot is published with a release store of the metric
 * count before the id is returned, so any record carrying the id is
 * preceded by its registration for every reader.
 *
 * Return: the id (>= 0); -EINVAL (no ON_STEP/ON_EPOCH, unknown flag,
 * several reductions, reduction without ON_EPOCH, empty name, control
 * character, not well-formed UTF-8), -ENAMETOOLONG (over 63 bytes),
 * -EEXIST (name registered with other flags),
 * -ENOSPC (max_metrics reached), -EPERM (forked child).
 */
int mring_metric(struct mring_writer *w, const char *name, unsigned flags);

/**
 * mring_epoch_end - close the current epoch
 * @w: writer handle
 *
 * For every ON_EPOCH metric: publishes the epoch's reduction (readable
 * with mring_epoch_read() until the next epoch end) and writes it into
 * the ring as an MRING_EV_EPOCH_VALUE record (a MEAN metric's is followed
 * by an MRING_EV_EPOCH_WEIGHT record with the epoch's total weight, so a
 * reader can combine ranks exactly); then writes an MRING_EV_EPOCH_END
 * record, resets every metric's running statistics and
 * starts the next epoch (epochs are numbered from 0).
 *
 * Who may call: the writer's thread.
 *
 * Return: 0 once the results are published, even if their ring copies
 * were dropped (counted like any loss); -EINVAL for NULL; -EPERM in a
 * forked child.
 */
int mring_epoch_end(struct mring_writer *w);

/**
 * mring_flush - publish the live statistics and the head now
 * @w: writer handle
 *
 * mring_log() keeps statistics privately and mring_step() publishes
 * them; a producer that logs and then waits before its next step (an
 * evaluation, a checkpoint) calls this to show monitors the figures of
 * the step so far.  Ring records need no flush: each is visible when
 * mring_log() returns.
 *
 * Who may call: the writer's thread.  Progress: wait-free; one latch
 * publish per metric logged since the last publish.
 *
 * Return: 0; -EINVAL for NULL; -EPERM in a forked child.
 */
int mring_flush(struct mring_writer *w);

/**
 * mring_rewind - go back to a step: the run resumed from a checkpoint
 * @w: writer handle
 * @step: the step the run resumes at
 *
 * Starts step @step like mring_step(), but its record is an
 * MRING_EV_REWIND (two ring slots, like a STEP): readers learn that what
 * was logged at steps >= @step before it is void, and `mring drain`
 * removes those rows from its JSONL and CSV files, so each holds one
 * clean history (docs/drain.md).  mring_step() with a step lower than
 * the last calls this.  A run that continues in a new segment calls it
 * once, before logging, with the step it resumes at: the new segment has
 * no last step to be lower than.  The epoch statistics are left as they
 * are (values of the voided steps stay in the running epoch).
 *
 * Who may call: the writer's thread.  Progress: as mring_step(); never
 * the inline fast path.
 *
 * Return: as mring_step(): 0; -ENOBUFS when the record was dropped
 * (ring full; the step is set, and the drop is counted and reported as
 * LOST: a drain then cannot void the old rows); -EINVAL for NULL;
 * -EPERM in a forked child.
 */
int mring_rewind(struct mring_writer *w, uint64_t step);

/**
 * mring_set_hparams - store the run's hyperparameters in the segment
 * @w: writer handle
 * @json: one JSON object (RFC 8259), NUL-terminated, at most
 *        MRING_HPARAMS_MAX (65536) bytes without the NUL
 *
 * Readers (mring_hparams_read(), `mring drain`'s hparams.yaml and
 * TensorBoard hparams, `mring stat`, `mring serve`) get the text exactly
 * as given.  Setting it again replaces it: a reader gets either the old
 * or the new object whole, never a mix, also if the producer is killed
 * while setting it.  Lightning's log_hyperparams() and Hugging Face's
 * training arguments map onto it (the Python binding's w.hparams(dict)).
 *
 * Who may call: the writer's thread, at any time.  Cost: a validation
 * pass and a copy of the text; the hot path never touches it.  Memory
 * order: the text is published with a release store of the latch's
 * sequence number, paired with the acquire load in mring_hparams_read().
 *
 * Return: 0; -EINVAL (NULL, or not exactly one JSON object: a top-level
 * array or number, a trailing comma, a raw control character or invalid
 * UTF-8 in a string, nesting deeper than 64), -E2BIG (over
 * MRING_HPARAMS_MAX bytes), -EPERM (forked child).  Nothing is changed
 * on an error.
 */
int mring_set_hparams(struct mring_writer *w, const char *json);

/* Internal, do not call: the out-of-line halves of the inline hot path. */
int __mring_writer_open(const char *path, const struct mring_config *cfg,
			struct mring_writer **out, unsigned inline_abi,
			size_t writer_size);
int __mring_put_slow(struct mring_writer *w, unsigned kind_arg, double value);
int __mring_step_slow(struct mring_writer *w);
int __mring_drop(struct mring_writer *w, unsigned slots);
/* The tool's and the Python binding's text for -ENOENT from an open. */
const char *__mring_enoent_text(const char *path, char *buf, size_t len);
/* The Python binding's text for -EEXIST from mring_writer_open(). */
const char *__mring_eexist_text(const char *path, const char *replace_hint,
				char *buf, size_t len);
int __mring_bad_id(struct mring_writer *w, int id);
void __mring_stats_publish(struct mring_writer *w);
/* mring watch --signal: the producer's start time the creator recorded
 * (field 22 of /proc/<pid>/stat, clock ticks), 0 when unknown; the
 * start time of @pid now, 0 when unreadable.  Untrusted, like every byte
 * of a segment: a match is evidence, not proof. */
uint64_t __mring_producer_start(const struct mring_reader *r);
uint64_t __mring_proc_start(int pid);
/* mring watch: move an observer to the newest @keep slots when it is
 * further behind; the slots skipped (>= 0), -EINVAL for a drainer.
 * Nothing is reported for them: the caller knows. */
int64_t __mring_observe_skip(struct mring_reader *r, uint64_t keep);
/* CLOCK_REALTIME in ns (vDSO): out of line so that mring.h compiles
 * under strict -std=c11, where <time.h> has no clock_gettime. */
int64_t __mring_clock_ns(void);

/* ------------------------------------------------------------------ */
/* Writer: the hot path (inline)                                       */
/* ------------------------------------------------------------------ */

MRING_INLINE int mring_writer_open(const char *path, const struct mring_config *cfg,
				   struct mring_writer **out)
{
	return __mring_writer_open(path, cfg, out, _MRING_INLINE_ABI,
				   sizeof(struct mring_writer));
}

/*
 * Internal: append one record, @kind_arg = kind << 16 | arg; slow path
 * when the cached room is used up.
 */
_MRING_HOT int _mring_put(struct mring_writer *w, unsigned kind_arg, double value)
{
	uint64_t pos = w->head;

	if (mring_unlikely(pos >= w->limit))
		return __mring_put_slow(w, kind_arg, value);
	_mring_rec_store(&w->ring[pos & w->mask], (pos + 1) << 24 | kind_arg,
			 _mring_dbits(value));
	w->head = pos + 1;
	return 0;
}

/* Internal: feed one finite-or-not value into an ON_EPOCH accumulator. */
_MRING_HOT void _mring_acc_add(struct _mring_acc *a, double v, double wt)
{
	a->last = v;
	if (mring_likely(isfinite(v))) {
		a->count++;
		a->weight += wt;
		_mring_neumaier(&a->sum, &a->comp,
				(a->flags & MRING_MEAN) ? v * wt : v);
		if (!(v >= a->min))	/* min starts as NaN */
			a->min = v;
		if (!(v <= a->max))
			a->max = v;
	} else {
		a->nonfinite++;
	}
}

/* Internal: put metric @id on the list mring_step() publishes. */
_MRING_HOT void _mring_acc_mark(struct mring_writer *w, struct _mring_acc *a,
				unsigned id)
{
	if (a->dirty)
		return;
	a->dirty = 1;
	w->dirty[w->ndirty++] = id;
}

/* The body of mring_log() and mring_log_weighted(), arguments checked. */
_MRING_HOT int _mring_log_valid(struct mring_writer *w, int id, double value, double weight)
{
	struct _mring_acc *a = &w->acc[id];
	uint32_t flags = a->flags;

	if (flags & MRING_ON_EPOCH)
		_mring_acc_add(a, value, weight);
	else
		_mring_acc_note(a, value);
	_mring_acc_mark(w, a, (unsigned)id);
	if (!(flags & MRING_ON_STEP))
		return 0;
	return _mring_put(w, MRING_EV_VALUE << 16 | (unsigned)id, value);
}

/**
 * mring_log_weighted - log one value of a metric with a weight
 * @w: writer handle
 * @id: metric id from mring_metric()
 * @value: the value; NaN and +-Inf are logged and counted but kept out
 *         of sum, mean, min and max
 * @weight: finite and >= 0 (Lightning's batch_size); weights the epoch
 *          mean, ignored by SUM, MIN and MAX
 *
 * ON_EPOCH: updates the running statistics (always, even when the ring
 * record is dropped, so epoch values stay exact).  Every metric keeps
 * last, last_step and its counts.  ON_STEP: appends a 16-byte value
 * record (one ring slot: metric id and value); readers attribute it to
 * the step, epoch and step wall time of the STEP record before it.
 *
 * The statistics are kept in the writer's private memory and published
 * for readers (mring_stats_read()) by the next mring_step(),
 * mring_epoch_end(), mring_flush() or mring_writer_close(): a reader's
 * figures lag by at most one step, and a producer killed mid-step takes
 * that step's contribution to the live statistics with it (its ring
 * records are safe).
 *
 * Who may call: the writer's thread.  Progress: wait-free, except in
 * MRING_FULL_WAIT mode on a full ring with a live drainer attached.
 * Memory order: the record's stamp is stored with release after its
 * fields; no shared store for the statistics.
 *
 * Return: 0; -ENOBUFS when the record was dropped (ring full; the
 * statistics were updated); -EINVAL for an unknown id or a negative,
 * NaN or infinite weight (nothing logged); -EPERM in a forked child.
 */
MRING_INLINE int mring_log_weighted(struct mring_writer *w, int id,
				    double value, double weight)
{
	if (mring_unlikely((unsigned)id >= w->nmetrics))
		return __mring_bad_id(w, id);
	if (mring_unlikely(!(weight >= 0.0) || isinf(weight)))
		return -EINVAL;
	return _mring_log_valid(w, id, value, weight);
}

/**
 * mring_log - log one value of a metric (weight 1)
 * @w: writer handle
 * @id: metric id from mring_metric()
 * @value: the value
 *
 * Same as mring_log_weighted(@w, @id, @value, 1.0).
 *
 * Return: 0; -ENOBUFS (record dropped, statistics updated); -EINVAL
 * (unknown id); -EPERM (forked child).
 */
MRING_INLINE int mring_log(struct mring_writer *w, int id, double value)
{
	if (mring_unlikely((unsigned)id >= w->nmetrics))
		return __mring_bad_id(w, id);
	return _mring_log_valid(w, id, value, 1.0);
}

/*
 * mring_step() and mring_step_at(): @given is a constant in each, so the
 * clock is read (for mring_step()) after the statistics are published,
 * and mring_step() stays what it was.
 */
static inline __attribute__((always_inline)) int
_mring_step(struct mring_writer *w, uint64_t step, int64_t wall_ns, bool given)
{
	struct _mring_shm_hdr *h = w->hdr;
	uint64_t head, wall;
	int ret;

	/* a step lower than the last: the run resumed from a checkpoint */
	if (mring_unlikely(step < w->step))
		return mring_rewind(w, step);
	/* a forked child's limit is 0: the slow path says -EPERM, and the
	 * shared stores land in the private copy its mapping became */
	if (w->ndirty)
		__mring_stats_publish(w);
	w->step = step;
	w->wall_ns = given ? wall_ns : __mring_clock_ns();
	head = w->head;
	if (mring_unlikely(head + 1 >= w->limit)) {
		ret = __mring_step_slow(w);
		head = w->head;
	} else {
		_mring_step_store(w->ring, w->mask, head, MRING_EV_STEP, step,
				  w->wall_ns, w->epoch);
		w->ctx_pos = head;
		w->head = head += 2;
		ret = 0;
	}
	/* loaded before the three header stores, which might alias *w
	 * for the compiler and would make it load them again */
	wall = (uint64_t)w->wall_ns;
	_mring_store_relaxed(&h->step, step);
	_mring_store_relaxed(&h->step_wall_ns, wall);
	_mring_store_relaxed(&h->head, head);
	return ret;
}

/**
 * mring_step_at - start a step whose wall time is already known
 * @w: writer handle
 * @step: as for mring_step()
 * @wall_ns: the step's wall-clock time, ns since the Unix epoch
 *           (CLOCK_REALTIME)
 *
 * mring_step() with @wall_ns in place of the clock: for a producer that
 * writes a step later than it happened and must keep its time, as the
 * Python binding does for steps whose values were still on a GPU
 * (docs/python.md).  Monitors take @wall_ns as the heartbeat, so a late
 * step looks as old as it is.  A @step lower than the last one is
 * mring_rewind(), stamped with the clock.
 *
 * Who may call: the writer's thread.  Progress: as mring_log().
 *
 * Return: as mring_step().
 */
MRING_INLINE int mring_step_at(struct mring_writer *w, uint64_t step, int64_t wall_ns)
{
	return _mring_step(w, step, wall_ns, true);
}

/**
 * mring_step - start a step
 * @w: writer handle
 * @step: the x-axis of every following value (Lightning's
 *        _batches_that_stepped, HF's global_step); may repeat; lower
 *        than the last means a resume (see below)
 *
 * Stamps the step's wall-clock time (CLOCK_REALTIME through the vDSO: no
 * syscall unless the kernel's clocksource has no vDSO support), appends
 * an MRING_EV_STEP record of two ring slots carrying the step, its wall
 * time and the epoch (dropped and counted as two on a full ring like any
 * record) and publishes step, time and position for monitors (relaxed
 * stores: each field is atomic on its own).  The
 * values logged after it carry @step even when its STEP record was
 * dropped.  First it publishes the live statistics of every metric
 * logged since the last publish (a release store of each one's latch
 * sequence, paired with the acquire loads in mring_stats_read()).
 *
 * Who may call: the writer's thread.  Progress: as mring_log().
 *
 * A @step lower than the last one is a resume from a checkpoint: it is
 * mring_rewind(@w, @step), which writes an MRING_EV_REWIND record in
 * place of the STEP record.
 *
 * Return: 0; -ENOBUFS when the STEP record was dropped (ring full; the
 * step is set all the same); -EPERM in a forked child (nothing reaches
 * the segment).
 */
MRING_INLINE int mring_step(struct mring_writer *w, uint64_t step)
{
	return _mring_step(w, step, 0, false);
}

/* ------------------------------------------------------------------ */
/* Reader (src/reader.c, src/stats.c)                                  */
/* ------------------------------------------------------------------ */

/**
 * mring_reader_open - attach to a segment as its drainer or an observer
 * @path: as for mring_writer_open()
 * @flags: MRING_DRAIN or MRING_OBSERVE (exactly one); MRING_DRAIN may add
 *         MRING_NO_AUTOCOMMIT
 * @out: receives the reader handle
 *
 * Validates everything in the header against the file (magic, ABI
 * version, sizes, offsets); nothing in the segment is trusted.
 * MRING_DRAIN opens read-write and takes the drainer lock (byte 1 of the
 * file, released automatically if the process dies); it resumes exactly
 * at the last published drain position.  MRING_OBSERVE maps read-only and
 * starts at the oldest record still in the ring.  An observer that is
 * lapped before it delivered its first event skips silently; after that,
 * every gap is an MRING_EV_LOST event.
 *
 * A drainer commits its position (the next drainer resumes there, and the
 * producer may reuse the slots below it) at the end of every mring_read()
 * and at close.  With MRING_NO_AUTOCOMMIT it commits only in
 * mring_commit(): a sink that must not lose events commits after it made
 * them durable, and a restarted drainer gets every uncommitted event again
 * (same seq numbers, so the sink can drop what it already has).
 *
 * Return: 0; -EINVAL; -ENOENT (no such segment); -EAGAIN (the segment is
 * being created: retry); -EBUSY (another drainer, also in this process);
 * -EPROTO (not an mring segment); -EPROTONOSUPPORT (other ABI major
 * version); -EBADMSG (truncated or inconsistent segment); -EACCES (also
 * MRING_DRAIN on a segment another user owns, whatever its mode; root
 * may); -ENOMEM; or the -errno of open/mmap.
 */
int mring_reader_open(const char *path, unsigned flags, struct mring_reader **out);

/**
 * mring_reader_close - detach and free a reader
 * @r: reader handle, or NULL
 *
 * A drainer commits its position first (not with MRING_NO_AUTOCOMMIT:
 * what was not committed is delivered again to the next drainer), and
 * releases the drainer lock.
 */
void mring_reader_close(struct mring_reader *r);

/**
 * mring_commit - commit everything a drainer has read so far
 * @r: a drainer handle
 *
 * Publishes the drain position after the last event returned by
 * mring_read(), with the loss count and the stream context (step,
 * time, epoch) that go with it: first the latch the next drainer
 * resumes from, then (release)
 * the tail the producer reads, which lets it reuse those slots.  Needed
 * only with MRING_NO_AUTOCOMMIT; harmless otherwise.
 *
 * Return: 0; -EINVAL (NULL, or not a drainer).
 */
int mring_commit(struct mring_reader *r);

/**
 * mring_read - take the next events from the ring
 * @r: reader handle
 * @ev: array of at least @max events
 * @max: capacity of @ev
 *
 * Copies committed records in stream order, each value with the step,
 * epoch and time of the STEP before it (a drainer keeps that context in
 * its drain position).  Losses appear in the
 * stream where they happened as MRING_EV_LOST events (value = ring slots
 * lost): records dropped on a full ring, records overwritten before this
 * reader got to them (OVERWRITE mode, or an observer lapped in any mode)
 * together with the values after them that lost their STEP, and drops a
 * crashed producer never got to write down.  A drainer
 * commits its position (release) after copying, unless opened with
 * MRING_NO_AUTOCOMMIT; that is what lets the producer reuse the slots.
 * Never blocks.
 *
 * Return: the number of events (0: none ready now); -EINVAL; -EBADMSG on
 * a corrupt record, after every good event before it was returned (the
 * position stays at the bad record).
 */
int mring_read(struct mring_reader *r, struct mring_event *ev, int max);

/*
 * The five calls below take a const handle: they read only what
 * mring_reader_open() set and the segment itself, never the handle's
 * read position.  Any number of threads may call them at once on one
 * handle, also while one thread calls mring_read() or mring_commit() on
 * it (mring serve's scraper threads share one handle so).
 */

/**
 * mring_metric_count - number of registered metrics
 * @r: reader handle
 *
 * Who may call: any thread, concurrently (see above).  Memory order:
 * acquire load of the count, pairing with the producer's release store
 * after the new slot is READY.
 *
 * Return: count (>= 0, never above the segment's max_metrics); -EINVAL.
 */
int mring_metric_count(const struct mring_reader *r);

/**
 * mring_metric_info - name and flags of a metric
 * @r: reader handle
 * @id: metric id
 * @name: buffer for the NUL-terminated name, or NULL
 * @len: size of @name (64 always suffices)
 * @flags: receives the flags, or NULL
 *
 * Who may call: any thread, concurrently (see above).
 *
 * Return: 0; -EINVAL (bad id or arguments); -ERANGE (@len too small);
 * -EBADMSG (the slot is corrupt).
 */
int mring_metric_info(const struct mring_reader *r, int id, char *name, size_t len,
		      unsigned *flags);

/**
 * mring_stats_read - live statistics of a metric's current epoch
 * @r: reader handle
 * @id: metric id
 * @out: the snapshot
 *
 * A consistent snapshot (two-copy latch, bounded retries): never a sum
 * from one update with a count from another.  Never moves any position.
 *
 * Who may call: any thread, concurrently (see above).  Progress:
 * lock-free; bounded retries.
 *
 * Return: 0; -EINVAL; -EAGAIN when no stable snapshot was had within the
 * retry bound (the producer updated the metric flat out: retry).
 */
int mring_stats_read(const struct mring_reader *r, int id, struct mring_stats *out);

/**
 * mring_epoch_read - statistics of a metric's last completed epoch
 * @r: reader handle
 * @id: metric id
 * @out: the snapshot
 *
 * Who may call: any thread, concurrently (see above).
 *
 * Return: as mring_stats_read(); -ENOENT before the first epoch end and
 * for a metric without MRING_ON_EPOCH.
 */
int mring_epoch_read(const struct mring_reader *r, int id, struct mring_stats *out);

/**
 * mring_status_read - producer state and counters
 * @r: reader handle
 * @out: the status
 *
 * alive comes from the producer's file lock (released by the kernel when
 * the process dies), closed from the header: a crash is alive 0 and
 * closed 0.  The counters are read individually (each is atomic).
 *
 * Who may call: any thread, concurrently (see above).
 *
 * Return: 0; -EINVAL.
 */
int mring_status_read(const struct mring_reader *r, struct mring_status *out);

/**
 * mring_hparams_read - the run's hyperparameters, as the producer set them
 * @r: reader handle
 * @buf: receives the JSON text, NUL-terminated
 * @len: size of @buf; MRING_HPARAMS_MAX + 1 always suffices
 *
 * A consistent copy (two-copy latch, bounded retries) of the object the
 * last mring_set_hparams() stored.  The text is checked again here (the
 * segment is untrusted): what is returned is one JSON object.
 *
 * Who may call: any thread, concurrently (see above).  Progress:
 * lock-free; bounded retries.
 *
 * Return: the text's length in bytes (without the NUL); -ENOENT (none
 * set yet, or a format 2.0 segment, which has no room for them);
 * -ERANGE (@len is not more than the length: nothing useful in @buf);
 * -EAGAIN (replaced flat out during every attempt: retry); -EBADMSG (the
 * segment holds a damaged text); -EINVAL.
 */
int mring_hparams_read(const struct mring_reader *r, char *buf, size_t len);

/**
 * mring_strerror - describe an mring return code
 * @err: a negative (or positive) errno value returned by mring
 * Return: a static string, with mring's meaning for its codes.
 */
const char *mring_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* MRING_H */
