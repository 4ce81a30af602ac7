// SPDX-License-Identifier: MIT
/*
 * test_corrupt.c - a reader treats the segment as untrusted input: wrong
 * magic, other version, truncation, garbage sizes, indices, names and
 * records give a clear error, never a crash or an endless loop.
 */
#include <fcntl.h>
#include <math.h>
#include <stddef.h>

#include "helpers.h"

#define HDR(f) offsetof(struct _mring_shm_hdr, f)
#define ID(f) (HDR(id) + offsetof(struct _mring_shm_ident, f))

/* A closed segment: capacity 16, 4 metric slots, 3 records, one epoch. */
static const char *make_segment(const char *tag)
{
	struct mring_config cfg = { .capacity = 16, .max_metrics = 4 };
	const char *name = seg_name(tag);
	struct mring_writer *w;
	int id;

	CHECK_OK(mring_writer_open(name, &cfg, &w));
	id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	mring_step(w, 1);
	mring_log(w, id, 0.5);
	mring_log(w, id, 0.25);
	mring_epoch_end(w);
	mring_writer_close(w);
	return name;
}

static void poke(off_t off, const void *bytes, size_t len)
{
	int fd = open(seg_path, O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, bytes, len, off), (ssize_t)len);
	close(fd);
}

static void poke64(off_t off, uint64_t v)
{
	poke(off, &v, sizeof(v));
}

static void poke32(off_t off, uint32_t v)
{
	poke(off, &v, sizeof(v));
}

static int try_open(const char *name, unsigned flags)
{
	struct mring_reader *r = NULL;
	int ret = mring_reader_open(name, flags, &r);

	if (ret == 0)
		mring_reader_close(r);
	else
		cr_expect_null(r);
	return ret;
}

static off_t rec_off(int i)
{
	/* ring_offset: header + 4 slots of 512, page aligned; 16-byte slots */
	return 8192 + (off_t)i * 16;
}

/* A slot's tag: see struct _mring_rec. */
static uint64_t tag(uint64_t stamp, unsigned kind, unsigned arg)
{
	return stamp << 24 | (uint64_t)kind << 16 | arg;
}

Test(corrupt, files_that_are_not_segments)
{
	const char *name = seg_name("notseg");
	char zeros[4096] = { 0 };
	int fd;

	fd = open(seg_path, O_CREAT | O_RDWR, 0600);
	cr_assert_geq(fd, 0);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EAGAIN, "empty: being created");
	cr_assert_eq(write(fd, "9 bytes\n", 8), 8);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EPROTO, "a small text file is no segment");
	cr_assert_eq(ftruncate(fd, 5), 0);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EPROTO, "5 bytes: no room for a magic");
	cr_assert_eq(pwrite(fd, zeros, 100, 0), 100);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EPROTO, "100 zero bytes, not page-sized");
	{
		const uint64_t magic = _MRING_MAGIC;

		cr_assert_eq(pwrite(fd, &magic, sizeof(magic), 0), (ssize_t)sizeof(magic));
		cr_expect_eq(try_open(name, MRING_OBSERVE), -EBADMSG,
			     "our magic, shorter than a header: a truncated segment");
	}
	cr_assert_eq(pwrite(fd, zeros, sizeof(zeros), 0), (ssize_t)sizeof(zeros));
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EAGAIN, "magic 0: being created");
	cr_assert_eq(pwrite(fd, "GIF89a\0\0", 8, 0), 8);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EPROTO);
	cr_expect_eq(try_open(name, MRING_DRAIN), -EPROTO);
	close(fd);
}

Test(corrupt, header_fields_are_all_checked)
{
	struct { off_t off; uint64_t v; int width; int err; } cases[] = {
		{ ID(abi_major), 1, 32, -EPROTONOSUPPORT },	/* the 40-byte format */
		{ ID(abi_major), 3, 32, -EPROTONOSUPPORT },
		{ ID(header_size), 8192, 32, -EBADMSG },
		{ ID(record_size), 32, 32, -EBADMSG },
		{ ID(capacity), 24, 64, -EBADMSG },
		{ ID(capacity), 0, 64, -EBADMSG },
		{ ID(capacity), 1024, 64, -EBADMSG },	/* valid shape, past the file */
		{ ID(max_metrics), 0, 32, -EBADMSG },
		{ ID(max_metrics), 100000, 32, -EBADMSG },
		{ ID(metric_stride), 64, 32, -EBADMSG },
		{ ID(metrics_offset), 0, 64, -EBADMSG },
		{ ID(ring_offset), 4096, 64, -EBADMSG },
		{ ID(total_size), UINT64_MAX, 64, -EBADMSG },
		{ ID(on_full), 9, 32, -EBADMSG },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = make_segment("hdr");

		if (cases[i].width == 32)
			poke32(cases[i].off, (uint32_t)cases[i].v);
		else
			poke64(cases[i].off, cases[i].v);
		cr_expect_eq(try_open(name, MRING_OBSERVE), cases[i].err, "case %zu", i);
		cr_expect_eq(try_open(name, MRING_DRAIN), cases[i].err, "case %zu", i);
		unlink(seg_path);
	}
}

Test(corrupt, a_truncated_segment_is_refused)
{
	const char *name = make_segment("trunc");

	cr_assert_eq(truncate(seg_path, 8192), 0);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EBADMSG);
	cr_expect_eq(try_open(name, MRING_DRAIN), -EBADMSG);
}

Test(corrupt, garbage_metric_count_and_names)
{
	const char *name = make_segment("names");
	off_t slot1 = 4096 + 512;
	struct mring_reader *r;
	char buf[64], junk[64];
	struct mring_stats st;

	poke32(HDR(nmetrics), 0xffffffffu);
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(mring_metric_count(r), 4, "clamped to max_metrics");
	cr_expect_eq(mring_metric_info(r, 1, buf, sizeof(buf), NULL), -EBADMSG,
		     "slot never published");
	cr_expect_eq(mring_stats_read(r, 3, &st), 0, "stats of garbage: any numbers, no crash");
	memset(junk, 'A', sizeof(junk));
	poke(4096, junk, sizeof(junk));			/* no NUL */
	cr_expect_eq(mring_metric_info(r, 0, buf, sizeof(buf), NULL), -EBADMSG);
	poke(4096, "lo\x01ss", 6);			/* control character */
	cr_expect_eq(mring_metric_info(r, 0, buf, sizeof(buf), NULL), -EBADMSG);
	(void)slot1;
	mring_reader_close(r);
}

Test(corrupt, a_bad_record_stops_the_stream_after_the_good_ones)
{
	/* slots: STEP 0-1, values 2 and 3, epoch value, weight, end */
	uint64_t cases[] = {
		tag(4, 9, 0),				/* unknown kind */
		tag(4, _MRING_REC_WALL, 0),		/* a WALL without its STEP */
		tag(4, MRING_EV_VALUE, 3),		/* unregistered metric */
		tag(4, MRING_EV_EPOCH_END, 0),		/* EPOCH_END with a metric */
		tag(4 + 16 * 5 + 1, MRING_EV_VALUE, 0),	/* stamp of another slot */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = make_segment("rec");
		struct mring_event ev[8];
		struct mring_reader *r;

		poke64(rec_off(3), cases[i]);
		r = open_reader(name, MRING_OBSERVE);
		cr_expect_eq(mring_read(r, ev, 8), 2, "case %zu: the good prefix", i);
		cr_expect_eq(ev[1].value, 0.5);
		cr_expect_eq(mring_read(r, ev, 8), -EBADMSG, "case %zu", i);
		cr_expect_eq(mring_read(r, ev, 8), -EBADMSG, "case %zu: and stays", i);
		mring_reader_close(r);
		unlink(seg_path);
	}
}

/*
 * A STEP is two slots, the WALL half committed first.  A STEP whose
 * second slot holds something else cannot be: nothing is delivered
 * from it, and the reader does not move past it.
 */
Test(corrupt, a_step_without_its_wall_slot)
{
	struct { uint64_t tag; int ret; } cases[] = {
		/* a value where the WALL was: damage */
		{ tag(2, MRING_EV_VALUE, 0), -EBADMSG },
		/* a WALL of a later lap: being overwritten, not yet readable */
		{ tag(2 + 16, _MRING_REC_WALL, 0), 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = make_segment("wall");
		struct mring_event ev[8];
		struct mring_reader *r;

		poke64(rec_off(1), cases[i].tag);
		r = open_reader(name, MRING_OBSERVE);
		cr_expect_eq(mring_read(r, ev, 8), cases[i].ret, "case %zu", i);
		cr_expect_eq(mring_read(r, ev, 8), cases[i].ret, "case %zu: and stays", i);
		mring_reader_close(r);
		unlink(seg_path);
	}
}

Test(corrupt, a_lost_record_with_an_impossible_count)
{
	const char *name = make_segment("lostval");
	struct mring_event ev[8];
	struct mring_reader *r;
	double zero = 0.0, nan = NAN;

	poke64(rec_off(3), tag(4, MRING_EV_LOST, 0xffff));
	poke(rec_off(3) + 8, &zero, 8);
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(mring_read(r, ev, 8), 2);
	cr_expect_eq(mring_read(r, ev, 8), -EBADMSG);
	mring_reader_close(r);
	poke(rec_off(3) + 8, &nan, 8);
	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(mring_read(r, ev, 8), 2);
	cr_expect_eq(mring_read(r, ev, 8), -EBADMSG);
	mring_reader_close(r);
}

/*
 * Stamps hold positions modulo 2^40.  A drain position near 2^64 makes
 * "a later lap" wrap past 2^64 to a small position, below where the
 * reader is (found by the fuzzer: the reader went back and forth
 * forever); it must stop instead.
 */
Test(corrupt, positions_that_would_wrap_past_2_64_stop_the_reader, .timeout = 10)
{
	const char *name = make_segment("wrap");
	const uint64_t pos = UINT64_MAX - 39;	/* slot 8 of 16 */
	off_t dpos = HDR(dpos);
	struct mring_event ev[8];
	struct mring_reader *r;

	poke64(HDR(head), pos + 8);		/* no commit there: written */
	poke64(dpos, 1);			/* seq 1 selects copy[1] */
	poke64(dpos + 8 + 40, pos);		/* copy[1].pos */
	/* slot 8 "holds" position pos + 64, which is 24 after 2^64 */
	poke64(rec_off(8), tag(25, MRING_EV_VALUE, 0));
	r = open_reader(name, MRING_DRAIN);
	cr_expect_eq(mring_read(r, ev, 8), -EBADMSG);
	cr_expect_eq(mring_read(r, ev, 8), -EBADMSG, "and stays");
	mring_reader_close(r);
}

Test(corrupt, a_drain_position_past_the_data_is_refused)
{
	const char *name = make_segment("dpos");
	off_t dpos = HDR(dpos);

	poke64(dpos, 1);		/* seq 1 selects copy[1] */
	poke64(dpos + 8 + 40, 1000);	/* copy[1].pos */
	cr_expect_eq(try_open(name, MRING_DRAIN), -EBADMSG);
	cr_expect_eq(try_open(name, MRING_OBSERVE), 0, "observers do not use it");
}

Test(corrupt, paths_that_are_not_regular_files)
{
	char dir[] = "/tmp/mring-notfile-XXXXXX";
	const char *name = seg_name("symlink");

	cr_assert_not_null(mkdtemp(dir));
	cr_expect_lt(try_open(dir, MRING_OBSERVE), 0);
	cr_expect_lt(try_open(dir, MRING_DRAIN), 0);
	cr_assert_eq(symlink(dir, seg_path), 0);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -ELOOP);
	rmdir(dir);
	unlink(seg_path);
}

Test(corrupt, a_fifo_at_the_path_never_hangs, .timeout = 10)
{
	const char *name = seg_name("fifo");
	struct mring_config rep = { .flags = MRING_CFG_REPLACE };
	struct mring_writer *w = NULL;

	cr_assert_eq(mkfifo(seg_path, 0600), 0);
	cr_expect_eq(try_open(name, MRING_OBSERVE), -EPROTO);
	cr_expect_eq(try_open(name, MRING_DRAIN), -EPROTO);
	cr_expect_eq(mring_writer_open(name, &rep, &w), -EEXIST, "not ours to replace");
}

/* xorshift64*: reproducible garbage */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static void exercise(const char *name, unsigned flags)
{
	struct mring_reader *r = NULL;
	struct mring_event ev[64];
	struct mring_status st;
	struct mring_stats ss;
	char buf[64];
	int n;

	if (mring_reader_open(name, flags, &r) < 0)
		return;
	for (int i = 0; i < 8; i++) {
		n = mring_read(r, ev, 64);
		if (n <= 0)
			break;
		for (int k = 0; k < n; k++)
			cr_assert(ev[k].kind >= MRING_EV_VALUE && ev[k].kind <= MRING_EV_EPOCH_WEIGHT);
	}
	mring_status_read(r, &st);
	n = mring_metric_count(r);
	cr_assert(n >= 0 && n <= 4);
	for (int id = -1; id <= n; id++) {
		mring_metric_info(r, id, buf, sizeof(buf), NULL);
		mring_stats_read(r, id, &ss);
		mring_epoch_read(r, id, &ss);
	}
	mring_reader_close(r);
}

Test(corrupt, random_damage_never_crashes_or_hangs_a_reader, .timeout = 120)
{
	const char *name = make_segment("fuzz");
	static unsigned char orig[16384];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	int fd = open(seg_path, O_RDWR);
	ssize_t size = read(fd, orig, sizeof(orig));

	cr_assert_gt(size, 8192);
	for (int iter = 0; iter < 3000; iter++) {
		int flips = 1 + (int)(rnd(&seed) % 8);

		cr_assert_eq(pwrite(fd, orig, (size_t)size, 0), size);
		for (int k = 0; k < flips; k++) {
			uint64_t x = rnd(&seed);
			/* half the damage in the header, the rest anywhere */
			off_t off = (off_t)((x & 1) ? (x >> 8) % 512 : (x >> 8) % (uint64_t)size);
			unsigned char b = (unsigned char)(x >> 40);

			if ((x >> 3) % 4 == 0) {
				uint64_t big = rnd(&seed);	/* an 8-byte garbage word */

				off &= ~7;
				if (off + 8 <= size)
					pwrite(fd, &big, 8, off);
			} else {
				pwrite(fd, &b, 1, off);
			}
		}
		exercise(name, MRING_OBSERVE);
		exercise(name, MRING_DRAIN);
	}
	close(fd);
}
