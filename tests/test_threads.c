// SPDX-License-Identifier: MIT
/*
 * test_threads.c - the producer, a drainer and an observer as threads of
 * one process, on one mapping of the segment.
 *
 * Everywhere else the producer and its readers are separate processes,
 * which ThreadSanitizer cannot follow: it tracks memory by address, and
 * two mappings of one file are unrelated addresses to it.  Here the
 * library is compiled in with MRING_ONE_MAPPING (src/lib.h) and the
 * readers get the producer's own mapping, so in the -DMRING_SANITIZE=thread
 * build TSan checks that every read of shared memory is ordered after
 * the write it reads (each acquire load pairs with a release store); in
 * the other builds the same checks run at full speed.
 *
 * Every event is checked against the producer's schedule, position by
 * position (LOST events skip exactly the positions they stand for), and
 * every statistics snapshot against the values it must have summed.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "helpers.h"

/* ---- readers get the producer's mapping --------------------------------- */

static struct {
	void *map;
	size_t size;
	dev_t dev;
	ino_t ino;
	atomic_int given;		/* how many times a reader got it */
} producer_map;

void *__mring_test_map(size_t len, int prot, int fd)
{
	struct stat st;

	if (producer_map.map && fstat(fd, &st) == 0 &&
	    st.st_dev == producer_map.dev && st.st_ino == producer_map.ino &&
	    len <= producer_map.size) {
		atomic_fetch_add(&producer_map.given, 1);
		return producer_map.map;
	}
	return mmap(NULL, len, prot, MAP_SHARED, fd, 0);
}

void __mring_test_unmap(void *map, size_t len)
{
	if (map != producer_map.map)
		munmap(map, len);
}

static void share_producer_map(struct mring_writer *w)
{
	struct stat st;

	cr_assert_eq(stat(seg_path, &st), 0);
	producer_map.dev = st.st_dev;
	producer_map.ino = st.st_ino;
	producer_map.size = w->map_size;
	producer_map.map = w->map;
}

/* ---- the producer's schedule -------------------------------------------- */

/*
 * Step i writes STEP(i) (two slots), VALUE x = i, from step late_step on VALUE late = i
 * ("late" is registered mid-run), and at the end of every epoch of
 * EPOCH_STEPS steps EPOCH_VALUE x = max = i and EPOCH_END.
 */
#define EPOCH_STEPS 1000

struct schedule {
	uint64_t steps, late_step;
};

struct cursor {
	const struct schedule *s;
	uint64_t seq, step;
	uint64_t lost_end;		/* end of the last LOST range: it may end
					 * inside a STEP's two slots */
	int part;			/* which record of the step comes next */
	bool started;
};

/* The event the producer wrote at c->seq; false past the end. */
static bool cursor_next(struct cursor *c, struct mring_event *e)
{
	const struct schedule *s = c->s;

	for (;;) {
		bool epoch_end = c->step % EPOCH_STEPS == EPOCH_STEPS - 1;
		int part = c->part++;

		if (c->step >= s->steps)
			return false;
		memset(e, 0, sizeof(*e));
		e->seq = c->seq;
		e->step = c->step;
		e->epoch = (uint32_t)(c->step / EPOCH_STEPS);
		e->value = (double)c->step;
		e->metric = 0;
		switch (part) {
		case 0:
			e->kind = MRING_EV_STEP;
			e->metric = -1;
			e->value = 0;
			break;
		case 1:
			e->kind = MRING_EV_VALUE;
			break;
		case 2:
			if (c->step < s->late_step)
				continue;
			e->kind = MRING_EV_VALUE;
			e->metric = 1;
			break;
		case 3:
			if (!epoch_end)
				continue;
			e->kind = MRING_EV_EPOCH_VALUE;
			break;
		case 4:
			if (!epoch_end)
				continue;
			e->kind = MRING_EV_EPOCH_END;
			e->metric = -1;
			e->value = 0;
			break;
		default:
			c->step++;
			c->part = 0;
			continue;
		}
		c->seq += part == 0 ? 2 : 1;	/* a STEP takes two slots */
		return true;
	}
}

static void cursor_skip_to(struct cursor *c, uint64_t seq)
{
	struct mring_event e;

	while (c->seq < seq && cursor_next(c, &e))
		;
}

/* ---- what the threads share --------------------------------------------- */

struct run {
	struct schedule sched;
	struct mring_writer *w;
	const char *name;
	int on_full;
	int x;
	atomic_bool done;		/* the producer has logged everything */
	atomic_bool failed;
	char why[512];			/* the first failure, written once */
	/* results: slots delivered (LOST events not counted), slots lost */
	uint64_t drained, drain_lost, observed, observe_lost;
	uint64_t live_reads, live_changes, epoch_reads, names_seen;
};

/* Criterion's asserts may only fail in the test's own thread: the
 * others record the first failure here and stop. */
static bool fail(struct run *run, const char *fmt, ...)
{
	va_list ap;

	if (atomic_exchange(&run->failed, true))
		return false;
	va_start(ap, fmt);
	vsnprintf(run->why, sizeof(run->why), fmt, ap);
	va_end(ap);
	return false;
}

static bool stop(struct run *run)
{
	return atomic_load(&run->failed);
}

static void *producer_main(void *p)
{
	struct run *run = p;
	struct mring_writer *w = run->w;
	int late = -1;

	for (uint64_t i = 0; i < run->sched.steps && !stop(run); i++) {
		int ret;

		if (i == run->sched.late_step) {
			late = mring_metric(w, "late", MRING_ON_STEP);
			if (late != 1) {
				fail(run, "late metric: %d", late);
				break;
			}
		}
		mring_step(w, i);
		ret = mring_log(w, run->x, (double)i);
		if (ret == 0 && late >= 0)
			ret = mring_log(w, late, (double)i);
		if (ret != 0) {
			fail(run, "log at step %llu: %s", (unsigned long long)i,
			     mring_strerror(ret));
			break;
		}
		if (i % EPOCH_STEPS == EPOCH_STEPS - 1)
			mring_epoch_end(w);
	}
	atomic_store(&run->done, true);	/* also on failure: readers stop */
	return NULL;
}

/*
 * Check a batch against the schedule; LOST only where @lossy.  Counts
 * delivered events into @got and lost positions into @lost.
 */
static bool check_batch(struct run *run, struct cursor *c, const struct mring_event *ev,
			int n, bool lossy, uint64_t *got, uint64_t *lost,
			const char *who)
{
	if (n > 0 && !c->started && lossy)
		cursor_skip_to(c, ev[0].seq);	/* an observer starts anywhere */
	c->started |= n > 0;
	for (int i = 0; i < n; i++) {
		const struct mring_event *e = &ev[i];
		struct mring_event want;

		if (e->kind == MRING_EV_LOST) {
			if (!lossy || (e->seq != c->seq && e->seq != c->lost_end) ||
			    !(e->value >= 1))
				return fail(run, "%s: LOST %g at %llu, expected position %llu",
					    who, e->value, (unsigned long long)e->seq,
					    (unsigned long long)c->seq);
			*lost += (uint64_t)e->value;
			c->lost_end = e->seq + (uint64_t)e->value;
			cursor_skip_to(c, c->lost_end);
			continue;
		}
		if (!cursor_next(c, &want))
			return fail(run, "%s: event past the end at %llu", who,
				    (unsigned long long)e->seq);
		if (e->seq != want.seq || e->kind != want.kind || e->metric != want.metric ||
		    e->epoch != want.epoch || e->step != want.step || e->value != want.value)
			return fail(run, "%s: at %llu got kind %u metric %d step %llu epoch %u "
				    "value %g; expected kind %u metric %d step %llu epoch %u "
				    "value %g", who, (unsigned long long)e->seq, e->kind,
				    e->metric, (unsigned long long)e->step, e->epoch, e->value,
				    want.kind, want.metric, (unsigned long long)want.step,
				    want.epoch, want.value);
		*got += e->kind == MRING_EV_STEP ? 2 : 1;	/* slots */
	}
	return true;
}

static void *drainer_main(void *p)
{
	struct run *run = p;
	struct cursor c = { .s = &run->sched, .started = true };	/* from 0 */
	struct mring_event ev[128];
	struct mring_reader *r;
	int ret, n;

	ret = mring_reader_open(run->name, MRING_DRAIN, &r);
	if (ret < 0) {
		fail(run, "drainer open: %s", mring_strerror(ret));
		return NULL;
	}
	for (;;) {
		bool done = atomic_load(&run->done);

		n = mring_read(r, ev, 128);
		if (n < 0) {
			fail(run, "drainer read: %s", mring_strerror(n));
			break;
		}
		if (!check_batch(run, &c, ev, n, run->on_full == MRING_FULL_OVERWRITE,
				 &run->drained, &run->drain_lost, "drainer"))
			break;
		if ((n == 0 && done) || stop(run))
			break;
	}
	if (!stop(run) && cursor_next(&c, ev))
		fail(run, "drainer ended before position %llu", (unsigned long long)ev->seq);
	mring_reader_close(r);
	return NULL;
}

/* Values i..i+count-1 of one epoch: the only snapshots that may exist. */
static bool check_stats(struct run *run, const struct mring_stats *st, bool complete,
			const char *what)
{
	double k = (double)st->count, lo = (double)st->epoch * EPOCH_STEPS;

	if (st->count == 0 && !complete)
		return isnan(st->min) && isnan(st->max) ? true :
			fail(run, "%s: empty snapshot with min %g", what, st->min);
	if ((complete && st->count != EPOCH_STEPS) || st->min != lo ||
	    st->max != lo + k - 1 || st->value != st->max ||
	    st->sum != k * lo + k * (k - 1) / 2 || st->nonfinite != 0)
		return fail(run, "%s: torn snapshot: epoch %u count %llu min %g max %g "
			    "value %g sum %.17g", what, st->epoch,
			    (unsigned long long)st->count, st->min, st->max, st->value,
			    st->sum);
	return true;
}

static bool observe_once(struct run *run, struct mring_reader *o, struct cursor *c,
			 uint64_t *last_count)
{
	struct mring_event ev[32];
	struct mring_stats st;
	char name[64];
	int n, ret;

	ret = mring_stats_read(o, run->x, &st);
	if (ret == 0) {
		run->live_reads++;
		if (!check_stats(run, &st, false, "live"))
			return false;
		run->live_changes += st.count != *last_count;
		*last_count = st.count;
	} else if (ret != -EAGAIN) {
		return fail(run, "stats read: %s", mring_strerror(ret));
	}
	ret = mring_epoch_read(o, run->x, &st);
	if (ret == 0) {
		run->epoch_reads++;
		if (!check_stats(run, &st, true, "epoch"))
			return false;
	} else if (ret != -EAGAIN && ret != -ENOENT) {
		return fail(run, "epoch read: %s", mring_strerror(ret));
	}
	n = mring_metric_count(o);
	for (int id = 0; id < n; id++) {
		ret = mring_metric_info(o, id, name, sizeof(name), NULL);
		if (ret < 0 || strcmp(name, id ? "late" : "x"))
			return fail(run, "metric %d: %s, name '%s'", id, mring_strerror(ret),
				    ret < 0 ? "" : name);
		run->names_seen++;
	}
	n = mring_read(o, ev, 32);
	if (n < 0)
		return fail(run, "observer read: %s", mring_strerror(n));
	return check_batch(run, c, ev, n, true, &run->observed, &run->observe_lost,
			   "observer");
}

static void *observer_main(void *p)
{
	struct run *run = p;
	struct cursor c = { .s = &run->sched };
	struct mring_reader *o;
	uint64_t last_count = 0;
	int ret;

	ret = mring_reader_open(run->name, MRING_OBSERVE, &o);
	if (ret < 0) {
		fail(run, "observer open: %s", mring_strerror(ret));
		return NULL;
	}
	while (!atomic_load(&run->done) && !stop(run) &&
	       observe_once(run, o, &c, &last_count))
		;
	mring_reader_close(o);
	return NULL;
}

/* The producer's thread is the test's; the readers are threads. */
static void run_threads(struct run *run)
{
	pthread_t drainer, observer;

	run->w = open_writer(run->name, 256, run->on_full);
	share_producer_map(run->w);
	run->x = mring_metric(run->w, "x", MRING_ON_STEP | MRING_ON_EPOCH | MRING_MAX);
	cr_assert_eq(run->x, 0);
	/* the drainer attaches first, or WAIT would drop */
	{
		struct mring_reader *probe = open_reader(run->name, MRING_OBSERVE);
		struct mring_status st;

		cr_assert_eq(pthread_create(&drainer, NULL, drainer_main, run), 0);
		do {
			CHECK_OK(mring_status_read(probe, &st));
		} while (!st.drainer && !stop(run));
		mring_reader_close(probe);
	}
	cr_assert_eq(pthread_create(&observer, NULL, observer_main, run), 0);
	producer_main(run);
	pthread_join(drainer, NULL);
	pthread_join(observer, NULL);
	cr_assert(!atomic_load(&run->failed), "%s", run->why);
	/* probe, drainer, observer: header probe and full map each */
	cr_assert_eq(atomic_load(&producer_map.given), 6, "readers shared the mapping");
	CHECK_OK(mring_writer_close(run->w));
	producer_map.map = NULL;
}

/* 2 records a step, 1 more from late_step on, 2 at each epoch end */
#define STEPS		200000
#define LATE_STEP	100000
#define RECORDS		(2 * STEPS + (STEPS - LATE_STEP) + 2 * (STEPS / EPOCH_STEPS))
#define SLOTS		(RECORDS + STEPS)	/* a STEP takes two */

Test(threads, wait_mode_with_drainer_and_observer_threads_is_exact, .timeout = 600)
{
	struct run run = {
		.sched = { .steps = STEPS, .late_step = LATE_STEP },
		.name = seg_name("thr-wait"),
		.on_full = MRING_FULL_WAIT,
	};

	run_threads(&run);
	cr_expect_eq(run.drained, SLOTS);
	cr_expect_eq(run.drain_lost, 0);
	cr_expect_gt(run.observed, 0, "the observer read the ring");
	cr_expect_gt(run.live_changes, 0, "the observer raced the producer");
	cr_expect_gt(run.names_seen, 0);
}

Test(threads, overwrite_mode_readers_never_see_a_torn_record, .timeout = 600)
{
	struct run run = {
		.sched = { .steps = STEPS, .late_step = LATE_STEP },
		.name = seg_name("thr-over"),
		.on_full = MRING_FULL_OVERWRITE,
	};
	struct mring_reader *r;
	struct mring_status st;

	run_threads(&run);
	cr_expect_eq(run.drained + run.drain_lost, SLOTS, "every position accounted for");
	r = open_reader(run.name, MRING_OBSERVE);
	CHECK_OK(mring_status_read(r, &st));
	cr_expect_eq(st.written, SLOTS);
	cr_expect_eq(st.overwritten, run.drain_lost);
	mring_reader_close(r);
}
