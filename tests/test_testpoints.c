// SPDX-License-Identifier: MIT
/*
 * test_testpoints.c - a producer killed at every distinct point of its
 * protocol.  This program is built with the library's sources and
 * -DMRING_TESTPOINTS, which makes every store to shared memory a point
 * where __mring_testpoint() can SIGKILL the process.  A script of
 * registrations, steps, logs (some dropped on a tiny ring), an epoch end
 * and a close is run once to count the points, then once per point,
 * killed there; each time a fresh drainer must find every value whose
 * mring_log() returned 0, in order, none torn, none dropped, and the
 * losses and statistics must add up.
 */
#include <signal.h>
#include <stdatomic.h>

#include "helpers.h"

static uint64_t points, kill_at;	/* kill_at 0: count only */

void __mring_testpoint(void)
{
	if (++points == kill_at)
		raise(SIGKILL);
}

#define NSTEPS 6

struct shared {
	_Atomic int ret[NSTEPS][2];	/* mring_log() results; 1: not returned */
	_Atomic int epoch_ends;
	_Atomic uint64_t points;
};

static double val(int s, int m)
{
	return s * 10 + m + 1;
}

/* Runs in a forked child: CHILD_CHECK, never cr_assert (helpers.h). */
static void script(const char *name, struct shared *sh)
{
	struct mring_writer *w = child_open_writer(name, 8, MRING_FULL_DROP);
	int a, b;

	CHILD_CHECK(a = mring_metric(w, "a", MRING_ON_STEP));
	CHILD_CHECK(b = mring_metric(w, "b", MRING_ON_STEP | MRING_ON_EPOCH));

	for (int s = 0; s < NSTEPS; s++) {
		mring_step(w, (uint64_t)s);
		atomic_store(&sh->ret[s][0], mring_log(w, a, val(s, 0)));
		atomic_store(&sh->ret[s][1], mring_log(w, b, val(s, 1)));
		if (s == 2) {
			CHILD_CHECK(mring_epoch_end(w));
			atomic_store(&sh->epoch_ends, 1);
		}
	}
	CHILD_CHECK(mring_writer_close(w));
}

static pid_t run(const char *name, struct shared *sh, uint64_t at)
{
	pid_t pid;

	for (int s = 0; s < NSTEPS; s++)
		sh->ret[s][0] = sh->ret[s][1] = 1;
	sh->epoch_ends = 0;
	pid = test_fork();
	if (pid == 0) {
		points = 0;	/* the parent's own reads counted too */
		kill_at = at;
		script(name, sh);
		atomic_store(&sh->points, points);
		_exit(0);
	}
	return pid;
}

/* What a drainer finds after the producer died at point @k. */
static void check(const char *name, struct shared *sh, uint64_t k)
{
	struct mring_reader *r = NULL;
	struct mring_event ev[64];
	struct mring_status st;
	struct mring_stats ss;
	int n = 0, got, next = 0, in_flight = 0;
	uint64_t lost = 0, b_count = 0;

	got = mring_reader_open(name, MRING_DRAIN, &r);
	if (got == -EAGAIN) {
		/* killed before the header was published: nothing was logged */
		cr_assert_eq(sh->ret[0][0], 1, "point %llu", (unsigned long long)k);
		return;
	}
	cr_assert_eq(got, 0, "point %llu: %s", (unsigned long long)k, mring_strerror(got));
	while ((got = mring_read(r, ev + n, 64 - n)) > 0)
		n += got;
	cr_assert_geq(got, 0, "point %llu: %s", (unsigned long long)k, mring_strerror(got));
	for (int i = 0; i < n; i++) {
		if (ev[i].kind == MRING_EV_LOST)
			lost += (uint64_t)ev[i].value;
		if (ev[i].kind != MRING_EV_VALUE)
			continue;
		/* values come in logging order; find this one's (step, metric) */
		while (next < 2 * NSTEPS && sh->ret[next / 2][next % 2] == -ENOBUFS)
			next++;
		cr_assert_lt(next, 2 * NSTEPS, "point %llu: value %g", (unsigned long long)k,
			     ev[i].value);
		cr_assert_eq(ev[i].value, val(next / 2, next % 2), "point %llu: torn or "
			     "misplaced value %g", (unsigned long long)k, ev[i].value);
		cr_assert_eq(ev[i].step, (uint64_t)(next / 2), "point %llu", (unsigned long long)k);
		in_flight += sh->ret[next / 2][next % 2] != 0;	/* killed inside its log */
		next++;
	}
	cr_assert_leq(in_flight, 1, "point %llu", (unsigned long long)k);
	/* nothing that returned 0 is missing */
	for (int j = next; j < 2 * NSTEPS; j++)
		cr_assert_neq(sh->ret[j / 2][j % 2], 0, "point %llu: value of step %d metric %d "
			      "returned 0 but is not in the ring", (unsigned long long)k, j / 2, j % 2);
	CHECK_OK(mring_status_read(r, &st));
	cr_assert_eq(st.alive, 0);
	cr_assert_eq(lost, st.dropped, "point %llu: LOST events %llu, dropped %llu",
		     (unsigned long long)k, (unsigned long long)lost,
		     (unsigned long long)st.dropped);
	/* the latch is never half-written for a reader */
	if (mring_metric_count(r) == 2) {
		CHECK_OK(mring_stats_read(r, 1, &ss));
		cr_assert_eq(ss.weight, (double)ss.count, "point %llu", (unsigned long long)k);
		for (int s = 0; s < NSTEPS; s++)
			b_count += s > 2 && sh->ret[s][1] != 1;
		/* published once per step: b logs once per step, so the
		 * figures lag what returned by at most that one value */
		if (sh->epoch_ends) {
			cr_assert_leq(ss.count, b_count, "point %llu", (unsigned long long)k);
			cr_assert_leq(b_count, ss.count + 1, "point %llu", (unsigned long long)k);
		}
	}
	mring_reader_close(r);
}

Test(testpoints, a_producer_killed_at_every_point_loses_nothing_that_returned,
     .timeout = 300)
{
	struct shared *sh = test_shared_page(sizeof(*sh));
	const char *name = seg_name("points");
	uint64_t total, k;
	int status;
	pid_t pid;

	pid = run(name, sh, 0);
	wait_child_exit(pid, 0, "runs the script to the end");
	total = atomic_load(&sh->points);
	cr_assert_gt(total, 100, "the script passes %llu points", (unsigned long long)total);
	for (k = 1; k <= total; k++) {
		unlink(seg_path);
		pid = run(name, sh, k);
		status = wait_child(pid);
		cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			  "point %llu was not reached: the producer %s",
			  (unsigned long long)k, child_status(status));
		if (access(seg_path, F_OK) == 0)
			check(name, sh, k);
	}
	cr_log_info("killed at each of %llu points", (unsigned long long)total);
}
