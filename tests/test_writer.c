// SPDX-License-Identifier: MIT
/*
 * test_writer.c - creating, replacing and closing segments: config
 * checks, file placement and mode, full allocation, liveness, fork.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/mman.h>

#include "helpers.h"

Test(writer, defaults_make_a_fully_allocated_0600_segment)
{
	const char *name = seg_name("defaults");
	struct mring_writer *w = NULL;
	struct mring_reader *r;
	struct mring_status st;
	struct stat sb;

	umask(0);
	CHECK_OK(mring_writer_open(name, NULL, &w));
	cr_assert_eq(stat(seg_path, &sb), 0);
	cr_expect_eq(sb.st_mode & 07777, 0600);
	cr_expect(S_ISREG(sb.st_mode));
	/* every byte allocated: no sparse page to SIGBUS on later */
	cr_expect_geq((uint64_t)sb.st_blocks * 512, (uint64_t)sb.st_size);
	/* 4 KiB header + 1024 metric slots of 512 B + 2^20 ring slots of 16 B,
	 * then the hyperparameters: 64 B and two 64 KiB copies, in pages */
	cr_expect_eq((uint64_t)sb.st_size, 4096 + 1024 * 512 + (UINT64_C(1) << 20) * 16 +
		     33 * 4096);

	r = open_reader(name, MRING_OBSERVE);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.capacity, UINT64_C(1) << 20);
	cr_expect_eq(st.on_full, MRING_FULL_DROP);
	cr_expect_str_eq(st.run, name);
	cr_expect_eq(st.rank, 0);
	cr_expect_eq(st.pid, getpid());
	cr_expect_eq(st.alive, 1);
	cr_expect_eq(st.closed, 0);
	mring_reader_close(r);
	CHECK_OK(mring_writer_close(w));
}

Test(writer, config_fields_reach_readers)
{
	const char *name = seg_name("cfg");
	struct mring_config cfg = {
		.capacity = 64, .max_metrics = 7, .on_full = MRING_FULL_OVERWRITE,
		.run = "bert-large lr=3e-5", .rank = 3, .mode = 0640,
	};
	struct mring_writer *w;
	struct mring_reader *r;
	struct mring_status st;
	struct stat sb;

	umask(077);
	CHECK_OK(mring_writer_open(name, &cfg, &w));
	cr_assert_eq(stat(seg_path, &sb), 0);
	cr_expect_eq(sb.st_mode & 0777, 0640, "mode is exact whatever the umask");
	r = open_reader(name, MRING_OBSERVE);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.capacity, 64);
	cr_expect_eq(st.on_full, MRING_FULL_OVERWRITE);
	cr_expect_str_eq(st.run, "bert-large lr=3e-5");
	cr_expect_eq(st.rank, 3);
	for (int i = 0; i < 7; i++) {
		char n[8];

		snprintf(n, sizeof(n), "m%d", i);
		cr_expect_eq(mring_metric(w, n, MRING_ON_STEP), i);
	}
	cr_expect_eq(mring_metric(w, "m7", MRING_ON_STEP), -ENOSPC);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(writer, bad_config_is_refused_and_creates_nothing)
{
	const char *name = seg_name("badcfg");
	struct mring_writer *w = (struct mring_writer *)1;
	struct {
		struct mring_config c;
		int err;
	} cases[] = {
		{ { .capacity = 100 }, -EINVAL },
		{ { .capacity = 4 }, -EINVAL },
		{ { .capacity = UINT64_C(1) << 33 }, -EINVAL },
		{ { .max_metrics = 65536 }, -EINVAL },
		{ { .on_full = 3 }, -EINVAL },
		{ { .on_full = -1 }, -EINVAL },
		{ { .mode = 01600 }, -EINVAL },
		{ { .flags = 1u << 5 }, -EINVAL },
		{ { .run = "" }, -EINVAL },
		{ { .run = "tab\there" }, -EINVAL },
		{ { .run = "0123456789012345678901234567890123456789012345678901234567890123" },
		  -ENAMETOOLONG },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_expect_eq(mring_writer_open(name, &cases[i].c, &w), cases[i].err,
			     "case %zu", i);
		cr_expect_null(w, "case %zu leaves *out NULL", i);
		cr_expect_neq(access(seg_path, F_OK), 0, "case %zu created a file", i);
	}
	cr_expect_eq(mring_writer_open(name, NULL, NULL), -EINVAL);
	cr_expect_eq(mring_writer_open("", NULL, &w), -EINVAL);
	cr_expect_eq(mring_writer_open(".", NULL, &w), -EINVAL);
	cr_expect_eq(mring_writer_open("..", NULL, &w), -EINVAL);
	cr_expect_eq(mring_writer_open(NULL, NULL, &w), -EINVAL);
}

Test(writer, bare_names_live_in_mring_dir_and_paths_are_used_as_is)
{
	char dir[] = "/tmp/mring-dir-XXXXXX", path[512];
	struct mring_writer *w;
	struct stat sb;

	cr_assert_not_null(mkdtemp(dir));
	setenv("MRING_DIR", dir, 1);
	CHECK_OK(mring_writer_open("seg", NULL, &w));
	snprintf(path, sizeof(path), "%s/seg", dir);
	cr_expect_eq(stat(path, &sb), 0);
	mring_writer_close(w);
	unlink(path);

	snprintf(path, sizeof(path), "%s/by-path", dir);
	CHECK_OK(mring_writer_open(path, NULL, &w));
	cr_expect_eq(stat(path, &sb), 0);
	mring_writer_close(w);
	unlink(path);
	rmdir(dir);
}

Test(writer, a_live_producer_makes_the_name_busy)
{
	const char *name = seg_name("busy");
	struct mring_config rep = { .flags = MRING_CFG_REPLACE };
	struct mring_writer *w, *w2 = NULL;

	w = open_writer(name, 64, MRING_FULL_DROP);
	cr_expect_eq(mring_writer_open(name, NULL, &w2), -EBUSY);
	cr_expect_eq(mring_writer_open(name, &rep, &w2), -EBUSY,
		     "replace never takes a live producer's segment");
	mring_writer_close(w);
}

Test(writer, a_gone_producer_leaves_eexist_unless_replace)
{
	const char *name = seg_name("gone");
	struct mring_config rep = { .capacity = 64, .flags = MRING_CFG_REPLACE };
	struct mring_writer *w;
	struct mring_reader *r;
	struct mring_event ev[4];
	pid_t pid;

	/* the child checks with CHILD_*, never cr_assert (helpers.h) */
	pid = test_fork();
	if (pid == 0) {
		struct mring_writer *cw = child_open_writer(name, 64, MRING_FULL_DROP);

		CHILD_CHECK(mring_metric(cw, "x", MRING_ON_STEP));
		CHILD_CHECK(mring_log(cw, 0, 1.0));
		_exit(0);	/* no close: crashed as far as readers know */
	}
	wait_child_exit(pid, 0, "logs 1.0 and exits without closing");
	cr_expect_eq(mring_writer_open(name, NULL, &w), -EEXIST);

	/* a reader opened before the replace keeps the old data */
	r = open_reader(name, MRING_OBSERVE);
	CHECK_OK(mring_writer_open(name, &rep, &w));
	cr_expect_eq(mring_read(r, ev, 4), 1);
	cr_expect_eq(ev[0].value, 1.0);
	mring_reader_close(r);
	mring_writer_close(w);

	/* after a clean close too: the name is not silently reused */
	cr_expect_eq(mring_writer_open(name, NULL, &w), -EEXIST);
}

Test(writer, replace_never_deletes_a_file_that_is_not_a_segment)
{
	const char *name = seg_name("notours");
	struct mring_config rep = { .flags = MRING_CFG_REPLACE };
	struct mring_writer *w = NULL;
	char buf[16] = { 0 };
	int fd;

	fd = open(seg_path, O_CREAT | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "precious data\n", 14), 14);
	close(fd);
	cr_expect_eq(mring_writer_open(name, &rep, &w), -EEXIST);
	fd = open(seg_path, O_RDONLY);
	cr_assert_eq(read(fd, buf, 14), 14);
	close(fd);
	cr_expect_str_eq(buf, "precious data\n");
}

Test(writer, replace_clears_a_creator_that_died_before_publishing)
{
	const char *name = seg_name("halfmade");
	struct mring_config rep = { .capacity = 64, .flags = MRING_CFG_REPLACE };
	struct mring_reader *r = NULL;
	struct mring_writer *w = NULL;

	/* what a creator killed between fallocate and publishing leaves */
	cr_assert_eq(truncate(seg_path, 0), -1);
	cr_assert_eq(close(open(seg_path, O_CREAT | O_WRONLY, 0600)), 0);
	cr_assert_eq(truncate(seg_path, 16384), 0);
	cr_expect_eq(mring_reader_open(name, MRING_OBSERVE, &r), -EAGAIN);
	cr_expect_eq(mring_writer_open(name, NULL, &w), -EEXIST);
	CHECK_OK(mring_writer_open(name, &rep, &w));
	r = open_reader(name, MRING_OBSERVE);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(writer, symlinks_are_not_followed)
{
	const char *name = seg_name("link");
	char target[] = "/tmp/mring-target-XXXXXX";
	struct mring_config rep = { .flags = MRING_CFG_REPLACE };
	struct mring_writer *w = NULL;
	struct stat sb;
	int fd = mkstemp(target);

	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(symlink(target, seg_path), 0);
	cr_expect_lt(mring_writer_open(name, NULL, &w), 0);
	cr_expect_lt(mring_writer_open(name, &rep, &w), 0);
	cr_expect_null(w);
	cr_expect_eq(stat(target, &sb), 0);
	cr_expect_eq(sb.st_size, 0, "the link's target was not written");
	unlink(target);
}

Test(writer, a_full_shm_fails_open_with_enospc)
{
	char dir[] = "/tmp/mring-small-XXXXXX", path[512];
	struct mring_config cfg = { .capacity = UINT64_C(1) << 20 };
	struct mring_writer *w = NULL;

	cr_assert_not_null(mkdtemp(dir));
	if (mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0) {
		rmdir(dir);
		cr_skip_test("cannot mount a small tmpfs here (%s)", strerror(errno));
	}
	snprintf(path, sizeof(path), "%s/big", dir);
	cr_expect_eq(mring_writer_open(path, &cfg, &w), -ENOSPC);
	cr_expect_null(w);
	cr_expect_neq(access(path, F_OK), 0, "no half-made segment is left");
	cfg.capacity = 1024;
	CHECK_OK(mring_writer_open(path, &cfg, &w));
	mring_writer_close(w);
	unlink(path);
	umount(dir);
	rmdir(dir);
}

Test(writer, close_rejects_null)
{
	cr_expect_eq(mring_writer_close(NULL), -EINVAL);
	cr_expect_eq(mring_epoch_end(NULL), -EINVAL);
	cr_expect_eq(mring_metric(NULL, "x", MRING_ON_STEP), -EINVAL);
}

Test(writer, a_forked_child_is_detached_from_the_parent_segment)
{
	const char *name = seg_name("fork");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r;
	struct mring_event ev[16];
	int id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	int status, n;
	pid_t pid;

	mring_step(w, 1);
	cr_assert_eq(mring_log(w, id, 1.5), 0);
	pid = test_fork();
	if (pid == 0) {
		/* one bit per call that did not say -EPERM, in this order */
		int bad = 0;

		bad |= (mring_writer_check(w) != -EPERM) << 0;
		bad |= (mring_step(w, 99) != -EPERM) << 1;	/* lands in private memory */
		bad |= (mring_log(w, id, 666.0) != -EPERM) << 2;
		bad |= (mring_log_weighted(w, id, 666.0, 1.0) != -EPERM) << 3;
		bad |= (mring_metric(w, "other", MRING_ON_STEP) != -EPERM) << 4;
		bad |= (mring_epoch_end(w) != -EPERM) << 5;
		bad |= (mring_writer_close(w) != -EPERM) << 6;
		_exit(bad);
	}
	status = wait_child(pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "a call in the child did not say -EPERM: the child %s (bits: check, "
		  "step, log, log_weighted, metric, epoch_end, close)",
		  child_status(status));
	cr_assert_eq(mring_writer_check(w), 0, "the parent still owns it");
	cr_assert_eq(mring_writer_step(w), 1, "the child's step stayed in the child");
	cr_assert_eq(mring_log(w, id, 2.5), 0, "the parent keeps logging");

	r = open_reader(name, MRING_DRAIN);
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 3, "STEP 1, 1.5, 2.5 and nothing from the child");
	cr_expect_eq(ev[0].kind, MRING_EV_STEP);
	cr_expect_eq(ev[1].value, 1.5);
	cr_expect_eq(ev[2].value, 2.5);
	cr_expect_eq(ev[2].step, 1);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(writer, a_forked_child_does_not_keep_a_dead_producer_alive)
{
	const char *name = seg_name("forkalive");
	int ready[2], hold[2];
	struct mring_reader *r;
	struct mring_status st;
	pid_t producer;
	char c;

	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(hold), 0);
	producer = test_fork();
	if (producer == 0) {
		/* CHILD_*, never cr_assert (helpers.h) */
		struct mring_writer *w = child_open_writer(name, 64, MRING_FULL_DROP);

		(void)w;
		if (fork() == 0) {	/* a "data loader worker" outliving us */
			close(hold[1]);
			write(ready[1], "w", 1);	/* past the atfork handlers */
			close(ready[1]);
			read(hold[0], &c, 1);	/* EOF when the test closes its end */
			_exit(0);
		}
		write(ready[1], "r", 1);
		pause();
		_exit(0);
	}
	/*
	 * Only the children hold the write end now: a producer that failed
	 * before its worker started gives EOF here instead of a hang.
	 */
	close(hold[0]);
	close(ready[1]);
	for (int i = 0; i < 2; i++) {
		ssize_t n = read(ready[0], &c, 1);

		if (n == 1)
			continue;
		cr_assert_eq(n, 0, "reading the ready pipe: %s", strerror(errno));
		/* EOF: no write end is left, so the producer is gone and
		 * reaping it cannot block */
		cr_assert_fail("the producer, which opens a writer and forks a "
			       "worker, %s before both said ready",
			       child_status(wait_child(producer)));
	}
	r = open_reader(name, MRING_OBSERVE);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.alive, 1);
	kill(producer, SIGKILL);
	wait_child_signal(producer, SIGKILL, "opens a writer, forks a worker and waits");
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.alive, 0, "the worker's inherited copy must not look alive");
	cr_expect_eq(st.closed, 0, "killed, not closed");
	close(hold[1]);		/* release the worker */
	mring_reader_close(r);
}

/* ---- run names are UTF-8 ------------------------------------------------ */

static bool utf8_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		int len = *p < 0x80 ? 1 : *p >= 0xc2 && *p < 0xe0 ? 2 :
			  *p >= 0xe0 && *p < 0xf0 ? 3 : *p >= 0xf0 && *p < 0xf5 ? 4 : 0;

		if (!len)
			return false;
		for (int i = 1; i < len; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += len;
	}
	return true;
}

/* Open a writer at @dir/@base, read its run name into @run, remove it. */
static int run_of(const char *dir, const char *base, const struct mring_config *cfg,
		  char run[64])
{
	struct mring_writer *w = NULL;
	struct mring_reader *r;
	struct mring_status st;
	char path[512];
	int ret;

	snprintf(path, sizeof(path), "%s/%s", dir, base);
	ret = mring_writer_open(path, cfg, &w);
	if (ret < 0)
		return ret;
	r = open_reader(path, MRING_OBSERVE);
	CHECK_OK(mring_status_read(r, &st));
	memcpy(run, st.run, 64);
	mring_reader_close(r);
	mring_writer_close(w);
	unlink(path);
	return 0;
}

Test(writer, a_run_name_that_is_not_utf8_is_refused)
{
	const char *name = seg_name("badrun");
	static const char *const bad[] = {
		"exp\xff", "caf\xe9", "\xc0\xae\xc0\xae", "\xed\xa0\x80",
		"\xf4\x90\x80\x80", "run \xe2\x82",
	};
	struct mring_config cfg = { .capacity = 64 };
	struct mring_writer *w = (struct mring_writer *)1;
	char run[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg.run = bad[i];
		cr_expect_eq(mring_writer_open(name, &cfg, &w), -EINVAL, "run %zu", i);
		cr_expect_null(w, "run %zu leaves *out NULL", i);
		cr_expect_neq(access(seg_path, F_OK), 0, "run %zu created a file", i);
	}
	cfg.run = "lr=3e-5 \xce\xb7 \xf0\x9f\x9a\x80";
	cr_assert_eq(run_of(getenv("MRING_DIR") && *getenv("MRING_DIR") ?
			    getenv("MRING_DIR") : "/dev/shm", name, &cfg, run), 0);
	cr_expect_str_eq(run, cfg.run, "UTF-8 run names reach readers unchanged");
}

Test(writer, a_long_segment_name_gives_a_run_name_cut_between_characters)
{
	static const char *const chars[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
	char dir[] = "/tmp/mring-cut-XXXXXX", base[128], run[64], want[64];

	cr_assert_not_null(mkdtemp(dir));
	for (size_t c = 0; c < 3; c++) {
		size_t clen = strlen(chars[c]);

		/* the character starts anywhere from byte 58 to 63 */
		for (size_t pad = 58; pad <= 63; pad++) {
			memset(base, 'a', pad);
			snprintf(base + pad, sizeof(base) - pad, "%s%s-tail", chars[c], chars[c]);
			cr_assert_eq(run_of(dir, base, NULL, run), 0);
			/* whole characters only, as many as fit in 63 bytes */
			memcpy(want, base, 64);
			want[63 >= pad + 2 * clen ? 63 : 63 >= pad + clen ? pad + clen : pad] = '\0';
			cr_expect(utf8_ok(run), "char %zu at %zu: run is not UTF-8", c, pad);
			cr_expect_str_eq(run, want, "char %zu at %zu", c, pad);
		}
	}
	rmdir(dir);
}

Test(writer, a_segment_name_with_bad_bytes_gives_a_text_run_name)
{
	char dir[] = "/tmp/mring-bytes-XXXXXX", run[64];

	cr_assert_not_null(mkdtemp(dir));
	/* a file name is any bytes but '/' and NUL */
	cr_assert_eq(run_of(dir, "caf\xe9_\xff\xfe_\xc0\xae_tab\there_\xe2\x82\xac", NULL,
			    run), 0);
	cr_expect_str_eq(run, "caf?_??_??_tab?here_\xe2\x82\xac");
	cr_assert_eq(run_of(dir, "cut\xe2\x82", NULL, run), 0);
	cr_expect_str_eq(run, "cut??", "a truncated character is two bad bytes");
	rmdir(dir);
}

/*
 * The inline hot path compiles struct mring_writer's offsets into the
 * program; a library with another layout must refuse it at open rather
 * than let mring_log() write through the wrong fields.
 */
Test(writer, a_program_built_for_another_layout_is_refused)
{
	const char *name = seg_name("abi");
	struct mring_writer *w = (struct mring_writer *)1;

	cr_assert_eq(__mring_writer_open(name, NULL, &w, _MRING_INLINE_ABI + 1,
					 sizeof(struct mring_writer)), -ELIBBAD);
	cr_assert_null(w);
	cr_assert_eq(__mring_writer_open(name, NULL, &w, _MRING_INLINE_ABI,
					 sizeof(struct mring_writer) + 8), -ELIBBAD);
	cr_assert_null(w);
	cr_assert_eq(access(seg_path, F_OK), -1, "a refused open created the segment");
	cr_assert_str_neq(mring_strerror(-ELIBBAD), strerror(ELIBBAD));
	cr_assert_eq(mring_writer_open(name, NULL, &w), 0);
	mring_writer_close(w);
}

/* mring_step() says what became of its STEP record; the step holds regardless. */
Test(writer, step_returns_what_became_of_its_record)
{
	struct mring_writer *w = open_writer(seg_name("stepret"), 8, MRING_FULL_DROP);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	int ok = 0, full = 0;
	struct mring_reader *r;
	struct mring_event ev[16];
	int n;

	cr_assert_eq(mring_writer_step(w), 0);
	cr_assert_eq(mring_writer_epoch(w), 0);
	/* 8 slots, one kept for a LOST record: 7 usable, 3 two-slot STEPs */
	for (uint64_t s = 1; s <= 10; s++) {
		int ret = mring_step(w, s * 10);

		cr_assert(ret == 0 || ret == -ENOBUFS, "mring_step: %d", ret);
		ok += ret == 0;
		full += ret == -ENOBUFS;
		cr_assert_eq(mring_writer_step(w), s * 10);
	}
	cr_assert_eq(ok, 3);
	cr_assert_eq(full, 7);
	cr_assert_eq(mring_epoch_end(w), 0);
	cr_assert_eq(mring_writer_epoch(w), 1);
	/* a value after a dropped STEP still carries the step */
	r = open_reader(seg_path, MRING_DRAIN);
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 3, "the STEP records that fit");
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(ev[i].step, (uint64_t)(i + 1) * 10);
		cr_assert_eq(ev[i].seq, (uint64_t)i * 2);
	}
	/* room again: the LOST record goes first, then the value */
	cr_assert_eq(mring_log(w, id, 1.0), 0);
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 2);
	cr_assert_eq(ev[0].kind, MRING_EV_LOST);
	cr_assert_eq(ev[0].value, 15.0, "7 dropped STEPs of 2 slots and the EPOCH_END");
	cr_assert_eq(ev[0].seq, 6);
	cr_assert_eq(ev[1].kind, MRING_EV_VALUE);
	cr_assert_eq(ev[1].seq, 9, "after the LOST record and the context pair");
	cr_assert_eq(ev[1].step, 100);
	cr_assert_eq(ev[1].epoch, 1);
	mring_reader_close(r);
	cr_assert_eq(mring_writer_check(NULL), -EINVAL);
	mring_writer_close(w);
}
