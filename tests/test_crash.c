// SPDX-License-Identifier: MIT
/*
 * test_crash.c - processes killed at random instants: a producer loses
 * nothing whose mring_log() returned and never leaves a torn record; a
 * dead producer's unwritten drops are reported exactly once; a drainer
 * resumes exactly after what it had read.
 */
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "helpers.h"

struct shared {
	_Atomic uint64_t ready;
	_Atomic uint64_t returned;	/* producer: logs that returned 0 */
	_Atomic uint64_t dropped;
	_Atomic uint64_t start[64];	/* drainer k: first seq it got */
	_Atomic uint64_t end[64];	/* drainer k: seq after its last reported */
	_Atomic uint8_t seen[40000];
};

static struct shared *shared_page(void)
{
	return test_shared_page(sizeof(struct shared));
}

/*
 * The forked children here check with CHILD_CHECK and child_open_*(),
 * never cr_assert (helpers.h): a failed check must end the test, not
 * hang it.
 */
static void produce_until_killed(const char *name, struct shared *sh)
{
	struct mring_writer *w = child_open_writer(name, 1 << 17, MRING_FULL_DROP);
	int id;

	CHILD_CHECK(id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH));
	atomic_store(&sh->ready, 1);
	for (uint64_t i = 0; i < 60000; i++) {
		if (i % 4 == 0)
			mring_step(w, i / 4);
		if (mring_log(w, id, (double)i) == 0)
			atomic_store_explicit(&sh->returned, i + 1, memory_order_release);
	}
	for (;;)
		pause();
}

Test(crash, a_killed_producer_loses_nothing_that_returned, .timeout = 120)
{
	struct shared *sh = shared_page();

	for (int trial = 0; trial < 40; trial++) {
		char name[128];
		struct mring_event ev[512];
		struct mring_reader *r;
		struct mring_status st;
		struct mring_stats ss;
		uint64_t values = 0, returned;
		pid_t pid;
		int n;

		snprintf(name, sizeof(name), "%s", seg_name("prodkill"));
		atomic_store(&sh->ready, 0);
		atomic_store(&sh->returned, 0);
		pid = test_fork();
		if (pid == 0)
			produce_until_killed(name, sh);
		wait_child_flag(&sh->ready, pid, "produces until killed");
		sleep_us((long)(test_rnd() % 1500));
		kill(pid, SIGKILL);
		wait_child_signal(pid, SIGKILL, "produces until killed");
		returned = atomic_load(&sh->returned);

		r = open_reader(name, MRING_DRAIN);
		while ((n = mring_read(r, ev, 512)) > 0) {
			for (int i = 0; i < n; i++) {
				cr_assert_neq(ev[i].kind, MRING_EV_LOST, "trial %d", trial);
				if (ev[i].kind != MRING_EV_VALUE)
					continue;
				/* in order, none missing, none torn */
				cr_assert_eq(ev[i].value, (double)values, "trial %d", trial);
				cr_assert_eq(ev[i].step, values / 4, "trial %d", trial);
				values++;
			}
		}
		cr_assert_eq(n, 0, "trial %d: %s", trial, mring_strerror(n));
		cr_assert(values == returned || values == returned + 1,
			  "trial %d: read %llu, %llu returned", trial,
			  (unsigned long long)values, (unsigned long long)returned);
		CHECK_OK(mring_status_read(r, &st));
		cr_expect_eq(st.alive, 0);
		cr_expect_eq(st.closed, 0, "a crash, not a close");
		/* the latch is never left half-written for a reader, and it
		 * lags by at most the 4 values of the step that was open */
		CHECK_OK(mring_stats_read(r, 0, &ss));
		cr_expect(ss.count <= values && values <= ss.count + 4,
			  "trial %d: count %llu values %llu", trial,
			  (unsigned long long)ss.count, (unsigned long long)values);
		mring_reader_close(r);
		unlink(seg_path);
	}
}

Test(crash, a_dead_producers_pending_drops_are_reported_once)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("deaddrops");
	struct mring_reader *o, *d;
	struct mring_event ev[32];
	pid_t pid;
	int n;

	pid = test_fork();
	if (pid == 0) {
		struct mring_writer *w = child_open_writer(name, 8, MRING_FULL_DROP);
		uint64_t ok = 0, drop = 0;
		int id;

		CHILD_CHECK(id = mring_metric(w, "x", MRING_ON_STEP));
		for (int i = 0; i < 50; i++) {
			if (mring_log(w, id, (double)i) == 0)
				ok++;
			else
				drop++;
		}
		atomic_store(&sh->returned, ok);
		atomic_store(&sh->dropped, drop);
		child_kill_self();	/* dies with its drops unwritten */
	}
	wait_child_signal(pid, SIGKILL, "logs 50 values into 8 slots and kills itself");
	cr_assert_eq(atomic_load(&sh->returned), 7);

	o = open_reader(name, MRING_OBSERVE);
	n = read_all(o, ev, 32);
	cr_assert_eq(n, 8, "observer: 7 values and the loss");
	cr_expect_eq(ev[7].kind, MRING_EV_LOST);
	cr_expect_eq(ev[7].value, 43.0);
	cr_expect_eq(read_all(o, ev, 32), 0, "reported once");
	mring_reader_close(o);

	d = open_reader(name, MRING_DRAIN);
	n = read_all(d, ev, 32);
	cr_assert_eq(n, 8);
	cr_expect_eq(ev[7].kind, MRING_EV_LOST);
	cr_expect_eq(ev[7].seq, 7);
	cr_expect_eq(ev[7].value, (double)atomic_load(&sh->dropped));
	mring_reader_close(d);

	d = open_reader(name, MRING_DRAIN);
	cr_expect_eq(read_all(d, ev, 32), 0, "a restarted drainer does not count it again");
	mring_reader_close(d);
	o = open_reader(name, MRING_OBSERVE);
	n = read_all(o, ev, 32);
	cr_expect_eq(n, 8, "now it is a record in the ring");
	mring_reader_close(o);
}

/*
 * A drainer child reads batches of random size and reports each batch
 * after it returns; it is killed at a random instant.  The next drainer
 * must start exactly at the position the last one published: never a
 * record twice, and at most the one unreported batch in flight.
 */
static void drain_until_killed(const char *name, struct shared *sh, int k)
{
	struct mring_reader *r = child_open_reader(name, MRING_DRAIN);
	struct mring_event ev[50];
	bool first = true;
	int n;

	for (;;) {
		n = mring_read(r, ev, 1 + (int)(test_rnd() % 50));
		CHILD_CHECK(n);
		if (n == 0)
			_exit(0);	/* everything drained */
		if (first)
			atomic_store(&sh->start[k], ev[0].seq);
		first = false;
		for (int i = 0; i < n; i++)
			atomic_fetch_add(&sh->seen[ev[i].seq], 1);
		atomic_store(&sh->end[k], ev[n - 1].seq + 1);
		for (volatile int spin = 0; spin < 2000; spin++)
			;
	}
}

Test(crash, a_killed_drainer_is_resumed_exactly, .timeout = 120)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("drainkill");
	/* 2^17 slots: no CTX pair (due every half ring without steps), so
	 * the 40,000 values take seq 0..39999 and nothing else */
	struct mring_writer *w = open_writer(name, 1 << 17, MRING_FULL_DROP);
	int id = mring_metric(w, "x", MRING_ON_STEP);
	const uint64_t total = 40000;
	int k, status = 0;

	for (uint64_t i = 0; i < total; i++)
		cr_assert_eq(mring_log(w, id, (double)i), 0);
	mring_writer_close(w);
	{
		struct mring_reader *o = open_reader(name, MRING_OBSERVE);
		struct mring_status st;

		CHECK_OK(mring_status_read(o, &st));
		cr_assert_eq(st.written, total, "one slot per value");
		mring_reader_close(o);
	}

	for (k = 0; k < 64; k++) {
		pid_t pid;

		atomic_store(&sh->start[k], UINT64_MAX);
		atomic_store(&sh->end[k], 0);
		(void)test_rnd();		/* the child's batch sizes differ from its parent's */
		test_seed += (uint64_t)k * 7919;
		pid = test_fork();
		if (pid == 0)
			drain_until_killed(name, sh, k);
		sleep_us(200 + (long)(test_rnd() % 2000));
		kill(pid, SIGKILL);
		/* killed mid-drain, or it exited before the kill: done or failed */
		status = wait_child(pid);
		if (WIFEXITED(status))
			break;
		cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			  "drainer %d %s, expected our SIGKILL or an exit", k,
			  child_status(status));
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the last drainer finished cleanly (k=%d): it %s%s", k,
		  child_status(status), k == 64 ? "; none drained everything" : "");
	for (uint64_t s = 0; s < total; s++)
		cr_assert_leq(atomic_load(&sh->seen[s]), 1, "seq %llu read twice",
			      (unsigned long long)s);
	/*
	 * Walk the drainers in order: each one that got anything must start
	 * at or after where the last reporting one stopped, at most one
	 * batch later (the batch a killed drainer had in hand); those are
	 * the only records nobody reported.
	 */
	uint64_t prev_end = 0;

	for (int j = 0; j <= k + 1; j++) {
		uint64_t start = j <= k ? atomic_load(&sh->start[j]) : total;

		if (start == UINT64_MAX)
			continue;	/* killed before it got anything */
		cr_assert_geq(start, prev_end, "drainer %d: a record delivered twice", j);
		cr_assert_leq(start - prev_end, 50, "drainer %d: more than a batch lost", j);
		for (uint64_t s = prev_end; s < start; s++)
			atomic_fetch_add(&sh->seen[s], 2);
		if (j <= k && atomic_load(&sh->end[j]))
			prev_end = atomic_load(&sh->end[j]);
	}
	for (uint64_t s = 0; s < total; s++)
		cr_assert_neq(atomic_load(&sh->seen[s]), 0, "seq %llu never read",
			      (unsigned long long)s);
}

/*
 * A producer stopped (SIGSTOP) at random instants, possibly in the middle
 * of a statistics update: observers still get a consistent snapshot at
 * once (the latch's current copy is always complete) and never wait.
 */
Test(crash, a_stopped_producer_never_blocks_an_observer, .timeout = 120)
{
	struct shared *sh = shared_page();
	const char *name = seg_name("stopped");
	struct mring_reader *o;
	struct mring_event ev[64];
	struct mring_stats st;
	pid_t pid = test_fork();

	if (pid == 0) {
		struct mring_writer *w = child_open_writer(name, 1 << 10, MRING_FULL_OVERWRITE);
		int id;

		CHILD_CHECK(id = mring_metric(w, "loss", MRING_ON_STEP | MRING_ON_EPOCH));
		atomic_store(&sh->ready, 1);
		for (uint64_t i = 0;; i++) {
			mring_step(w, i);
			mring_log_weighted(w, id, 1.0, 2.0);
		}
	}
	wait_child_flag(&sh->ready, pid, "produces until stopped");
	o = open_reader(name, MRING_OBSERVE);
	for (int trial = 0; trial < 50; trial++) {
		int status;

		sleep_us((long)(test_rnd() % 3000));
		kill(pid, SIGSTOP);
		/* a producer that died instead would make the reads below trivial */
		cr_assert_eq(waitpid(pid, &status, WUNTRACED), pid, "waitpid: %s",
			     strerror(errno));
		cr_assert(WIFSTOPPED(status), "trial %d: the producer %s, expected "
			  "it stopped by SIGSTOP", trial, child_status(status));
		for (int k = 0; k < 1000; k++) {
			/* a stopped writer never moves seq: no retry can fail */
			cr_assert_eq(mring_stats_read(o, 0, &st), 0, "trial %d", trial);
			cr_assert_eq(st.weight, 2.0 * (double)st.count, "trial %d", trial);
			cr_assert_geq(mring_read(o, ev, 64), 0);
		}
		kill(pid, SIGCONT);
	}
	kill(pid, SIGKILL);
	wait_child_signal(pid, SIGKILL, "produces until killed");
	mring_reader_close(o);
}
