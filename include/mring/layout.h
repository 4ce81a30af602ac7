/* SPDX-License-Identifier: MIT */
/*
 * mring/layout.h - the shared segment, byte by byte.
 *
 * This is the on-memory format shared by a producer and any number of
 * reader processes (docs/segment-format.md explains every field, who
 * writes it and which orders pair).  It holds offsets, never pointers.
 * A reader treats every byte of it as untrusted input.
 *
 *   0      header (4 KiB): identity, producer, drainer and loss lines
 *   4096   metrics: max_metrics slots of MRING_METRIC_STRIDE bytes
 *   ring   capacity slots of _MRING_REC_SIZE bytes (page aligned)
 *   total_size  (format 2.1) the hyperparameters: a latch of two JSON
 *          texts; past total_size, so 2.0 readers map and check
 *          exactly what they always did
 *
 * Internal header: included by <mring.h>; the names are not API.
 */
#ifndef MRING_LAYOUT_H
#define MRING_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include "atomic.h"

/* Bytes 0a 0d 'm' 'r' 'i' 'n' 'g' 0x8b in memory on a little-endian host. */
#define _MRING_MAGIC		UINT64_C(0x8b676e69726d0d0a)
#define _MRING_ABI_MAJOR	2
#define _MRING_ABI_MINOR	2
#define _MRING_HDR_SIZE		4096u
#define _MRING_REC_SIZE		16u
#define _MRING_METRIC_STRIDE	512u
#define _MRING_HPARAMS_MAX	65536u	/* MRING_HPARAMS_MAX */
#define _MRING_NO_METRIC	0xffffu
#define _MRING_LOCK_PRODUCER	0	/* file byte locked by the producer */
#define _MRING_LOCK_DRAINER	1	/* file byte locked by the drainer */

/* hdr.state */
#define _MRING_STATE_INIT	0u
#define _MRING_STATE_OPEN	1u
#define _MRING_STATE_CLOSED	2u

/* metric.state */
#define _MRING_METRIC_FREE	0u
#define _MRING_METRIC_READY	1u

/*
 * One ring slot, 16 bytes: four to a cache line.  tag is the commit
 * word: 0 while the slot is being (re)written, then
 *
 *	(position + 1) << 24 | kind << 16 | arg
 *
 * (the stamp is position + 1 modulo 2^40).  A value record's arg is its
 * metric id and value its IEEE-754 bits; it carries no step, epoch or
 * time: those are the stream's context, set by the last STEP record.
 * A STEP takes two slots: {STEP, epoch & 0xffff, step} then
 * {WALL, epoch >> 16, wall_ns}.  After a loss the producer writes the
 * same pair as CTX, so the values after a gap are attributed again.
 */
struct _mring_rec {
	_mring_u64 tag;
	_mring_u64 value;
};

#define _MRING_STAMP_BITS	40
#define _MRING_STAMP_MASK	((UINT64_C(1) << _MRING_STAMP_BITS) - 1)
/* Ring-only kinds, after the public MRING_EV_* (1..6) */
#define _MRING_REC_WALL		7u	/* second slot of a STEP or CTX */
#define _MRING_REC_CTX		8u	/* a STEP that is not an event */
/* MRING_EV_REWIND (9, format 2.2) is a step pair too: a STEP that also
 * voids what was logged at steps >= its step */

/* One copy of a latched statistics snapshot (80 bytes). */
struct _mring_shm_stats {
	_mring_u64 epoch;
	_mring_u64 count;
	_mring_u64 nonfinite;
	_mring_u64 weight;	/* double bits */
	_mring_u64 sum;		/* double bits, Neumaier running sum */
	_mring_u64 comp;	/* double bits, its compensation term */
	_mring_u64 min;		/* double bits */
	_mring_u64 max;		/* double bits */
	_mring_u64 last;	/* double bits */
	_mring_u64 last_step;
};

/*
 * Two-copy latch (Linux seqcount_latch): the writer fills the copy that
 * seq + 1 selects, then publishes seq + 1.  A copy selected by the
 * current seq is always complete, so a writer killed mid-update never
 * wedges a reader.  seq == 0: nothing published yet.
 */
struct _mring_shm_latch {
	_mring_u64 seq;
	struct _mring_shm_stats copy[2];
};

/* Metric slot, MRING_METRIC_STRIDE bytes. */
struct _mring_shm_metric {
	char name[64];			/* NUL-terminated, 1..63 bytes */
	_mring_u32 flags;		/* MRING_ON_STEP | ... (normalized) */
	_mring_u32 state;		/* _MRING_METRIC_*, published last */
	char pad0[128 - 72];
	struct _mring_shm_latch live;	/* @128: running epoch stats */
	char pad1[320 - 128 - 168];
	struct _mring_shm_latch epoch;	/* @320: last completed epoch */
	char pad2[512 - 320 - 168];
};

/*
 * Drain position latch: {pos, lost} and the stream context at pos (the
 * step, its wall time and the epoch the next value belongs to) always
 * agree.  ctx = epoch | _MRING_CTX_KNOWN; without that bit the drainer
 * resumes at the next STEP.
 */
#define _MRING_CTX_KNOWN	(UINT64_C(1) << 32)
struct _mring_shm_drainpos {
	_mring_u64 seq;
	struct {
		_mring_u64 pos;
		_mring_u64 lost;
		_mring_u64 step;
		_mring_u64 wall_ns;
		_mring_u64 ctx;
	} copy[2];
};

/*
 * Identity: written once by the creator before magic is published, never
 * again.  Plain fields: a reader copies them once, checks the copy, and
 * uses only the copy.
 */
struct _mring_shm_ident {
	uint32_t abi_major;
	uint32_t abi_minor;
	uint32_t header_size;
	uint32_t record_size;
	uint64_t capacity;		/* records, power of two */
	uint32_t max_metrics;
	uint32_t metric_stride;
	uint64_t metrics_offset;
	uint64_t ring_offset;
	uint64_t total_size;
	int32_t pid;
	int32_t rank;
	uint64_t pid_start;		/* /proc/<pid>/stat starttime, ticks */
	int64_t created_ns;
	uint32_t on_full;
	uint32_t cfg_flags;
	char run[64];			/* NUL-terminated run name */
	/* format 2.1; 0 in a 2.0 segment */
	uint64_t hparams_offset;	/* == total_size */
	uint64_t hparams_size;		/* bytes, page aligned */
};

/*
 * Hyperparameters (format 2.1): one JSON object of at most
 * _MRING_HPARAMS_MAX bytes, set by the producer at any time.  A two-copy
 * latch (mring/latch.h) like the statistics: the producer writes the
 * copy seq + 1 selects (len, then the text as 8-byte words, zero
 * padded), then publishes seq + 1; seq 0: never set.
 */
struct _mring_shm_hparams {
	_mring_u64 seq;
	_mring_u64 len[2];		/* bytes of JSON text in each copy */
	_mring_u64 pad[5];
	_mring_u64 text[2][_MRING_HPARAMS_MAX / 8];
};

/* Loss latch: dropped total, drops not yet in a LOST record, and the
 * position that record will take; the three always agree. */
struct _mring_shm_loss {
	_mring_u64 seq;
	struct {
		_mring_u64 dropped;
		_mring_u64 pending;
		_mring_u64 pending_pos;
	} copy[2];
};

struct _mring_shm_hdr {
	_mring_u64 magic;		/* @0, published last (release) */
	struct _mring_shm_ident id;	/* @8 */
	char pad0[256 - 8 - sizeof(struct _mring_shm_ident)];

	/* producer line (@256): the producer writes it at every step */
	_mring_u32 state;
	_mring_u32 nmetrics;		/* release after a slot is READY */
	_mring_u64 head;		/* published write position (a hint) */
	_mring_u64 step;
	_mring_u64 step_wall_ns;
	_mring_u64 epoch;
	char pad1[384 - 296];

	/* drainer line (@384): written only by the drainer */
	_mring_u64 tail;		/* release: records < tail are consumed */
	_mring_u32 drainer;		/* 1 while a drainer is attached */
	uint32_t pad2;
	struct _mring_shm_drainpos dpos;	/* @400 */
	char pad3[512 - 488];

	/*
	 * loss line (@512): the producer writes it only when it drops; a
	 * drainer polls it when the ring is empty, so it must not share a
	 * line with the per-step fields.  A latch, because a producer killed
	 * between "dropped" and "pending" must not leave them disagreeing.
	 * After the producer died, the drainer that writes the pending LOST
	 * record itself publishes pending = 0.
	 */
	struct _mring_shm_loss loss;
	char pad4[4096 - 568];
};

_MRING_STATIC_ASSERT(sizeof(struct _mring_rec) == _MRING_REC_SIZE, "record size");
_MRING_STATIC_ASSERT(sizeof(struct _mring_shm_stats) == 80, "stats size");
_MRING_STATIC_ASSERT(sizeof(struct _mring_shm_metric) == _MRING_METRIC_STRIDE, "metric stride");
_MRING_STATIC_ASSERT(sizeof(struct _mring_shm_hdr) == _MRING_HDR_SIZE, "header size");
_MRING_STATIC_ASSERT(offsetof(struct _mring_shm_hdr, state) == 256, "producer line");
_MRING_STATIC_ASSERT(offsetof(struct _mring_shm_hdr, tail) == 384, "drainer line");
_MRING_STATIC_ASSERT(offsetof(struct _mring_shm_hdr, loss) == 512, "loss line");
_MRING_STATIC_ASSERT(sizeof(struct _mring_shm_ident) <= 248, "identity fits");
_MRING_STATIC_ASSERT(_MRING_HPARAMS_MAX % 8 == 0, "hparams in words");
_MRING_STATIC_ASSERT(offsetof(struct _mring_shm_metric, live) == 128, "live latch");
_MRING_STATIC_ASSERT(offsetof(struct _mring_shm_hdr, dpos) == 400, "drain position");

#endif /* MRING_LAYOUT_H */
