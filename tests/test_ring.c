// SPDX-License-Identifier: MIT
/*
 * test_ring.c - the read path: order, sequence numbers, record fields,
 * DROP / OVERWRITE / WAIT on a full ring, LOST events at the point of
 * loss, drainer exclusivity and resumption, observers.
 */
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>

#include "helpers.h"

Test(ring, events_carry_seq_kind_metric_step_epoch_and_time)
{
	const char *name = seg_name("fields");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int a = mring_metric(w, "a", MRING_ON_STEP);
	int b = mring_metric(w, "b", MRING_ON_STEP);
	struct mring_event ev[16];
	int64_t t0, t1;
	int n;

	cr_expect_eq(mring_read(r, ev, 16), 0, "empty ring");
	t0 = now_ns();
	mring_step(w, 7);
	t1 = now_ns();
	mring_log(w, a, 0.5);
	mring_log(w, b, -2.0);
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 3);
	cr_expect_eq(ev[0].kind, MRING_EV_STEP);
	cr_expect_eq(ev[0].step, 7);
	cr_expect_eq(ev[0].metric, -1);
	cr_expect(ev[0].wall_ns >= t0 && ev[0].wall_ns <= t1, "wall time of the step");
	for (int i = 1; i < 3; i++) {
		cr_expect_eq(ev[i].kind, MRING_EV_VALUE);
		cr_expect_eq(ev[i].seq, (uint64_t)i);
		cr_expect_eq(ev[i].step, 7);
		cr_expect_eq(ev[i].epoch, 0);
		cr_expect_eq(ev[i].wall_ns, ev[0].wall_ns);
	}
	cr_expect_eq(ev[1].metric, a);
	cr_expect_eq(ev[1].value, 0.5);
	cr_expect_eq(ev[2].metric, b);
	cr_expect_eq(ev[2].value, -2.0);
	cr_expect_eq(mring_read(r, ev, 0), 0);
	cr_expect_eq(mring_read(r, NULL, 4), -EINVAL);
	cr_expect_eq(mring_read(r, ev, -1), -EINVAL);
	cr_expect_eq(mring_read(NULL, ev, 4), -EINVAL);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, small_reads_and_many_laps_keep_every_record_in_order)
{
	const char *name = seg_name("laps");
	struct mring_writer *w = open_writer(name, 16, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[3];
	uint64_t next = 0;

	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 10; i++)
			cr_assert_eq(mring_log(w, id, (double)(round * 10 + i)), 0);
		for (int got = 0; got < 10;) {
			int n = mring_read(r, ev, 3);

			cr_assert_gt(n, 0);
			for (int k = 0; k < n; k++, got++, next++) {
				cr_assert_eq(ev[k].seq, next);
				cr_assert_eq(ev[k].value, (double)next);
			}
		}
	}
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, drop_mode_reports_losses_in_the_stream)
{
	const char *name = seg_name("drop");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[64];
	struct mring_status st;
	int ok = 0, n;

	for (int i = 0; i < 20; i++)
		ok += mring_log(w, id, (double)i) == 0;
	cr_expect_eq(ok, 7, "capacity 8 keeps one slot for the LOST record");
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 7);
	for (int i = 0; i < 7; i++)
		cr_expect_eq(ev[i].value, (double)i);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.dropped, 13);

	/* room again: the loss goes in first, where it happened */
	cr_assert_eq(mring_log(w, id, 100.0), 0);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 2);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].value, 13.0);
	cr_expect_eq(ev[0].seq, 7);
	cr_expect_eq(ev[1].value, 100.0);
	cr_expect_eq(ev[1].seq, 8);

	/* losses pending at close are written at close (the reserved slot) */
	for (int i = 0; i < 20; i++)
		mring_log(w, id, 200.0 + i);
	mring_writer_close(w);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 8);
	cr_expect_eq(ev[7].kind, MRING_EV_LOST);
	cr_expect_eq(ev[7].value, 13.0);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.dropped, 26);
	cr_expect_eq(st.written, 17);
	cr_expect_eq(st.read, 17);
	mring_reader_close(r);
}

Test(ring, a_dropped_step_record_does_not_lose_the_step_of_later_values)
{
	const char *name = seg_name("dropstep");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[64];
	int n;

	for (int i = 0; i < 7; i++)
		mring_log(w, id, 0.0);
	mring_step(w, 42);		/* dropped */
	mring_epoch_end(w);		/* EPOCH_END dropped, epoch becomes 1 */
	read_all(r, ev, 64);
	cr_assert_eq(mring_log(w, id, 5.0), 0);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 2);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].value, 2.0);
	cr_expect_eq(ev[1].step, 42);
	cr_expect_eq(ev[1].epoch, 1);
	cr_expect_gt(ev[1].wall_ns, 0);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, overwrite_mode_gives_exact_lost_counts_and_the_newest_records)
{
	const char *name = seg_name("overwrite");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_OVERWRITE);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[64];
	struct mring_status st;
	int n;

	for (int i = 0; i < 100; i++)
		cr_assert_eq(mring_log(w, id, (double)i), 0, "overwrite never drops");
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.overwritten, 92);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 9);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].seq, 0);
	cr_expect_eq(ev[0].value, 92.0);
	for (int i = 1; i < 9; i++) {
		cr_expect_eq(ev[i].seq, (uint64_t)(91 + i));
		cr_expect_eq(ev[i].value, (double)(91 + i));
	}
	/* a second lap: the total still adds up */
	for (int i = 100; i < 130; i++)
		mring_log(w, id, (double)i);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 9);
	cr_expect_eq(ev[0].value, 22.0);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.overwritten, 92 + 22);
	cr_expect_eq(st.read, 130);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, wait_mode_without_a_drainer_drops_instead_of_hanging)
{
	struct mring_writer *w = open_writer(seg_name("waitnone"), 8, MRING_FULL_WAIT);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	int dropped = 0;

	for (int i = 0; i < 20; i++)
		dropped += mring_log(w, id, 1.0) == -ENOBUFS;
	cr_expect_eq(dropped, 13);
	mring_writer_close(w);
}

/*
 * The drainer must really have been attached when it died: its header
 * flag outlives it and only its lock tells the producer it is gone.  A
 * child that never attached would make this the test above again.  The
 * timeout turns a producer waiting for the dead drainer into a failure.
 */
Test(ring, wait_mode_with_a_dead_drainer_drops_instead_of_hanging, .timeout = 30)
{
	struct {
		_Atomic uint64_t attached;	/* the child holds the drainer */
		_Atomic uint64_t die;		/* the parent has seen it */
	} *sh = test_shared_page(sizeof(*sh));
	const char *name = seg_name("waitdead");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_WAIT);
	struct mring_reader *o = open_reader(name, MRING_OBSERVE);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_status st;
	int dropped = 0;
	pid_t pid = test_fork();

	if (pid == 0) {
		child_open_reader(name, MRING_DRAIN);
		atomic_store(&sh->attached, 1);
		while (!atomic_load(&sh->die))
			sched_yield();
		child_kill_self();	/* dies attached */
	}
	wait_child_flag(&sh->attached, pid, "opens the drainer");
	CHECK_OK(mring_status_read(o, &st));
	cr_assert_eq(st.drainer, 1, "the child is attached as the drainer");
	atomic_store(&sh->die, 1);
	wait_child_signal(pid, SIGKILL, "drains and kills itself");
	CHECK_OK(mring_status_read(o, &st));
	cr_assert_eq(st.drainer, 0, "the dead drainer's lock went with it");
	cr_assert_eq(_mring_load_relaxed(&w->hdr->drainer), 1,
		     "the header still says a drainer is attached");
	for (int i = 0; i < 20; i++)
		dropped += mring_log(w, id, 1.0) == -ENOBUFS;
	cr_expect_eq(dropped, 13);
	mring_reader_close(o);
	mring_writer_close(w);
}

Test(ring, one_drainer_at_a_time_and_it_resumes_exactly)
{
	const char *name = seg_name("resume");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN), *r2 = NULL;
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[16];
	pid_t pid;

	cr_expect_eq(mring_reader_open(name, MRING_DRAIN, &r2), -EBUSY,
		     "a second drainer, even in this process");
	cr_expect_null(r2);
	for (int i = 0; i < 10; i++)
		mring_log(w, id, (double)i);
	cr_assert_eq(mring_read(r, ev, 4), 4);
	mring_reader_close(r);

	/* a drainer killed without closing: its position still holds */
	pid = test_fork();
	if (pid == 0) {
		struct mring_reader *cr = child_open_reader(name, MRING_DRAIN);
		struct mring_event e[3];

		CHILD_ASSERT(mring_read(cr, e, 3) == 3);
		CHILD_ASSERT(e[0].seq == 4);
		child_kill_self();
	}
	wait_child_signal(pid, SIGKILL, "reads 3 events from seq 4 and kills itself");
	r = open_reader(name, MRING_DRAIN);
	cr_assert_eq(read_all(r, ev, 16), 3);
	cr_expect_eq(ev[0].seq, 7);
	cr_expect_eq(ev[0].value, 7.0);
	cr_expect_eq(ev[2].seq, 9);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, observers_never_move_the_drain_position)
{
	const char *name = seg_name("observe");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *o1 = open_reader(name, MRING_OBSERVE);
	struct mring_reader *o2 = open_reader(name, MRING_OBSERVE);
	struct mring_reader *d;
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[16];
	struct mring_status st;

	for (int i = 0; i < 5; i++)
		mring_log(w, id, (double)i);
	cr_expect_eq(read_all(o1, ev, 16), 5);
	cr_expect_eq(read_all(o2, ev, 16), 5);
	CHECK_OK(mring_status_read(o1, &st));
	cr_expect_eq(st.read, 0);
	cr_expect_eq(st.written, 5);
	d = open_reader(name, MRING_DRAIN);
	cr_expect_eq(read_all(d, ev, 16), 5, "the drainer still gets everything");
	mring_reader_close(d);
	mring_reader_close(o1);
	mring_reader_close(o2);
	mring_writer_close(w);
}

Test(ring, an_observer_starts_at_the_oldest_record_still_in_the_ring)
{
	const char *name = seg_name("oldest");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_OVERWRITE);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_reader *o;
	struct mring_event ev[16];
	int n;

	for (int i = 0; i < 50; i++)
		mring_log(w, id, (double)i);
	o = open_reader(name, MRING_OBSERVE);
	n = read_all(o, ev, 16);
	cr_assert_eq(n, 8);
	cr_expect_eq(ev[0].kind, MRING_EV_VALUE, "no LOST for what came before it");
	cr_expect_eq(ev[0].seq, 42);
	/* then lapped: the observer reports what it missed */
	for (int i = 50; i < 70; i++)
		mring_log(w, id, (double)i);
	n = read_all(o, ev, 16);
	cr_assert_eq(n, 9);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].value, 12.0);
	cr_expect_eq(ev[1].seq, 62);
	mring_reader_close(o);
	mring_writer_close(w);
}

Test(ring, reader_open_checks_its_arguments)
{
	const char *name = seg_name("ropen");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_DROP);
	struct mring_reader *r = NULL;

	cr_expect_eq(mring_reader_open(name, 0, &r), -EINVAL);
	cr_expect_eq(mring_reader_open(name, MRING_DRAIN | MRING_OBSERVE, &r), -EINVAL);
	cr_expect_eq(mring_reader_open(name, MRING_DRAIN, NULL), -EINVAL);
	cr_expect_eq(mring_reader_open("mring-test-no-such-segment", MRING_OBSERVE, &r),
		     -ENOENT);
	cr_expect_null(r);
	mring_reader_close(NULL);
	mring_writer_close(w);
}

Test(ring, no_autocommit_redelivers_until_committed)
{
	const char *name = seg_name("commit");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_DROP);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[16];
	struct mring_reader *r;
	struct mring_status st;

	for (int i = 0; i < 7; i++)
		cr_assert_eq(mring_log(w, id, (double)i), 0);
	r = open_reader(name, MRING_DRAIN | MRING_NO_AUTOCOMMIT);
	cr_assert_eq(read_all(r, ev, 16), 7);
	cr_expect_eq(mring_log(w, id, 7.0), -ENOBUFS, "nothing committed: no room");
	mring_reader_close(r);

	r = open_reader(name, MRING_DRAIN | MRING_NO_AUTOCOMMIT);
	cr_assert_eq(mring_read(r, ev, 3), 3);
	cr_expect_eq(ev[0].seq, 0, "uncommitted events come again, same seq");
	CHECK_OK(mring_commit(r));
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.read, 3);
	cr_assert_eq(mring_read(r, ev, 2), 2);
	mring_reader_close(r);		/* seq 3 and 4 were not committed */

	r = open_reader(name, MRING_DRAIN);
	cr_assert_eq(mring_read(r, ev, 1), 1);
	cr_expect_eq(ev[0].seq, 3);
	cr_expect_eq(mring_commit(r), 0, "harmless with autocommit");
	mring_reader_close(r);

	r = open_reader(name, MRING_OBSERVE);
	cr_expect_eq(mring_commit(r), -EINVAL, "observers never commit");
	mring_reader_close(r);
	cr_expect_eq(mring_commit(NULL), -EINVAL);
	cr_expect_eq(mring_reader_open(name, MRING_OBSERVE | MRING_NO_AUTOCOMMIT, &r), -EINVAL);
	mring_writer_close(w);
}
