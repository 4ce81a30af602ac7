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
		cr_expect_eq(ev[i].seq, (uint64_t)i + 1, "a STEP takes slots 0 and 1");
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

Test(ring, a_step_at_a_given_time_carries_that_time)
{
	const char *name = seg_name("stepat");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int a = mring_metric(w, "a", MRING_ON_STEP);
	struct mring_event ev[16];
	struct mring_status st;
	int64_t past = now_ns() - 5000000000ll;		/* 5 s ago */
	int n;

	CHECK_OK(mring_step_at(w, 3, past));
	mring_log(w, a, 1.5);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.step_wall_ns, past, "monitors see the step's own time");
	cr_expect_eq(st.step, 3);
	CHECK_OK(mring_step_at(w, 4, past + 1000));
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 3);
	cr_expect_eq(ev[0].kind, MRING_EV_STEP);
	cr_expect_eq(ev[0].wall_ns, past);
	cr_expect_eq(ev[1].wall_ns, past, "a value carries its step's time");
	cr_expect_eq(ev[1].value, 1.5);
	cr_expect_eq(ev[2].step, 4);
	cr_expect_eq(ev[2].wall_ns, past + 1000);
	/* lower: a rewind, as with mring_step() */
	CHECK_OK(mring_step_at(w, 1, past + 2000));
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 1);
	cr_expect_eq(ev[0].kind, MRING_EV_REWIND);
	cr_expect_eq(ev[0].step, 1);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, values_a_binding_dropped_are_reported_where_they_were_lost)
{
	const char *name = seg_name("bdrop");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int a = mring_metric(w, "a", MRING_ON_STEP);
	struct mring_event ev[16];
	struct mring_status st;
	int n;

	mring_log(w, a, 1.0);
	CHECK_OK(__mring_drop(w, 3));
	cr_expect_eq(__mring_drop(w, 0), -EINVAL);
	mring_log(w, a, 2.0);
	n = read_all(r, ev, 16);
	cr_assert_eq(n, 3);
	cr_expect_eq(ev[0].value, 1.0);
	cr_expect_eq(ev[1].kind, MRING_EV_LOST);
	cr_expect_eq(ev[1].value, 3.0);
	cr_expect_eq(ev[2].value, 2.0);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.dropped, 3);
	mring_reader_close(r);
	mring_writer_close(w);

	name = seg_name("bdrop-ow");
	w = open_writer(name, 64, MRING_FULL_OVERWRITE);
	cr_expect_eq(__mring_drop(w, 1), -EINVAL, "DROP mode only");
	mring_writer_close(w);
}

Test(ring, small_reads_and_many_laps_keep_every_record_in_order)
{
	const char *name = seg_name("laps");
	struct mring_writer *w = open_writer(name, 16, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[3];
	uint64_t next = 0, seq = 0;

	/* no steps: the producer writes a context pair every half ring,
	 * the only gaps in seq (the drainer never needs them) */
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 10; i++)
			cr_assert_eq(mring_log(w, id, (double)(round * 10 + i)), 0);
		for (int got = 0; got < 10;) {
			int n = mring_read(r, ev, 3);

			cr_assert_gt(n, 0);
			for (int k = 0; k < n; k++, got++, next++) {
				cr_assert(ev[k].seq == seq || ev[k].seq == seq + 2,
					  "seq %llu after %llu", (unsigned long long)ev[k].seq,
					  (unsigned long long)seq);
				seq = ev[k].seq + 1;
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

	/* room again: the loss goes in first, where it happened, then the
	 * context pair (slots 8 and 9), then the value */
	cr_assert_eq(mring_log(w, id, 100.0), 0);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 2);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].value, 13.0);
	cr_expect_eq(ev[0].seq, 7);
	cr_expect_eq(ev[1].value, 100.0);
	cr_expect_eq(ev[1].seq, 10);

	/* losses pending at close are written at close (the reserved slot) */
	ok = 0;
	for (int i = 0; i < 20; i++)
		ok += mring_log(w, id, 200.0 + i) == 0;
	mring_writer_close(w);
	n = read_all(r, ev, 64);
	cr_assert_eq(n, ok + 1);
	for (int i = 0; i < ok; i++)
		cr_expect_eq(ev[i].value, 200.0 + i);
	cr_expect_eq(ev[ok].kind, MRING_EV_LOST);
	cr_expect_eq(ev[ok].value, 20.0 - ok);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.dropped, 13 + 20 - (uint64_t)ok);
	cr_expect_eq(st.written, ev[ok].seq + 1);
	cr_expect_eq(st.read, st.written);
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
	cr_expect_eq(ev[0].value, 3.0, "the STEP's two slots and the EPOCH_END");
	cr_expect_eq(ev[1].step, 42);
	cr_expect_eq(ev[1].epoch, 1);
	cr_expect_gt(ev[1].wall_ns, 0);
	mring_reader_close(r);
	mring_writer_close(w);
}

/* Log @n steps of one value each: step i takes slots 3i, 3i+1; its value 3i+2. */
static void steps_of_one(struct mring_writer *w, int id, int from, int n)
{
	for (int i = from; i < from + n; i++) {
		cr_assert_eq(mring_step(w, (uint64_t)i), 0, "overwrite never drops");
		cr_assert_eq(mring_log(w, id, (double)i), 0);
	}
}

/* The events after a gap that starts mid-step @s - 1: steps @s and @s + 1. */
static void expect_two_steps(const struct mring_event *ev, int s)
{
	for (int k = 0; k < 2; k++) {
		const struct mring_event *st = &ev[2 * k], *v = st + 1;

		cr_expect_eq(st->kind, MRING_EV_STEP);
		cr_expect_eq(st->seq, (uint64_t)(3 * (s + k)));
		cr_expect_eq(st->step, (uint64_t)(s + k));
		cr_expect_eq(v->kind, MRING_EV_VALUE);
		cr_expect_eq(v->seq, (uint64_t)(3 * (s + k) + 2));
		cr_expect_eq(v->value, (double)(s + k));
		cr_expect_eq(v->step, (uint64_t)(s + k));
		cr_expect_eq(v->wall_ns, st->wall_ns);
	}
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

	steps_of_one(w, id, 0, 40);			/* 120 slots */
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.written, 120);
	cr_expect_eq(st.overwritten, 112);
	/*
	 * The ring holds slots 112..119: the WALL half of step 37 (112),
	 * its value (113), steps 38 and 39.  The first two cannot be read
	 * without their STEP, so the gap runs to 114.
	 */
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 5);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].flags, MRING_EVF_OVERRUN);
	cr_expect_eq(ev[0].seq, 0);
	cr_expect_eq(ev[0].value, 114.0);
	expect_two_steps(&ev[1], 38);
	/* a second lap: the total still adds up */
	steps_of_one(w, id, 40, 10);			/* slots 120..149 */
	n = read_all(r, ev, 64);
	cr_assert_eq(n, 5);
	cr_expect_eq(ev[0].seq, 120);
	cr_expect_eq(ev[0].value, 24.0, "to 142 overrun, 142 and 143 without context");
	expect_two_steps(&ev[1], 48);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.overwritten, 114 + 24);
	cr_expect_eq(st.read, 150);
	mring_reader_close(r);
	mring_writer_close(w);
}

/*
 * A producer that never steps: its CTX pairs (at least every half ring)
 * let a lapped reader attribute values again.  Every slot is delivered,
 * reported lost, or one of those pairs; the values are the newest.
 */
Test(ring, overwrite_mode_without_steps_still_delivers_the_newest_values)
{
	const char *name = seg_name("owsteps");
	struct mring_writer *w = open_writer(name, 8, MRING_FULL_OVERWRITE);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[64];
	struct mring_status st;
	uint64_t end = 0, values = 0;
	int n;

	for (int i = 0; i < 100; i++)
		cr_assert_eq(mring_log(w, id, (double)i), 0);
	CHECK_OK(mring_status_read(r, &st));
	n = read_all(r, ev, 64);
	cr_assert_gt(n, 1);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].seq, 0);
	for (int i = 0; i < n; i++) {
		uint64_t gap = ev[i].seq - end;

		cr_assert(ev[i].seq >= end && (gap == 0 || gap == 2), "event %d: seq %llu "
			  "after %llu", i, (unsigned long long)ev[i].seq, (unsigned long long)end);
		if (ev[i].kind == MRING_EV_LOST) {
			cr_expect_eq(ev[i].flags, MRING_EVF_OVERRUN);
			end = ev[i].seq + (uint64_t)ev[i].value;
			continue;
		}
		cr_assert_eq(ev[i].kind, MRING_EV_VALUE);
		values++;
		end = ev[i].seq + 1;
	}
	cr_expect_eq(end, st.written, "every slot accounted for");
	for (uint64_t k = 0; k < values; k++)
		cr_expect_eq(ev[n - (int)values + (int)k].value, (double)(100 - values + k),
			     "the newest values, in order");
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

/*
 * A value record carries no step, epoch or time: the drain position
 * keeps the context, so a drainer that resumes after the STEP (taken by
 * an earlier drainer, one killed too) still attributes every value.
 */
Test(ring, a_resumed_drainer_knows_the_step_epoch_and_time_where_it_resumes)
{
	const char *name = seg_name("resumectx");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	struct mring_event ev[16];
	int64_t wall;
	pid_t pid;

	CHECK_OK(mring_step(w, 5));
	CHECK_OK(mring_log(w, id, 1.0));
	CHECK_OK(mring_log(w, id, 2.0));
	CHECK_OK(mring_epoch_end(w));
	CHECK_OK(mring_log(w, id, 3.0));
	cr_assert_eq(mring_read(r, ev, 2), 2);
	cr_assert_eq(ev[0].kind, MRING_EV_STEP);
	wall = ev[0].wall_ns;
	cr_assert_gt(wall, 0);
	mring_reader_close(r);

	pid = test_fork();
	if (pid == 0) {
		struct mring_reader *cr = child_open_reader(name, MRING_DRAIN);
		struct mring_event e[1];

		CHILD_ASSERT(mring_read(cr, e, 1) == 1);
		CHILD_ASSERT(e[0].value == 2.0 && e[0].step == 5 && e[0].wall_ns == wall);
		child_kill_self();
	}
	wait_child_signal(pid, SIGKILL, "reads the value 2.0 and kills itself");
	r = open_reader(name, MRING_DRAIN);
	cr_assert_eq(read_all(r, ev, 16), 2);
	cr_expect_eq(ev[0].kind, MRING_EV_EPOCH_END);
	cr_expect_eq(ev[0].epoch, 0);
	cr_expect_eq(ev[0].step, 5);
	cr_expect_eq(ev[1].value, 3.0);
	cr_expect_eq(ev[1].step, 5);
	cr_expect_eq(ev[1].epoch, 1, "after the EPOCH_END");
	cr_expect_eq(ev[1].wall_ns, wall);
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

	steps_of_one(w, id, 0, 50);			/* 150 slots */
	o = open_reader(name, MRING_OBSERVE);
	/* the oldest slot is 142, the WALL half of step 47: its value (143)
	 * has no context for this reader; it starts at step 48, silently */
	n = read_all(o, ev, 16);
	cr_assert_eq(n, 4);
	expect_two_steps(ev, 48);
	/* then lapped: the observer reports what it missed */
	steps_of_one(w, id, 50, 20);			/* slots 150..209 */
	n = read_all(o, ev, 16);
	cr_assert_eq(n, 5);
	cr_expect_eq(ev[0].kind, MRING_EV_LOST);
	cr_expect_eq(ev[0].seq, 150);
	cr_expect_eq(ev[0].value, 54.0, "to 202 overrun, 202 and 203 without context");
	expect_two_steps(&ev[1], 68);
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

/*
 * A run that resumes from a checkpoint: a step lower than the last is a
 * REWIND event (two slots, like a STEP), the values after it carry the
 * new step, and mring_rewind() says the same in a new segment.
 */
Test(ring, a_lower_step_is_a_rewind)
{
	const char *name = seg_name("rewind");
	struct mring_writer *w = open_writer(name, 256, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_DRAIN);
	struct mring_event ev[64];
	int id = mring_metric(w, "loss", MRING_ON_STEP);
	int n, k = 0;

	for (uint64_t s = 0; s < 5; s++) {
		CHECK_OK(mring_step(w, s));
		CHECK_OK(mring_log(w, id, (double)s));
	}
	CHECK_OK(mring_step(w, 3));		/* back to 3: a rewind */
	CHECK_OK(mring_log(w, id, 30.0));
	CHECK_OK(mring_step(w, 3));		/* the same step again: a STEP */
	CHECK_OK(mring_step(w, 4));
	CHECK_OK(mring_log(w, id, 40.0));
	cr_expect_eq(mring_writer_step(w), 4);
	n = mring_read(r, ev, 64);
	cr_assert_eq(n, 15, "10 events of steps 0..4, REWIND, value, STEP, STEP, value");
	for (uint64_t s = 0; s < 5; s++, k += 2) {
		cr_expect_eq(ev[k].kind, MRING_EV_STEP);
		cr_expect_eq(ev[k].seq, 3 * s);
		cr_expect_eq(ev[k + 1].kind, MRING_EV_VALUE);
		cr_expect_eq(ev[k + 1].step, s);
	}
	cr_expect_eq(ev[10].kind, MRING_EV_REWIND);
	cr_expect_eq(ev[10].step, 3);
	cr_expect_eq(ev[10].metric, -1);
	cr_expect_eq(ev[10].seq, 15);
	cr_expect_eq(ev[11].kind, MRING_EV_VALUE);
	cr_expect_eq(ev[11].seq, 17, "a REWIND takes two slots");
	cr_expect_eq(ev[11].step, 3);
	cr_expect_eq(ev[11].value, 30.0);
	cr_expect_eq(ev[12].kind, MRING_EV_STEP);
	cr_expect_eq(ev[12].step, 3);
	cr_expect_eq(ev[13].kind, MRING_EV_STEP);
	cr_expect_eq(ev[14].step, 4);
	cr_expect_eq(ev[14].value, 40.0);
	mring_reader_close(r);
	mring_writer_close(w);
}

Test(ring, a_run_resumed_in_a_new_segment_says_where)
{
	const char *name = seg_name("resume");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r = open_reader(name, MRING_OBSERVE);
	struct mring_event ev[8];
	struct mring_status st;
	int id = mring_metric(w, "loss", MRING_ON_STEP);

	CHECK_OK(mring_rewind(w, 200));	/* higher than 0: still a rewind */
	CHECK_OK(mring_log(w, id, 1.5));
	cr_assert_eq(mring_read(r, ev, 8), 2);
	cr_expect_eq(ev[0].kind, MRING_EV_REWIND);
	cr_expect_eq(ev[0].step, 200);
	cr_expect_eq(ev[1].step, 200);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.step, 200);
	cr_expect_eq(mring_rewind(NULL, 1), -EINVAL);
	mring_reader_close(r);
	mring_writer_close(w);
}
