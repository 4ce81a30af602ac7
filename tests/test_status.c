// SPDX-License-Identifier: MIT
/*
 * test_status.c - what a reader knows about the producer: alive, closed,
 * crashed, counters, step and epoch, drainer presence.
 */
#include <signal.h>

#include "helpers.h"

Test(status, tracks_step_epoch_and_counters)
{
	const char *name = seg_name("counters");
	struct mring_config cfg = { .capacity = 64, .run = "run-a", .rank = 2 };
	struct mring_writer *w;
	struct mring_reader *o, *d;
	struct mring_status st;
	struct mring_event ev[64];
	int id;

	CHECK_OK(mring_writer_open(name, &cfg, &w));
	id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH);
	o = open_reader(name, MRING_OBSERVE);
	CHECK_OK(mring_status_read(o, &st));
	cr_expect_eq(st.alive, 1);
	cr_expect_eq(st.drainer, 0);
	cr_expect_eq(st.metrics, 1);
	cr_expect_str_eq(st.run, "run-a");
	cr_expect_eq(st.rank, 2);

	for (int s = 0; s < 5; s++) {
		mring_step(w, 100 + s);
		mring_log(w, id, 1.0);
	}
	mring_epoch_end(w);
	mring_step(w, 105);
	CHECK_OK(mring_status_read(o, &st));
	cr_expect_eq(st.step, 105);
	cr_expect_eq(st.epoch, 1);
	cr_expect_eq(st.written, 20, "5 two-slot steps + 5 values + epoch value and weight "
		     "+ end + step");
	cr_expect_gt(st.step_wall_ns, st.created_ns - 1);

	d = open_reader(name, MRING_DRAIN);
	CHECK_OK(mring_status_read(o, &st));
	cr_expect_eq(st.drainer, 1);
	CHECK_OK(mring_status_read(d, &st));
	cr_expect_eq(st.drainer, 1, "the drainer's own handle sees itself");
	cr_expect_eq(read_all(d, ev, 64), 14);
	CHECK_OK(mring_status_read(o, &st));
	cr_expect_eq(st.read, 20);
	mring_reader_close(d);
	CHECK_OK(mring_status_read(o, &st));
	cr_expect_eq(st.drainer, 0);
	mring_reader_close(o);
	mring_writer_close(w);
}

Test(status, clean_close_and_crash_are_told_apart)
{
	const char *clean = seg_name("clean");
	struct mring_writer *w = open_writer(clean, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(clean, MRING_OBSERVE);
	struct mring_status st;
	char crashed[128];
	pid_t pid;

	mring_writer_close(w);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.alive, 0);
	cr_expect_eq(st.closed, 1);
	mring_reader_close(r);
	unlink(seg_path);

	snprintf(crashed, sizeof(crashed), "%s", seg_name("crashed"));
	pid = test_fork();
	if (pid == 0) {
		child_open_writer(crashed, 64, MRING_FULL_DROP);
		child_kill_self();
	}
	wait_child_signal(pid, SIGKILL, "opens a writer and kills itself");
	r = open_reader(crashed, MRING_OBSERVE);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.alive, 0);
	cr_expect_eq(st.closed, 0, "gone without closing: crashed");
	cr_expect_eq(st.pid, pid);
	mring_reader_close(r);
}

Test(status, rejects_null)
{
	const char *name = seg_name("snull");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	struct mring_status st;
	struct mring_stats ss;

	cr_expect_eq(mring_status_read(NULL, &st), -EINVAL);
	cr_expect_eq(mring_status_read(r, NULL), -EINVAL);
	cr_expect_eq(mring_stats_read(r, 0, &ss), -EINVAL, "no metric 0 yet");
	cr_expect_eq(mring_epoch_read(r, 0, &ss), -EINVAL);
	cr_expect_eq(mring_stats_read(NULL, 0, &ss), -EINVAL);
	mring_reader_close(r);
	mring_writer_close(w);
}
