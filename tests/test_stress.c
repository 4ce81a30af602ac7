// SPDX-License-Identifier: MIT
/*
 * test_stress.c - producer and readers in different processes at full
 * speed: every sequence number and every value is checked, in every
 * full-ring mode, and statistics snapshots are never torn.
 */
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "helpers.h"

struct shared {
	_Atomic uint64_t ready;
	_Atomic uint64_t go;
	_Atomic uint64_t ok;
	_Atomic uint64_t dropped;
	_Atomic uint64_t bad;
};

static struct shared *shared_page(void)
{
	return test_shared_page(sizeof(struct shared));
}

/*
 * The producer, in its own process (a forked child cannot use its
 * parent's writer): record i is STEP(i) at position 2i, then VALUE i at
 * 2i + 1.  It waits for @go so readers can attach first.  It checks with
 * CHILD_CHECK, never cr_assert (helpers.h), and exits 0 only if all went
 * well.
 */
static pid_t spawn_producer(const char *name, uint64_t cap, int mode,
			    uint64_t steps, struct shared *sh)
{
	pid_t pid = test_fork();

	if (pid == 0) {
		struct mring_writer *w = child_open_writer(name, cap, mode);
		uint64_t ok = 0, dropped = 0;
		int id;

		CHILD_CHECK(id = mring_metric(w, "x", MRING_ON_STEP | MRING_ON_EPOCH));
		atomic_store(&sh->ready, 1);
		while (!atomic_load(&sh->go))
			sched_yield();
		for (uint64_t i = 0; i < steps; i++) {
			mring_step(w, i);
			if (mring_log(w, id, (double)i) == 0)
				ok++;
			else
				dropped++;
		}
		atomic_store(&sh->ok, ok);
		atomic_store(&sh->dropped, dropped);
		CHILD_CHECK(mring_writer_close(w));
		_exit(0);
	}
	wait_child_flag(&sh->ready, pid, "produces");
	return pid;
}

struct check {
	uint64_t next;		/* position expected next */
	bool ctx_may_follow;	/* DROP: a CTX pair may sit at next */
	uint64_t values, steps, lost;
	uint64_t last_value;	/* for DROP: values only ever increase */
	bool have_value;
};

enum { LOSSLESS, DROPS, OVERRUNS };

/* Every event must be exactly what the producer wrote at its position. */
static void check_events(struct check *c, const struct mring_event *ev, int n,
			 int mode)
{
	for (int i = 0; i < n; i++) {
		const struct mring_event *e = &ev[i];

		/* a CTX pair (two slots, no event) follows a LOST record
		 * when the next record is not a STEP */
		if (c->ctx_may_follow && e->seq == c->next + 2)
			c->next += 2;
		c->ctx_may_follow = false;
		cr_assert_eq(e->seq, c->next, "seq %llu, expected %llu",
			     (unsigned long long)e->seq, (unsigned long long)c->next);
		switch (e->kind) {
		case MRING_EV_LOST:
			cr_assert(mode != LOSSLESS, "LOST in a lossless mode");
			c->lost += (uint64_t)e->value;
			/* DROP: the producer's LOST record has a position of its
			 * own; overrun: the event stands for the lost positions */
			c->next = e->seq + (mode == DROPS ? 1 : (uint64_t)e->value);
			c->ctx_may_follow = mode == DROPS;
			continue;
		case MRING_EV_STEP:
			/* step i takes slots 3i and 3i + 1, its value 3i + 2 */
			if (mode != DROPS)
				cr_assert_eq(e->seq, 3 * e->step);
			c->steps++;
			c->next = e->seq + 2;
			continue;
		case MRING_EV_VALUE:
			cr_assert_eq(e->value, (double)e->step, "torn record at %llu",
				     (unsigned long long)e->seq);
			if (mode != DROPS)
				cr_assert_eq(e->seq, 3 * e->step + 2);
			if (c->have_value)
				cr_assert_gt(e->step, c->last_value);
			c->last_value = e->step;
			c->have_value = true;
			c->values++;
			break;
		default:
			cr_assert_fail("unexpected kind %u", e->kind);
		}
		c->next = e->seq + 1;
	}
}

/* Drain until the producer has exited and everything is read. */
static void drain_all(struct mring_reader *r, pid_t pid, struct check *c,
		      int mode, int slow_every)
{
	struct mring_event ev[256];
	int status, exited = 0, n, batches = 0;

	for (;;) {
		n = mring_read(r, ev, 256);
		cr_assert_geq(n, 0, "%s", mring_strerror(n));
		check_events(c, ev, n, mode);
		if (n > 0) {
			if (slow_every && ++batches % slow_every == 0)
				sleep_us(200);
			continue;
		}
		if (exited)
			break;
		exited = waitpid(pid, &status, WNOHANG) == pid;
		if (exited)
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
				  "the producer %s", child_status(status));
	}
}

Test(stress, wait_mode_is_lossless_with_a_drainer_in_another_process, .timeout = 300)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("wait");
	const uint64_t steps = 1500000;
	struct mring_reader *r;
	struct check c = { 0 };
	pid_t pid;

	pid = spawn_producer(name, 1024, MRING_FULL_WAIT, steps, sh);
	r = open_reader(name, MRING_DRAIN);
	atomic_store(&sh->go, 1);
	drain_all(r, pid, &c, LOSSLESS, 0);
	cr_expect_eq(atomic_load(&sh->dropped), 0);
	cr_expect_eq(c.values, steps);
	cr_expect_eq(c.steps, steps);
	cr_expect_eq(c.lost, 0);
	cr_expect_eq(c.next, 3 * steps, "a STEP takes two slots, its value one");
	mring_reader_close(r);
}

Test(stress, drop_mode_accounts_for_every_record_under_a_slow_drainer, .timeout = 300)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("drop");
	const uint64_t steps = 1000000;
	struct mring_reader *r;
	struct mring_status st;
	struct check c = { 0 };
	pid_t pid;

	pid = spawn_producer(name, 256, MRING_FULL_DROP, steps, sh);
	r = open_reader(name, MRING_DRAIN);
	atomic_store(&sh->go, 1);
	drain_all(r, pid, &c, DROPS, 8);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_gt(atomic_load(&sh->dropped), 0, "the drainer was slow enough to drop");
	cr_expect_eq(c.values, atomic_load(&sh->ok), "every value that returned 0 arrived");
	/* slots logged = read + dropped; a STEP takes two, a value one */
	cr_expect_eq(c.values + 2 * c.steps + c.lost, 3 * steps);
	cr_expect_eq(c.lost, st.dropped, "the LOST events add up to the status");
	cr_expect_eq(st.closed, 1);
	mring_reader_close(r);
}

Test(stress, overwrite_mode_never_hands_out_a_torn_record, .timeout = 300)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("overwrite");
	const uint64_t steps = 1500000;
	struct mring_reader *d, *o;
	struct mring_event ev[64];
	struct mring_status st;
	struct check cd = { 0 }, co = { 0 };
	int status, exited = 0, n, m;
	pid_t pid;

	pid = spawn_producer(name, 64, MRING_FULL_OVERWRITE, steps, sh);
	d = open_reader(name, MRING_DRAIN);
	o = open_reader(name, MRING_OBSERVE);
	atomic_store(&sh->go, 1);
	for (;;) {
		n = mring_read(d, ev, 64);
		cr_assert_geq(n, 0);
		check_events(&cd, ev, n, OVERRUNS);
		m = mring_read(o, ev, 16);
		cr_assert_geq(m, 0);
		if (m > 0 && co.next == 0)
			co.next = ev[0].seq;	/* observers start anywhere */
		check_events(&co, ev, m, OVERRUNS);
		if (n || m)
			continue;
		if (exited)
			break;
		exited = waitpid(pid, &status, WNOHANG) == pid;
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the producer %s", child_status(status));
	cr_expect_eq(cd.next, 3 * steps, "every position accounted for");
	cr_expect_eq(cd.values + 2 * cd.steps + cd.lost, 3 * steps);
	CHECK_OK(mring_status_read(d, &st));
	cr_expect_eq(cd.lost, st.overwritten);
	cr_expect_gt(cd.values, 0);
	mring_reader_close(o);
	mring_reader_close(d);
}

Test(stress, statistics_snapshots_are_never_torn, .timeout = 300)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("torn");
	struct mring_reader *r;
	struct mring_stats st;
	uint64_t reads = 0, snapshots = 0, changes = 0, last = 0;
	int id = 0;
	pid_t pid = test_fork();

	if (pid == 0) {
		struct mring_writer *w = child_open_writer(name, 64, MRING_FULL_DROP);

		CHILD_CHECK(id = mring_metric(w, "loss", MRING_ON_EPOCH));
		atomic_store(&sh->ready, 1);
		/* every update keeps weight == sum == 2 * count; a flush per
		 * log publishes as often as the library ever does */
		for (uint64_t i = 0; !atomic_load(&sh->go); i++) {
			CHILD_CHECK(mring_log_weighted(w, id, 1.0, 2.0));
			CHILD_CHECK(mring_flush(w));
			if (i % 1000000 == 999999)
				CHILD_CHECK(mring_epoch_end(w));
		}
		CHILD_CHECK(mring_writer_close(w));
		_exit(0);
	}
	wait_child_flag(&sh->ready, pid, "updates the statistics");
	r = open_reader(name, MRING_OBSERVE);
	/*
	 * 10^7 reads, then more until the producer has moved the snapshot
	 * 2000 times (on a loaded machine it may get little CPU), until a
	 * minute has passed.  This build gives up a read after 4 attempts
	 * (MRING_LATCH_TRIES, tests/CMakeLists.txt): where most attempts
	 * collide with an update (the CI machine, 2026-11-27), 10,000 each
	 * made it run past its 300 s timeout.
	 */
	int64_t deadline = now_ns() + 60 * INT64_C(1000000000);

	for (reads = 0; reads < 10000000 ||
		       (changes < 2000 && (reads % 4096 || now_ns() < deadline)); reads++) {
		int ret = mring_stats_read(r, id, &st);

		if (ret == -EAGAIN)
			continue;	/* bounded retries ran out: allowed, not torn */
		cr_assert_eq(ret, 0);
		cr_assert_eq(st.weight, 2.0 * (double)st.count, "torn at read %llu",
			     (unsigned long long)reads);
		cr_assert_eq(st.sum, 2.0 * (double)st.count);
		if (st.count) {
			cr_assert_eq(st.min, 1.0);
			cr_assert_eq(st.value, 1.0);
		} else {
			cr_assert(isnan(st.min) && isnan(st.value));
		}
		snapshots++;
		changes += st.count != last;
		last = st.count;
	}
	cr_log_info("%llu reads: %llu snapshots, %llu changes seen",
		    (unsigned long long)reads, (unsigned long long)snapshots,
		    (unsigned long long)changes);
	atomic_store(&sh->go, 1);
	wait_child_exit(pid, 0, "updates the statistics");
	cr_expect_geq(changes, 2000, "the reader really raced the producer");
	mring_reader_close(r);
}
