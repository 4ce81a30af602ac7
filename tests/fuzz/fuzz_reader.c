// SPDX-License-Identifier: MIT
/*
 * fuzz_reader.c - libFuzzer target for the reader side of mring.
 *
 * A reader must treat every byte of a segment as untrusted: whatever the
 * file holds, the reader API returns a clear negative errno and never
 * crashes, hangs or trips a sanitizer.  Each input becomes the content of
 * a segment file, which is then opened as an observer, as a drainer
 * without autocommit and as an autocommitting drainer (twice), and read
 * through every reader call.
 *
 * Input format (byte 0 selects the mode):
 *   byte 0 even  the whole input is the file (a real segment starts with
 *                0x0a, even, so whole segments are valid inputs)
 *   byte 0 odd   patch mode over a valid template segment made once at
 *                startup with the real writer API:
 *                  bit 1   template B (OVERWRITE, lapped ring) instead of
 *                          A (DROP, every record kind, one epoch)
 *                  bit 2   bytes 1-2 (LE): new file length, modulo
 *                          template size + 4096 (truncate or zero-extend)
 *                  bit 3   patches are (offset16 LE, 8-byte LE word),
 *                          stored at offset & ~7; else (offset16, byte)
 *                patch offsets are taken modulo the file length.
 *
 * Build: see tests/fuzz/run.sh.  With -DMRING_FUZZ_SEEDGEN the file also
 * gets a main() that writes the seed corpus to the directory argv[1].
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mring.h>

#define MAX_CALLS 16
#define MAX_EVENTS 64

struct tmpl {
	unsigned char *buf;
	size_t size;
};

static char dir_path[512];
static char seg_path[600];
static int seg_fd = -1;
static struct tmpl tmpl_a, tmpl_b;
static unsigned char *filebuf;
static size_t filebuf_cap;

/*
 * A failed check names itself before trapping: the optimizer merges
 * traps, so the stack trace's line can point at another CHECK.
 */
#define CHECK(cond)							\
	do {								\
		if (!(cond))						\
			check_failed(__LINE__, #cond);			\
	} while (0)

static void __attribute__((noreturn, noinline)) check_failed(int line, const char *what)
{
	fprintf(stderr, "fuzz_reader: check failed at line %d: %s (errno %d)\n",
		line, what, errno);
	__builtin_trap();
}

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz_reader: %s: %s (%d)\n", what, strerror(err < 0 ? -err : err), err);
	abort();
}

static void cleanup(void)
{
	if (seg_fd >= 0)
		close(seg_fd);
	seg_fd = -1;
	if (seg_path[0])
		unlink(seg_path);
	if (dir_path[0])
		rmdir(dir_path);
}

/* Read a closed segment file into memory and remove it. */
static void tmpl_load(const char *path, struct tmpl *t)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("template open", -errno);
	t->size = (size_t)st.st_size;
	t->buf = malloc(t->size);
	if (!t->buf || pread(fd, t->buf, t->size, 0) != (ssize_t)t->size)
		die("template read", -EIO);
	close(fd);
	unlink(path);
}

/*
 * Template A: DROP mode, capacity 16, 4 metric slots, three metrics of
 * different kinds, two steps and one epoch end: VALUE, STEP, EPOCH_VALUE,
 * EPOCH_WEIGHT and EPOCH_END records, published live and epoch latches.
 * Template B: OVERWRITE mode, capacity 8, lapped several times, so
 * observers and drainers meet later laps.
 */
static void tmpl_make(void)
{
	char path[700];
	struct mring_writer *w;
	int a, b, c, ret;

	snprintf(path, sizeof(path), "%s/tmpl-a", dir_path);
	{
		struct mring_config cfg = { .capacity = 16, .max_metrics = 4,
					    .run = "fuzz-a", .rank = 3 };

		ret = mring_writer_open(path, &cfg, &w);
		if (ret < 0)
			die("writer_open A", ret);
		a = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH | MRING_PROG_BAR);
		b = mring_metric(w, "tokens", MRING_ON_EPOCH | MRING_SUM);
		c = mring_metric(w, "lr", MRING_ON_STEP);
		if (a < 0 || b < 0 || c < 0)
			die("metric A", a < 0 ? a : b < 0 ? b : c);
		mring_step(w, 1);
		mring_log_weighted(w, a, 0.5, 2.0);
		mring_log(w, b, 100.0);
		mring_log(w, c, 1e-3);
		mring_step(w, 2);
		mring_log(w, a, 0.25);
		mring_log(w, b, 28.0);
		mring_epoch_end(w);
		mring_step(w, 3);
		mring_log(w, a, 0.125);
		mring_writer_close(w);
		tmpl_load(path, &tmpl_a);
	}
	snprintf(path, sizeof(path), "%s/tmpl-b", dir_path);
	{
		struct mring_config cfg = { .capacity = 8, .max_metrics = 2,
					    .on_full = MRING_FULL_OVERWRITE };

		ret = mring_writer_open(path, &cfg, &w);
		if (ret < 0)
			die("writer_open B", ret);
		a = mring_metric(w, "acc", MRING_ON_STEP | MRING_ON_EPOCH | MRING_MAX);
		if (a < 0)
			die("metric B", a);
		for (int s = 0; s < 12; s++) {
			mring_step(w, (uint64_t)s);
			mring_log(w, a, s * 0.1);
			if (s == 5)
				mring_epoch_end(w);
		}
		mring_writer_close(w);
		tmpl_load(path, &tmpl_b);
	}
}

static void setup(void)
{
	const char *base = getenv("MRING_FUZZ_DIR");
	struct stat st;

	if (!base || !*base)
		base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
	snprintf(dir_path, sizeof(dir_path), "%s/mring-fuzz-%d", base, (int)getpid());
	if (mkdir(dir_path, 0700) < 0 && errno != EEXIST)
		die("mkdir", -errno);
	snprintf(seg_path, sizeof(seg_path), "%s/seg", dir_path);
	unlink(seg_path);
	atexit(cleanup);
	tmpl_make();
	seg_fd = open(seg_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (seg_fd < 0)
		die("open seg", -errno);
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* Turn an input into the bytes of the segment file; returns the length. */
static size_t build_file(const uint8_t *data, size_t size)
{
	const struct tmpl *t;
	size_t len, i = 1;
	unsigned mode;

	if (size == 0 || !(data[0] & 1)) {
		if (size > filebuf_cap) {
			filebuf = realloc(filebuf, size);
			if (!filebuf)
				abort();
			filebuf_cap = size;
		}
		if (size)
			memcpy(filebuf, data, size);
		return size;
	}
	mode = data[0];
	t = (mode & 2) ? &tmpl_b : &tmpl_a;
	len = t->size;
	if ((mode & 4) && size >= 3) {
		len = le16(data + 1) % (t->size + 4096);
		i = 3;
	}
	if (filebuf_cap < t->size + 4096) {
		filebuf = realloc(filebuf, t->size + 4096);
		if (!filebuf)
			abort();
		filebuf_cap = t->size + 4096;
	}
	memset(filebuf, 0, filebuf_cap);
	memcpy(filebuf, t->buf, len < t->size ? len : t->size);
	if (!len)
		return 0;
	if (mode & 8) {
		for (; i + 10 <= size; i += 10) {
			size_t off = (le16(data + i) % len) & ~(size_t)7;

			if (off + 8 <= len)
				memcpy(filebuf + off, data + i + 2, 8);
		}
	} else {
		for (; i + 3 <= size; i += 3)
			filebuf[le16(data + i) % len] = data[i + 2];
	}
	return len;
}

static void write_file(const unsigned char *buf, size_t len)
{
	/* ftruncate + pwrite on the same inode: no stale mapping survives an
	 * input (every reader of the previous one is closed) */
	if (ftruncate(seg_fd, (off_t)len) < 0)
		die("ftruncate", -errno);
	if (len && pwrite(seg_fd, buf, len, 0) != (ssize_t)len)
		die("pwrite", -errno);
}

static int open_ret_ok(int ret)
{
	return ret == 0 || ret == -EAGAIN || ret == -EPROTO || ret == -EPROTONOSUPPORT ||
	       ret == -EBADMSG || ret == -EINVAL || ret == -ENOMEM;
}

struct pass {
	int opened;
	int nevents;
	uint64_t first_seq;
	uint64_t last_seq;
};

static void check_events(struct mring_reader *r, const struct mring_event *ev,
			 int n, struct pass *p)
{
	int count = mring_metric_count(r);

	for (int k = 0; k < n; k++) {
		const struct mring_event *e = &ev[k];

		CHECK((e->kind >= MRING_EV_VALUE && e->kind <= MRING_EV_EPOCH_WEIGHT) ||
		      e->kind == MRING_EV_REWIND);
		switch (e->kind) {
		case MRING_EV_VALUE:
		case MRING_EV_EPOCH_VALUE:
		case MRING_EV_EPOCH_WEIGHT:
			CHECK(e->metric >= 0 && e->metric < count);
			break;
		case MRING_EV_LOST:
			CHECK(e->metric == -1);
			CHECK(e->value >= 1.0);
			break;
		default:
			CHECK(e->metric == -1);
		}
		CHECK(e->flags == (e->kind == MRING_EV_LOST && e->flags ? MRING_EVF_OVERRUN : 0));
		/* seq strictly increasing, across calls too */
		if (p->nevents)
			CHECK(e->seq > p->last_seq);
		else
			p->first_seq = e->seq;
		p->last_seq = e->seq;
		p->nevents++;
	}
}

static void check_metrics(struct mring_reader *r, const struct mring_status *st)
{
	struct mring_stats ss;
	char name[64];
	unsigned flags;
	int n, ret;

	n = mring_metric_count(r);
	CHECK(n >= 0 && n <= (int)MRING_MAX_METRICS);
	CHECK(st->metrics == (uint32_t)n);
	for (int id = -1; id <= n; id++) {
		int valid = id >= 0 && id < n;

		flags = 0xdeadu;
		ret = mring_metric_info(r, id, name, sizeof(name), &flags);
		if (!valid) {
			CHECK(ret == -EINVAL);
		} else {
			CHECK(ret == 0 || ret == -EBADMSG);
			if (ret == 0) {
				size_t len = strnlen(name, sizeof(name));

				CHECK(len >= 1 && len <= MRING_NAME_MAX);
				for (size_t i = 0; i < len; i++)
					CHECK((unsigned char)name[i] >= 0x20 &&
					      (unsigned char)name[i] != 0x7f);
				CHECK(!(flags & ~(unsigned)(MRING_ON_STEP | MRING_ON_EPOCH |
							    MRING_REDUCE_MASK | MRING_PROG_BAR)));
				/* too small a buffer: -ERANGE, never an overflow */
				CHECK(mring_metric_info(r, id, name, len, NULL) == -ERANGE);
				CHECK(mring_metric_info(r, id, NULL, 0, NULL) == 0);
			}
		}
		ret = mring_stats_read(r, id, &ss);
		/* nothing updates the latch here: a snapshot is always had */
		CHECK(valid ? ret == 0 : ret == -EINVAL);
		ret = mring_epoch_read(r, id, &ss);
		CHECK(valid ? (ret == 0 || ret == -ENOENT) : ret == -EINVAL);
		(void)mring_strerror(ret);
	}
}

static void exercise(unsigned flags, struct pass *p)
{
	struct mring_reader *r = (struct mring_reader *)1;
	struct mring_event ev[MAX_EVENTS];
	struct mring_status st;
	int ret, n, last = 1;

	memset(p, 0, sizeof(*p));
	ret = mring_reader_open(seg_path, flags, &r);
	(void)mring_strerror(ret);
	if (ret < 0) {
		CHECK(r == NULL);
		if (!open_ret_ok(ret))
			fprintf(stderr, "fuzz_reader: open (flags %u): %d\n", flags, ret);
		CHECK(open_ret_ok(ret));
		return;
	}
	CHECK(r != NULL);
	p->opened = 1;

	ret = mring_status_read(r, &st);
	CHECK(ret == 0);
	CHECK(st.capacity >= MRING_MIN_CAPACITY && st.capacity <= MRING_MAX_CAPACITY &&
	      !(st.capacity & (st.capacity - 1)));
	CHECK(st.on_full >= MRING_FULL_DROP && st.on_full <= MRING_FULL_WAIT);
	CHECK(memchr(st.run, '\0', sizeof(st.run)) != NULL);
	CHECK(st.alive == 0);		/* no producer runs here */
	CHECK(st.drainer == !!(flags & MRING_DRAIN));

	for (int call = 0; call < MAX_CALLS; call++) {
		int max = call == 0 ? 1 : MAX_EVENTS;	/* a small batch first */

		n = mring_read(r, ev, max);
		CHECK(n <= max);
		if (last < 0) {
			/* the position stays at the bad record */
			CHECK(n == last);
			break;
		}
		if (n < 0) {
			CHECK(n == -EBADMSG);
			last = n;
			continue;
		}
		check_events(r, ev, n, p);
		if (n == 0)
			break;
	}
	CHECK(mring_read(r, ev, 0) == 0);
	CHECK(mring_read(r, NULL, 1) == -EINVAL);
	CHECK(mring_read(r, ev, -1) == -EINVAL);

	ret = mring_status_read(r, &st);
	CHECK(ret == 0);
	check_metrics(r, &st);

	/* a NO_AUTOCOMMIT drainer that never commits leaves the position */
	if (flags != (MRING_DRAIN | MRING_NO_AUTOCOMMIT)) {
		ret = mring_commit(r);
		CHECK((flags & MRING_DRAIN) ? ret == 0 : ret == -EINVAL);
	}
	mring_reader_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pass obs, noac, drain, again;
	int resume_checks;
	size_t len;

	if (seg_fd < 0)
		setup();
	len = build_file(data, size);
	write_file(filebuf, len);

	/* the drain position latch skips seq 0 when it wraps (this target
	 * found that: tests/fuzz/crashes/dpos-seq-wrap), so always check */
	resume_checks = 1;

	exercise(MRING_OBSERVE, &obs);
	exercise(MRING_DRAIN | MRING_NO_AUTOCOMMIT, &noac);
	exercise(MRING_DRAIN, &drain);
	/* NO_AUTOCOMMIT committed nothing: an autocommitting drainer
	 * resumes at the same first position */
	if (resume_checks && noac.opened && drain.opened && noac.nevents && drain.nevents)
		CHECK(drain.first_seq == noac.first_seq);
	/* and the next drainer resumes after what the last one read */
	exercise(MRING_DRAIN, &again);
	if (resume_checks && drain.nevents && again.nevents)
		CHECK(again.first_seq > drain.last_seq);
	/* an observer's open of the same file agrees with itself */
	exercise(MRING_OBSERVE, &obs);
	return 0;
}

#ifdef MRING_FUZZ_SEEDGEN
static void seed(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
		die(path, -errno);
}

/* Writes the seed corpus: cc -DMRING_FUZZ_SEEDGEN ... && ./a.out corpus/ */
int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	uint8_t p[64];

	setup();
	seed(dir, "whole-a", tmpl_a.buf, tmpl_a.size);
	seed(dir, "whole-b", tmpl_b.buf, tmpl_b.size);
	seed(dir, "empty", "", 0);
	seed(dir, "trunc-header", tmpl_a.buf, 100);
	seed(dir, "header-only", tmpl_a.buf, 4096);
	/* patch A: nothing (the template itself) */
	seed(dir, "patch-a-none", "\x01", 1);
	seed(dir, "patch-b-none", "\x03", 1);
	/* patch A: nmetrics (@260) = 0xff */
	memcpy(p, "\x01\x04\x01\xff", 4);
	seed(dir, "patch-a-nmetrics", p, 4);
	/* patch A: slot 2's kind byte (ring @8192, 16-byte slots, tag
	 * bits 16..23: @8192 + 32 + 2) */
	memcpy(p, "\x01\x22\x20\x09", 4);
	seed(dir, "patch-a-kind", p, 4);
	/* patch A, words: the loss latch (@512, seq 0 selects copy[0]):
	 * pending (@528) = 3, pending_pos (@536) = 11, the first free
	 * position: a dead producer's unwritten LOST record */
	memset(p, 0, sizeof(p));
	p[0] = 0x09;
	p[1] = 0x10; p[2] = 0x02; p[3] = 3;		/* @528 */
	p[11] = 0x18; p[12] = 0x02; p[13] = 11;		/* @536 */
	seed(dir, "patch-a-lostpending", p, 21);
	/* patch A: truncated to 8192 + 40 bytes (inside slot 2) */
	memcpy(p, "\x05\x28\x20", 3);
	seed(dir, "patch-a-trunc", p, 3);
	/* patch B: drain position latch seq (@400) = 1, copy[1].pos = 5 */
	memset(p, 0, sizeof(p));
	p[0] = 0x0b;
	p[1] = 0x90; p[2] = 0x01; p[3] = 1;		/* @400 */
	p[11] = 0xc0; p[12] = 0x01; p[13] = 5;		/* @448: 400 + 8 + 40 */
	seed(dir, "patch-b-dpos", p, 21);
	return 0;
}
#endif
