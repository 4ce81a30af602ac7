// SPDX-License-Identifier: MIT
/*
 * drain.c - `mring drain`: the loop.  Open the segments (waiting for them
 * with inotify), read each ring in batches, take the events into rows
 * (drain_rows.c), commit (drain_state.c) as soon as a producer could be
 * waiting for room, and leave with an exit status that says what
 * happened.  docs/drain.md describes the guarantees.
 *
 * When to commit.  A WAIT-mode producer can only reuse ring slots that
 * were committed, so a commit runs when this pass found the rings empty
 * (caught up), when a ring holds a quarter of its capacity of read but
 * uncommitted records, or COMMIT_MS after the last one.  Commits write
 * and rename but do not fsync; one commit every --flush-ms is durable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "drain.h"

#define READ_BATCH	1024
#define LAST_STEPS_MAX	(1 << 24)	/* --last-steps: 128 MiB of seqs at most */
#define SMALL_BATCH	64	/* fewer events than this per segment: caught up */
#define COMMIT_MS	50	/* longest a read event waits for its commit */
#define CREATE_WAIT_MS	2000	/* a segment "being created" longer than this is a leftover */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static const char drain_usage[] =
	"usage: mring drain [OPTIONS] SEGMENT...\n"
	"Drain mring segments into logger files, exactly once across restarts.\n"
	"\n"
	"  --jsonl FILE        one JSON object per row (Hugging Face log_history shape)\n"
	"  --csv DIR           DIR/metrics.csv (Lightning CSVLogger layout)\n"
	"  --tensorboard DIR   a TensorBoard event file in DIR\n"
	"  --hf DIR            DIR/trainer_state.json (Hugging Face Trainer layout:\n"
	"                      HF names, fractional epoch, the final train_runtime row)\n"
	"  --state FILE        drain state (default: FILE.mring-state next to the\n"
	"                      JSONL file, or DIR/.mring-drain-state)\n"
	"  --follow            keep draining while producers live; exit when all are gone\n"
	"  --wait              wait for the segments to appear (and for a finished run\n"
	"                      to be replaced by the next one)\n"
	"  --flush-ms N        fsync the outputs at least every N ms (default 1000);\n"
	"                      rows reach the files as soon as they are complete\n"
	"  --every N           one row per N steps with each metric's window mean\n"
	"                      (Hugging Face logging_steps); epoch rows unchanged\n"
	"  --reduce-ranks      also one cross-rank epoch row (no \"rank\") once every\n"
	"                      segment ended the epoch: exact weighted mean, sum, min, max\n"
	"  --observe           export what the rings hold without consuming it (no\n"
	"                      state; new outputs only); complete while nothing was lost\n"
	"  --on-rewind remove|keep  a run that went back to a step (resumed from a\n"
	"                      checkpoint): remove the rows of the steps it voids\n"
	"                      from JSONL and CSV (default), or keep them and mark\n"
	"                      the rewind with a mring_rewind row\n"
	"  --last-steps N      with --observe: only the last N steps the rings hold\n"
	"                      (the flight-recorder files of `mring watch`)\n"
	"\n"
	"Names follow Lightning: a metric logged ON_STEP and ON_EPOCH appears as\n"
	"name_step per step and name_epoch per epoch.  Losses appear as mring_lost rows.\n"
	"Exit: 0 done; 1 usage or segment error; 2 output error; 3 a producer crashed;\n"
	"128+N after signal N (everything read was flushed first).\n";

/* ---- time ------------------------------------------------------------- */

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- waiting for segments ------------------------------------------------ */

/* An inotify watch on every directory a SEGMENT argument names, or -1. */
static int dir_watch(char **args, int nargs)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	for (int i = 0; fd >= 0 && i < nargs; i++) {
		char *copy = strdup(args[i]);
		const char *dir = copy && strchr(copy, '/') ? dirname(copy) : mring_dir();

		inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE);
		free(copy);
	}
	return fd;
}

/* Until something happens in a watched directory, at most @ms. */
static void dir_wait(int fd, int ms)
{
	char buf[4096];
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (fd < 0) {
		nap_us(50 * 1000);
		return;
	}
	if (poll(&p, 1, ms) > 0)
		while (read(fd, buf, sizeof(buf)) > 0)
			;
}

/*
 * With --wait and fresh outputs: a closed segment with nothing left to
 * drain is the previous run, drained already; the sidecar waits for the
 * run that replaces it rather than exit with 0 events.
 */
static bool finished_run(const char *path)
{
	struct mring_reader *r;
	struct mring_status st;
	bool done;

	if (mring_reader_open(path, MRING_OBSERVE, &r) < 0)
		return false;
	done = mring_status_read(r, &st) == 0 && !st.alive && st.written &&
	       st.read == st.written;
	mring_reader_close(r);
	return done;
}

/* With --wait, every SEGMENT named without a glob must be there. */
static bool all_named_present(char **args, int nargs)
{
	for (int i = 0; i < nargs; i++) {
		char path[4096];

		if (strpbrk(args[i], "*?["))
			continue;
		snprintf(path, sizeof(path), "%s%s%s", strchr(args[i], '/') ? "" : mring_dir(),
			 strchr(args[i], '/') ? "" : "/", args[i]);
		if (access(path, F_OK))
			return false;
	}
	return true;
}

static int find_segments(struct drain *d, struct seglist *l, char **args, int nargs)
{
	bool fresh = access(d->state_path, F_OK) != 0;
	bool said = false, said_old = false;
	/* watch first: a segment created after this is seen by the watch,
	 * one created before it by the expansion below */
	int fd = d->wait ? dir_watch(args, nargs) : -1, ret;

	for (;;) {
		bool old = false;

		ret = seglist_expand(l, args, nargs);
		if (!ret && d->wait && !all_named_present(args, nargs)) {
			seglist_free(l);
			ret = -ENOENT;	/* some named rank is not there yet */
		}
		for (int i = 0; !ret && d->wait && fresh && i < l->n; i++) {
			if (!finished_run(l->paths[i]))
				continue;
			if (!said_old)
				fprintf(stderr, "mring drain: %s is a finished run, already "
					"drained: waiting for the next run to replace it\n",
					l->paths[i]);
			said_old = old = true;
		}
		if (old)
			seglist_free(l);
		if ((ret != -ENOENT && !old) || !d->wait || stop_signal)
			break;
		if (!said && !old)
			fprintf(stderr, "mring drain: waiting for %s%s to appear in %s\n",
				args[0], nargs > 1 ? " ..." : "",
				strchr(args[0], '/') ? "its directory" : mring_dir());
		said = true;
		dir_wait(fd, 1000);
	}
	if (fd >= 0)
		close(fd);
	if (ret == -ENOENT)
		fprintf(stderr, "mring drain: no segment matches %s%s (in %s)\n", args[0],
			nargs > 1 ? " ..." : "",
			strchr(args[0], '/') ? "its directory" : mring_dir());
	return ret;
}

/*
 * --last-steps N: the seq of the N-th last STEP the ring holds now, read
 * by a second observer; the export skips what comes before it.  0 when
 * the ring holds N steps or fewer (everything is exported).
 */
static uint64_t last_steps_start(const char *path, uint64_t n)
{
	struct mring_event ev[READ_BATCH];
	struct mring_reader *r;
	uint64_t *seqs, start = 0, seen = 0;
	int got;

	if (mring_reader_open(path, MRING_OBSERVE, &r) < 0)
		return 0;
	seqs = calloc(n, sizeof(*seqs));
	while (seqs && (got = mring_read(r, ev, READ_BATCH)) > 0)
		for (int i = 0; i < got; i++)
			if (ev[i].kind == MRING_EV_STEP || ev[i].kind == MRING_EV_REWIND)
				seqs[seen++ % n] = ev[i].seq;
	if (seqs && seen > n)
		start = seqs[seen % n];	/* the oldest of the last n */
	free(seqs);
	mring_reader_close(r);
	return start;
}

/* Open one segment; a file still "being created" after CREATE_WAIT_MS is
 * what a producer killed inside mring_writer_open() leaves: -EAGAIN. */
static int seg_open(struct drain *d, struct seg *g)
{
	unsigned flags = d->observe ? MRING_OBSERVE : MRING_DRAIN | MRING_NO_AUTOCOMMIT;
	int64_t start = mono_ms();
	struct mring_status st;
	int ret;

	for (;;) {
		ret = mring_reader_open(g->path, flags, &g->r);
		if (ret != -EAGAIN || stop_signal || mono_ms() - start > CREATE_WAIT_MS)
			break;
		nap_us(50);
	}
	if (ret < 0)
		return ret;
	mring_status_read(g->r, &st);
	g->rank = st.rank;
	g->created_ns = st.created_ns;
	g->capacity = st.capacity;
	if (d->last_steps)
		g->skip_below = last_steps_start(g->path, d->last_steps);
	return 0;
}

static int open_segments(struct drain *d, char **args, int nargs, int *skipped)
{
	struct seglist l;
	int ret = find_segments(d, &l, args, nargs);

	if (ret < 0)
		return ret;
	d->segs = calloc((size_t)l.n, sizeof(*d->segs));
	if (!d->segs) {
		seglist_free(&l);
		return -ENOMEM;
	}
	for (int i = 0; i < l.n; i++) {
		struct seg *g = &d->segs[d->nsegs];

		*g = (struct seg){ .path = l.paths[i], .stash_id = -1 };
		ret = seg_open(d, g);
		if (ret == -EAGAIN) {
			fprintf(stderr, "mring drain: %s: still being created after %d ms: the "
				"leftover of a producer killed while creating it? (`mring rm "
				"--force` removes it); draining the others\n", g->path,
				CREATE_WAIT_MS);
			free(g->path);
			(*skipped)++;
			continue;
		}
		if (ret < 0) {
			char why[4400];

			fprintf(stderr, "mring drain: %s: %s\n", g->path,
				seg_open_error(g->path, ret, why, sizeof(why)));
			for (int k = i; k < l.n; k++)
				free(l.paths[k]);
			free(l.paths);
			return ret;
		}
		d->nsegs++;
	}
	free(l.paths);		/* the strings now belong to the segments */
	if (!d->nsegs)
		return -ENOENT;
	for (int i = 0; d->nsegs == 1 && i < d->nsegs; i++)
		d->segs[i].rank = -1;	/* one segment: rows have no "rank" */
	return 0;
}

/* ---- outputs ------------------------------------------------------------ */

/* Next to the JSONL file, else in the first output directory. */
static char *default_state_path(const char *jsonl, const char *dir)
{
	char *p = NULL;

	if (jsonl)
		return asprintf(&p, "%s.mring-state", jsonl) < 0 ? NULL : p;
	return asprintf(&p, "%s/.mring-drain-state", dir) < 0 ? NULL : p;
}

static const char *open_hint(int err, bool resumed)
{
	if (err == -EEXIST && !resumed)
		return " (output exists and no drain state says it is ours: "
		       "remove it or give --state)";
	if ((err == -EBADMSG || err == -EIO) && resumed)
		return " (it does not match the drain state: changed or cut since "
		       "the last commit; move the output or the state away)";
	return "";
}

/*
 * Resume the outputs the state records.  One it does not record is new
 * (added since the last run): it is created like a fresh output, so an
 * existing file is never truncated, and starts at the drain position.
 */
static int open_outputs(struct drain *d, bool resume)
{
	for (int i = 0; i < d->nouts; i++) {
		struct out *o = &d->outs[i];
		bool resumed = resume && o->in_state;
		int ret = o->ops->open(&o->s, o->arg, resumed ? &o->st : NULL);

		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s%s\n", o->arg, strerror(-ret),
				open_hint(ret, resumed));
			return ret;
		}
		if (resume && !resumed)
			fprintf(stderr, "mring drain: %s: new output; it starts where %s "
				"left off, without the rows drained before\n", o->arg,
				d->state_path);
	}
	return 0;
}

/* ---- the loop ------------------------------------------------------------- */

/*
 * Take one event, unless it is in the sinks already: below the recorded
 * next seq, except the part of an overrun LOST range [seq, seq + value)
 * that was not reported before.
 */
static int seg_take(struct drain *d, struct seg *g, struct mring_event *ev)
{
	uint64_t end = ev->seq + (ev->kind == MRING_EV_STEP ||
				  ev->kind == MRING_EV_REWIND ? 2 : 1);	/* slots */
	int ret;

	/* a damaged segment's overrun can count past 2^64 (a double): clamp */
	if (ev->kind == MRING_EV_LOST && (ev->flags & MRING_EVF_OVERRUN))
		end = ev->value < (double)(UINT64_MAX - ev->seq) ?
		      ev->seq + (uint64_t)ev->value : UINT64_MAX;
	if (end <= g->skip_below)
		return 0;
	if (ev->seq < g->skip_below) {
		ev->value = (double)(end - g->skip_below);
		ev->seq = g->skip_below;
	}
	ret = take_event(d, g, ev);
	if (ret < 0)
		return ret;
	g->next_seq = end;
	g->events++;
	d->dirty = true;
	return 0;
}

/* An observer starts at the oldest record the ring still holds. */
static void observe_gap(struct drain *d, struct seg *g, struct mring_event *first)
{
	struct mring_event lost = *first;

	if (!d->observe || g->events || g->skip_below || !first->seq)
		return;
	lost.kind = MRING_EV_LOST;
	lost.flags = MRING_EVF_OVERRUN;
	lost.value = (double)first->seq;
	lost.seq = 0;
	seg_take(d, g, &lost);
}

static int read_segment(struct drain *d, struct seg *g, int *got)
{
	static struct mring_event ev[READ_BATCH];
	int n = mring_read(g->r, ev, READ_BATCH);

	if (n < 0) {
		/* the library position is at the bad record: what came before
		 * may still be committed */
		fprintf(stderr, "mring drain: %s: %s\n", g->path, mring_strerror(n));
		return n;
	}
	if (n)
		observe_gap(d, g, &ev[0]);
	for (int i = 0; i < n && !d->failed; i++) {
		int ret = seg_take(d, g, &ev[i]);

		if (ret < 0) {
			d->failed = true;	/* nothing of this run is committed now */
			if (!d->output_failed)
				fprintf(stderr, "mring drain: %s: record %llu: %s\n", g->path,
					(unsigned long long)ev[i].seq, ret == -EBADMSG ?
					"corrupt (names a metric the segment does not have, "
					"or a value it cannot send)" : strerror(-ret));
			return ret;
		}
	}
	*got += n;
	return d->failed ? -ECANCELED : 0;
}

/*
 * A producer that is gone is done once its ring is read to the end:
 * nothing can be added after its death, but it may have written a lot
 * between our last empty read and the moment we saw it gone.  Its open
 * rows are written then.
 */
static int check_ended(struct drain *d, struct seg *g)
{
	struct mring_status st;
	int got, ret;

	if (mring_status_read(g->r, &st) < 0 || st.alive)
		return 0;
	do {
		got = 0;
		ret = read_segment(d, g, &got);
	} while (!ret && got);
	if (ret < 0)
		return ret;
	g->done = true;
	g->crashed = !st.closed;
	ret = seg_finish(d, g);
	if (ret < 0)
		d->failed = true;
	d->dirty = true;
	return ret;
}

struct clock {
	int64_t commit, sync;
};

/* Commit now if a producer could be waiting for room, or it is time. */
static int maybe_commit(struct drain *d, struct clock *c, int got, bool quarter)
{
	int64_t now = mono_ms();
	bool durable = !d->flush_ms || now - c->sync >= d->flush_ms;
	int ret;

	if (!(d->dirty && (!got || quarter || now - c->commit >= COMMIT_MS)) &&
	    !(d->unsynced && durable))
		return 0;
	ret = drain_commit(d, durable);
	c->commit = now;
	if (durable)
		c->sync = now;
	return ret;
}

/* ---- progress on a terminal ------------------------------------------------ */

static uint64_t events_taken(const struct drain *d)
{
	uint64_t n = 0;

	for (int i = 0; i < d->nsegs; i++)
		n += d->segs[i].events;
	return n;
}

/*
 * A long backlog shows its progress on stderr when that is a terminal:
 * events, rate, and the share of the backlog there was at the start.
 * Never when stderr is a file or a pipe (logs stay clean), nor with
 * MRING_PROGRESS=0.  MRING_PROGRESS_MS sets the update interval (500).
 */
static void progress_start(struct drain *d)
{
	const char *env = getenv("MRING_PROGRESS"), *ms = getenv("MRING_PROGRESS_MS");
	struct mring_status st;

	if (!isatty(STDERR_FILENO) || (env && !strcmp(env, "0")))
		return;
	d->prog.on = true;
	d->prog.every = ms ? atol(ms) : 500;
	d->prog.t0 = d->prog.last = mono_ms();
	d->prog.events0 = events_taken(d);
	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		g->prog_from = g->next_seq;
		if (mring_status_read(g->r, &st) == 0 && st.written > st.read) {
			d->prog.backlog += st.written - st.read;
			if (st.read > g->prog_from)
				g->prog_from = st.read;
		}
	}
}

/* Ring slots taken since progress_start(): the backlog's unit. */
static uint64_t progress_slots(const struct drain *d)
{
	uint64_t n = 0;

	for (int i = 0; i < d->nsegs; i++) {
		const struct seg *g = &d->segs[i];

		if (g->next_seq > g->prog_from)
			n += g->next_seq - g->prog_from;
	}
	return n;
}

static void progress_show(struct drain *d)
{
	int64_t now;
	uint64_t n, slots;
	double rate;

	if (!d->prog.on)
		return;		/* not a terminal: not even a clock read */
	now = mono_ms();
	if (now - d->prog.last < d->prog.every)
		return;
	d->prog.last = now;
	n = events_taken(d) - d->prog.events0;
	rate = now > d->prog.t0 ? (double)n * 1000.0 / (double)(now - d->prog.t0) : 0;
	fprintf(stderr, "\rmring drain: %llu events, %.3g M/s", (unsigned long long)n,
		rate / 1e6);
	slots = progress_slots(d);
	if (d->prog.backlog)
		fprintf(stderr, ", %.0f%% of the backlog", slots >= d->prog.backlog ? 100.0 :
			100.0 * (double)slots / (double)d->prog.backlog);
	fputs("\033[K", stderr);	/* clear what a longer line left */
	d->prog.shown = true;
}

static void progress_end(struct drain *d)
{
	if (!d->prog.shown)
		return;
	d->prog.last = INT64_MIN / 2;	/* the final figures, once */
	progress_show(d);
	fputs("\r\033[K", stderr);	/* the summary line takes its place */
}

/* Nothing to read: a sink may finish work it put off (sink_hf.c's rewrite). */
static void sinks_idle(struct drain *d)
{
	for (int i = 0; i < d->nouts; i++)
		if (d->outs[i].s && d->outs[i].ops->idle)
			d->outs[i].ops->idle(d->outs[i].s);
}

static int drain_loop(struct drain *d)
{
	struct clock c = { mono_ms(), mono_ms() };

	while (!stop_signal) {
		bool quarter = false;
		int got = 0, live = 0, ret;

		for (int i = 0; i < d->nsegs; i++) {
			struct seg *g = &d->segs[i];

			if (g->done)
				continue;
			ret = read_segment(d, g, &got);
			if (ret < 0)
				return ret;
			quarter |= g->next_seq - g->committed_seq >= g->capacity / 4;
		}
		ret = maybe_commit(d, &c, got, quarter);
		if (ret < 0)
			return ret;
		progress_show(d);
		/*
		 * Caught up with a producer that is still writing: let a batch
		 * build up instead of reading right behind it, where the
		 * record we read shares a cache line with the one it writes
		 * next (that costs the producer ~4x, docs/performance.md).
		 */
		if (got && got < SMALL_BATCH * d->nsegs)
			nap_us(200);
		if (got)
			continue;
		if (!d->follow)
			break;		/* drained what was there */
		for (int i = 0; i < d->nsegs; i++) {
			if (!d->segs[i].done) {
				ret = check_ended(d, &d->segs[i]);
				if (ret < 0)
					return ret;
			}
			live += !d->segs[i].done;
		}
		if (!live)
			break;
		/* hparams set while the rings are idle: commit them */
		if (!d->dirty && hparams_changed(d))
			d->dirty = true;
		if (!d->dirty) {
			sinks_idle(d);
			nap_us(1000);
		}
	}
	return 0;
}

/* Segments whose producer is gone get their last rows; --observe: all. */
static int finish_segments(struct drain *d)
{
	for (int i = 0; i < d->nsegs && !d->failed && !stop_signal; i++) {
		struct seg *g = &d->segs[i];
		int ret = g->done ? 0 : check_ended(d, g);

		if (!ret && !g->done && d->observe)
			ret = seg_finish(d, g);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* What reached the outputs: the figures of the last commit. */
static void summary(struct drain *d)
{
	uint64_t events = 0, lost = 0, pending = 0;

	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		events += g->events_committed;
		lost += g->lost_committed;
		pending += g->events - g->events_committed;
		if (g->crashed)
			fprintf(stderr, "mring drain: %s: producer crashed (gone without "
				"closing); everything it committed was drained\n", g->path);
	}
	fprintf(stderr, "mring drain: %llu events, %llu rows, %llu lost, %d segment%s%s\n",
		(unsigned long long)events, (unsigned long long)d->rows_committed,
		(unsigned long long)lost, d->nsegs, d->nsegs == 1 ? "" : "s",
		d->observe ? " (observed, nothing consumed)" : "");
	if (pending && !d->observe)
		fprintf(stderr, "mring drain: %llu events read after the last commit were not "
			"committed: they stay in the ring for the next drain\n",
			(unsigned long long)pending);
}

static void drain_free(struct drain *d)
{
	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		mring_reader_close(g->r);	/* no autocommit: nothing moves */
		free(g->path);
		names_free(g);
		pending_free(&g->step_row);
		pending_free(&g->epoch_row);
		window_free(&g->win);
	}
	free(d->segs);
	xstate_free(d);
	hparams_free(d);
	for (int i = 0; i < d->nouts; i++)
		if (d->outs[i].s)
			d->outs[i].ops->close(d->outs[i].s);
	for (int i = 0; i < d->nouts; i++)
		sink_state_clear(&d->outs[i].st);
	free(d->keybuf);
	free(d->hfbuf);
	free(d->state_path);
}

static int parse_number(const char *opt, const char *arg, long long max, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(arg, &end, 10);
	if (errno || *end || end == arg || *out < 0 || *out > max) {
		fprintf(stderr, "mring drain: %s: not a number from 0 to %lld: %s\n", opt, max, arg);
		return -EINVAL;
	}
	return 0;
}

static int parse_args(struct drain *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "jsonl", required_argument, NULL, 'j' },
		{ "csv", required_argument, NULL, 'c' },
		{ "tensorboard", required_argument, NULL, 't' },
		{ "hf", required_argument, NULL, 'H' },
		{ "state", required_argument, NULL, 's' },
		{ "follow", no_argument, NULL, 'f' },
		{ "wait", no_argument, NULL, 'w' },
		{ "flush-ms", required_argument, NULL, 'F' },
		{ "every", required_argument, NULL, 'e' },
		{ "reduce-ranks", no_argument, NULL, 'r' },
		{ "observe", no_argument, NULL, 'o' },
		{ "on-rewind", required_argument, NULL, 'R' },
		{ "last-steps", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *jsonl = NULL, *csv = NULL, *tb = NULL, *hf = NULL, *state = NULL;
	long long v;
	int c;

	d->flush_ms = 1000;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': jsonl = optarg; break;
		case 'c': csv = optarg; break;
		case 't': tb = optarg; break;
		case 'H': hf = optarg; break;
		case 's': state = optarg; break;
		case 'f': d->follow = true; break;
		case 'w': d->wait = true; break;
		case 'r': d->reduce = true; break;
		case 'o': d->observe = true; break;
		case 'R':
			if (strcmp(optarg, "keep") && strcmp(optarg, "remove")) {
				fprintf(stderr, "mring drain: --on-rewind: %s: not remove or "
					"keep\n", optarg);
				return -EINVAL;
			}
			d->keep_rewinds = !strcmp(optarg, "keep");
			break;
		case 'L':
			if (parse_number("--last-steps", optarg, LAST_STEPS_MAX, &v) < 0 || !v) {
				fprintf(stderr, "mring drain: --last-steps: not a positive "
					"number of steps: %s\n", optarg);
				return -EINVAL;
			}
			d->last_steps = (uint64_t)v;
			break;
		case 'F':
			if (parse_number("--flush-ms", optarg, 3600000, &v) < 0)
				return -EINVAL;
			d->flush_ms = (long)v;
			break;
		case 'e':
			if (parse_number("--every", optarg, LLONG_MAX, &v) < 0 || !v) {
				fprintf(stderr, "mring drain: --every: not a positive number "
					"of steps: %s\n", optarg);
				return -EINVAL;
			}
			d->every = (uint64_t)v;
			break;
		case 'h':
			fputs(drain_usage, stdout);
			return 1;
		default:
			/* getopt said what was wrong, as 'mring drain: ...' */
			fputs("see `mring drain --help`\n", stderr);
			return -EINVAL;
		}
	}
	if (optind >= argc || !(jsonl || csv || tb || hf)) {
		fprintf(stderr, "mring drain: %s\n%s", optind >= argc ?
			"no SEGMENT given" : "no output given (--jsonl, --csv, --tensorboard or --hf)",
			drain_usage);
		return -EINVAL;
	}
	if (d->last_steps && !d->observe) {
		fprintf(stderr, "mring drain: --last-steps needs --observe (a drainer "
			"takes everything)\n");
		return -EINVAL;
	}
	if (d->observe && state) {
		fprintf(stderr, "mring drain: --observe keeps no state: drop --state\n");
		return -EINVAL;
	}
	if (jsonl)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_jsonl_ops, .arg = jsonl };
	if (csv)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_csv_ops, .arg = csv };
	if (tb)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_tfevents_ops, .arg = tb };
	if (hf)
		d->outs[d->nouts++] = (struct out){ .ops = &sink_hf_ops, .arg = hf };
	d->state_path = state ? strdup(state) : default_state_path(jsonl, csv ? csv : tb ? tb : hf);
	return d->state_path ? 0 : -ENOMEM;
}

/* --csv and --tensorboard name directories: say so before anything else
 * (the default state would be looked for inside them) */
static int outputs_check(struct drain *d)
{
	for (int i = 0; i < d->nouts; i++) {
		struct stat st;

		if (d->outs[i].ops == &sink_jsonl_ops || stat(d->outs[i].arg, &st) ||
		    S_ISDIR(st.st_mode))
			continue;
		fprintf(stderr, "mring drain: --%s %s: not a directory (it names the "
			"directory to write in)\n", d->outs[i].ops->name, d->outs[i].arg);
		return -ENOTDIR;
	}
	return 0;
}

/* Set up, and the state read and outputs opened: 0, or an exit status. */
static int drain_setup(struct drain *d, char **args, int nargs, int *skipped)
{
	int resume = 0;

	if (outputs_check(d) < 0)
		return EXIT_OUTPUT;

	if (open_segments(d, args, nargs, skipped) < 0)
		return EXIT_USAGE;
	if (!d->observe) {
		resume = state_read(d);
		/* a state that does not fit is a usage error; one that cannot
		 * be read is an output error, like any file of ours */
		if (resume == -EBADMSG || resume == -EINVAL || resume == -ESTALE)
			return EXIT_USAGE;
		if (resume < 0)
			return EXIT_OUTPUT;
		/* a rewind's voiding that a killed drainer began */
		if (resume > 0 && rewind_recover(d) < 0)
			return EXIT_OUTPUT;
	}
	if (open_outputs(d, resume > 0) < 0)
		return EXIT_OUTPUT;
	/* a state from the start: a drain killed before its first commit of
	 * rows resumes like any other */
	d->hp.hold = true;	/* and without hparams (drain_hparams.c) */
	if (!resume && !d->observe && drain_commit(d, true) < 0)
		return EXIT_OUTPUT;
	d->hp.hold = false;
	return 0;
}

static int exit_status(struct drain *d, int err, int skipped)
{
	if (d->failed)
		return d->output_failed || err == -ENOMEM ? EXIT_OUTPUT : EXIT_USAGE;
	if (err < 0)
		return EXIT_USAGE;	/* a corrupt record; what came before is in */
	for (int i = 0; i < d->nsegs; i++)
		if (d->segs[i].crashed)
			return EXIT_CRASHED;
	if (stop_signal)
		return 128 + stop_signal;
	return skipped ? EXIT_USAGE : 0;
}

int cmd_drain(int argc, char **argv)
{
	struct drain d = { 0 };
	struct sigaction sa = { .sa_handler = on_signal };
	int ret, status, skipped = 0;

	ret = parse_args(&d, argc, argv);
	if (ret) {
		free(d.state_path);
		return ret > 0 ? 0 : EXIT_USAGE;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	status = drain_setup(&d, argv + optind, argc - optind, &skipped);
	if (status)
		goto out;
	progress_start(&d);
	ret = drain_loop(&d);
	progress_end(&d);
	if (!ret)
		ret = finish_segments(&d);
	/* flush what was read, whatever stopped us, unless taking it failed */
	if (!d.failed)
		drain_commit(&d, true);
	summary(&d);
	status = exit_status(&d, ret, skipped);
out:
	drain_free(&d);
	return status;
}
