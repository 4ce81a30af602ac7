/* SPDX-License-Identifier: MIT */
/*
 * lib.h - helpers shared by the library's source files.  Not installed.
 */
#ifndef MRING_LIB_H
#define MRING_LIB_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "mring.h"

#define MRING_API __attribute__((visibility("default")))

/*
 * How a reader maps a segment.  The threaded test (tests/test_threads.c)
 * builds the library with MRING_ONE_MAPPING and supplies these, so that
 * readers in the producer's own process use the producer's mapping:
 * ThreadSanitizer tracks memory by address and sees no ordering between
 * two mappings of one file.
 */
#ifdef MRING_ONE_MAPPING
void *__mring_test_map(size_t len, int prot, int fd);
void __mring_test_unmap(void *map, size_t len);
#define _mring_map	__mring_test_map
#define _mring_unmap	__mring_test_unmap
#else
static inline void *_mring_map(size_t len, int prot, int fd)
{
	return mmap(NULL, len, prot, MAP_SHARED, fd, 0);
}

static inline void _mring_unmap(void *map, size_t len)
{
	munmap(map, len);
}
#endif

/*
 * Test builds only (tests/test_hparams_torn.c, MRING_READ_TESTPOINTS): a
 * call inside a reader's copy of a latched area, where the test lets the
 * writer run, so that a copy overwritten mid-read is made on purpose.
 */
#ifdef MRING_READ_TESTPOINTS
void __mring_read_testpoint(void);
#else
static inline void __mring_read_testpoint(void)
{
}
#endif

/* Segment geometry derived from a capacity and a metric count. */
struct _mring_geom {
	uint64_t metrics_offset;
	uint64_t ring_offset;
	uint64_t total_size;		/* end of the ring */
	uint64_t hparams_size;		/* format 2.1: the area at total_size */
	uint64_t file_size;		/* total_size + hparams_size */
};

/*
 * The stream context at a ring position: what the last STEP (or CTX)
 * record set, with the epoch advanced by each EPOCH_END since.  A value
 * record is read against it.  Unknown after a lap: the reader then skips
 * to the next STEP, counting what it skips as lost.
 */
struct _mring_ctx {
	uint64_t step;
	int64_t wall_ns;
	uint32_t epoch;
	bool known;
};

/* What the drain position latch holds (drainpos.c). */
struct _mring_drainpos {
	uint64_t pos;
	uint64_t lost;
	struct _mring_ctx ctx;
};

struct mring_reader {
	struct _mring_shm_ident id;	/* checked private copy of the identity */
	int fd;
	unsigned flags;
	void *map;
	size_t map_size;
	struct _mring_shm_hdr *hdr;
	struct _mring_shm_metric *metrics;
	struct _mring_rec *ring;
	struct _mring_shm_hparams *hparams;	/* NULL: a format 2.0 segment */
	uint64_t capacity;
	uint64_t mask;
	uint32_t max_metrics;
	uint32_t nmetrics;		/* cached; reloaded when a record needs more */
	uint64_t pos;			/* next position to read */
	uint64_t lost;			/* drainer: lost records reported so far */
	uint64_t dseq;			/* drainer: drain position latch seq */
	uint64_t published;		/* drainer: last published position */
	bool started;			/* observer: delivered anything yet */
	struct _mring_ctx ctx;		/* the stream context at pos */
};

int _mring_path_resolve(const char *path, char *buf, size_t len);
int _mring_name_check(const char *name);
size_t _mring_utf8_char(const char *s, size_t n);
bool _mring_utf8_valid(const char *s);
size_t _mring_name_copy(char *dst, size_t size, const char *src);
int _mring_owner_check(const struct stat *st);
bool _mring_file_ours(int fd, const struct stat *st);
int _mring_lock_take(int fd, int byte);
int _mring_lock_held(int fd, int byte);
int _mring_geom(uint64_t capacity, uint32_t max_metrics, struct _mring_geom *g);
int _mring_ident_validate(const struct _mring_shm_ident *id, uint64_t file_size);
int64_t _mring_now_ns(void);
uint64_t _mring_proc_start(pid_t pid);
int _mring_json_object_check(const char *s, size_t len);
uint64_t _mring_written(const struct _mring_shm_hdr *h,
			const struct _mring_rec *ring, uint64_t capacity);
int _mring_latch_read(const struct _mring_shm_latch *l, struct mring_stats *out,
		      unsigned flags);
struct _mring_loss {
	uint64_t seq, dropped, pending, pending_pos;
};

void _mring_acc_reset(struct _mring_acc *a);
/* stats.c: the producer's side of the statistics */
void _mring_stats_store(struct _mring_shm_stats *c, const struct _mring_acc *a,
			uint32_t epoch);
void _mring_live_publish(struct _mring_acc *a, uint32_t epoch);
void _mring_epoch_publish(struct mring_writer *w, uint32_t id);
int _mring_names_init(struct mring_writer *w);
/* loss.c */
uint64_t _mring_loss_publish(struct _mring_shm_hdr *h, uint64_t last, uint64_t dropped,
			     uint64_t pending, uint64_t pending_pos);
void _mring_loss_read(const struct _mring_shm_hdr *h, struct _mring_loss *out);
/* drainpos.c */
uint64_t _mring_drainpos_publish(struct _mring_shm_hdr *h, uint64_t last,
				 const struct _mring_drainpos *p);
void _mring_drainpos_read(const struct _mring_shm_hdr *h, int64_t created_ns,
			  struct _mring_drainpos *out);

#endif /* MRING_LIB_H */
