// SPDX-License-Identifier: MIT
/*
 * segment.c - what producer and readers agree on: where a segment lives,
 * how big it is, how it is locked, and when a header is believable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib.h"

#define MRING_DEFAULT_DIR "/dev/shm"
#define PAGE 4096u

int _mring_path_resolve(const char *path, char *buf, size_t len)
{
	const char *dir;
	int n;

	if (!path || !*path)
		return -EINVAL;
	if (strchr(path, '/')) {
		n = snprintf(buf, len, "%s", path);
	} else {
		if (!strcmp(path, ".") || !strcmp(path, ".."))
			return -EINVAL;
		dir = getenv("MRING_DIR");
		if (!dir || !*dir)
			dir = MRING_DEFAULT_DIR;
		n = snprintf(buf, len, "%s/%s", dir, path);
	}
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * What -ENOENT from opening @path meant, for a message: the directory the
 * name resolves into is missing ("(from $MRING_DIR)" for a bare name when
 * that variable chose it), or the file is.  mring_strerror() cannot say,
 * as the same code means "no completed epoch" elsewhere.  Exported for the
 * tool and the Python binding; not API.
 */
MRING_API const char *__mring_enoent_text(const char *path, char *buf, size_t len)
{
	char file[PATH_MAX], *slash;
	const char *env = getenv("MRING_DIR");
	struct stat sb;

	if (_mring_path_resolve(path, file, sizeof(file)) < 0)
		return mring_strerror(-ENOENT);
	slash = strrchr(file, '/');
	if (slash && slash != file) {
		*slash = '\0';
		if (stat(file, &sb) || !S_ISDIR(sb.st_mode)) {
			snprintf(buf, len, "no such directory %s%s", file,
				 !strchr(path, '/') && env && *env ? " (from $MRING_DIR)" : "");
			return buf;
		}
		*slash = '/';
	}
	snprintf(buf, len, "no segment %s", file);
	return buf;
}

/*
 * What -EEXIST from mring_writer_open(@path) meant, for a message: a
 * segment (or a dead creator's leftover) whose producer is gone, which
 * @replace_hint (the caller's way to say MRING_CFG_REPLACE) replaces, or a
 * file that is not a segment, which mring never replaces.  Exported for
 * the Python binding; not API.
 */
MRING_API const char *__mring_eexist_text(const char *path, const char *replace_hint,
					  char *buf, size_t len)
{
	char file[PATH_MAX];
	bool ours = false;
	struct stat sb;
	int fd;

	if (_mring_path_resolve(path, file, sizeof(file)) < 0)
		return mring_strerror(-EEXIST);
	fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		ours = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && _mring_file_ours(fd, &sb);
		close(fd);
	}
	if (ours)
		snprintf(buf, len, "a segment is at %s and its producer is gone "
			 "(%s replaces it)", file, replace_hint);
	else
		snprintf(buf, len, "%s is not an mring segment; mring never replaces "
			 "it: choose another name or remove it", file);
	return buf;
}

/*
 * May mring replace the regular file @fd (of @st)?  Only a segment, or
 * what a creator that died before publishing leaves (magic still 0, size
 * 0 or whole pages); anything else is not ours.  mring_writer_open()'s
 * replace and its -EEXIST text both ask this.
 */
bool _mring_file_ours(int fd, const struct stat *st)
{
	uint64_t magic = 0;

	if (st->st_size >= (off_t)sizeof(magic) &&
	    pread(fd, &magic, sizeof(magic), 0) != (ssize_t)sizeof(magic))
		return false;
	return magic == _MRING_MAGIC || (magic == 0 && st->st_size % 4096 == 0);
}

/* 1..63 bytes, no control characters (names end up in CSV, JSON, labels). */
int _mring_name_check(const char *name)
{
	size_t i;

	if (!name || !*name)
		return -EINVAL;
	for (i = 0; name[i]; i++) {
		unsigned char c = (unsigned char)name[i];

		if (i >= MRING_NAME_MAX)
			return -ENAMETOOLONG;
		if (c < 0x20 || c == 0x7f)
			return -EINVAL;
	}
	return 0;
}

/*
 * Draining and replacing change a run's data, so they need the file's
 * owner (or root), whatever its mode: a segment shared 0644 or even
 * 0666 for watching is still drained only by its own user.
 */
int _mring_owner_check(const struct stat *st)
{
	uid_t me = geteuid();

	return st->st_uid == me || me == 0 ? 0 : -EACCES;
}

/*
 * Open-file-description locks on single bytes: they conflict between two
 * opens even in one process, survive fork only with the description, and
 * the kernel drops them when the last descriptor goes, i.e. when the
 * holder dies.  That is the liveness signal a pid cannot give.
 */
int _mring_lock_take(int fd, int byte)
{
	struct flock fl = {
		.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES)
		return -EBUSY;
	return -errno;
}

/* 1 if another open file description holds @byte, 0 if not, or -errno. */
int _mring_lock_held(int fd, int byte)
{
	struct flock fl = {
		.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
	};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

int _mring_geom(uint64_t capacity, uint32_t max_metrics, struct _mring_geom *g)
{
	if (capacity < MRING_MIN_CAPACITY || capacity > MRING_MAX_CAPACITY ||
	    (capacity & (capacity - 1)))
		return -EINVAL;
	if (max_metrics < 1 || max_metrics > MRING_MAX_METRICS)
		return -EINVAL;
	g->metrics_offset = _MRING_HDR_SIZE;
	g->ring_offset = align_up(g->metrics_offset +
				  (uint64_t)max_metrics * _MRING_METRIC_STRIDE, PAGE);
	g->total_size = align_up(g->ring_offset + capacity * _MRING_REC_SIZE, PAGE);
	g->hparams_size = align_up(sizeof(struct _mring_shm_hparams), PAGE);
	g->file_size = g->total_size + g->hparams_size;
	return 0;
}

/*
 * Is this identity (a private copy, never the shared bytes) a segment we
 * can read?  Every field that sizes or places anything is recomputed from
 * first principles and compared, so a reader never indexes outside the
 * mapping whatever the bytes say.
 */
int _mring_ident_validate(const struct _mring_shm_ident *h, uint64_t file_size)
{
	struct _mring_geom g;

	if (h->abi_major != _MRING_ABI_MAJOR)
		return -EPROTONOSUPPORT;
	if (h->header_size != _MRING_HDR_SIZE || h->record_size != _MRING_REC_SIZE ||
	    h->metric_stride != _MRING_METRIC_STRIDE)
		return -EBADMSG;
	if (_mring_geom(h->capacity, h->max_metrics, &g))
		return -EBADMSG;
	if (h->metrics_offset != g.metrics_offset || h->ring_offset != g.ring_offset ||
	    h->total_size != g.total_size)
		return -EBADMSG;
	if (h->total_size > file_size)
		return -EBADMSG;
	/* 2.1 added the hyperparameters past total_size; 2.0 has none */
	if (h->abi_minor >= 1 && (h->hparams_offset != g.total_size ||
				  h->hparams_size != g.hparams_size ||
				  g.file_size > file_size))
		return -EBADMSG;
	if (h->on_full > MRING_FULL_WAIT)
		return -EBADMSG;
	return 0;
}

MRING_API int64_t __mring_clock_ns(void)
{
	return _mring_now_ns();
}

int64_t _mring_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Field 22 of /proc/<pid>/stat: tells a reused pid from the original. */
uint64_t _mring_proc_start(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	ssize_t n;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* after ") " comes field 3; walk to field 22 */
	for (field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (p)
		sscanf(p + 1, "%llu", &start);
	return start;
}

static bool committed(const struct _mring_rec *ring, uint64_t mask, uint64_t pos)
{
	/* acquire: pairs with the release store of tag in _mring_rec_store */
	uint64_t tag = _mring_load_acquire(&ring[pos & mask].tag);

	return tag && (tag >> 24) == ((pos + 1) & _MRING_STAMP_MASK);
}

/*
 * How many records are committed.  The published head is a hint: the
 * producer stores it at least every quarter ring (and at each step), so
 * the frontier is less than a ring past it; the commit stamps are the
 * truth.  Gallop, then bisect: O(log capacity) stamp loads.  With the
 * producer running, the answer is the frontier at some instant of the
 * call.
 */
uint64_t _mring_written(const struct _mring_shm_hdr *h,
			const struct _mring_rec *ring, uint64_t capacity)
{
	uint64_t lo = _mring_load_relaxed(&h->head);
	uint64_t mask = capacity - 1, step = 1, hi;

	if (!committed(ring, mask, lo))
		return lo;
	while (step < capacity && committed(ring, mask, lo + step)) {
		lo += step;
		step <<= 1;
	}
	hi = lo + (step < capacity ? step : capacity);
	while (hi - lo > 1) {		/* committed(lo), not committed(hi) */
		uint64_t mid = lo + (hi - lo) / 2;

		if (committed(ring, mask, mid))
			lo = mid;
		else
			hi = mid;
	}
	return lo + 1;
}
