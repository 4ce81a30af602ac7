// SPDX-License-Identifier: MIT
/*
 * watch.c - mring watch: alerts on what the segments hold, from a sidecar.
 *
 * An observer only (MRING_OBSERVE: a read-only mapping, never a drain
 * position), polled every --interval: the producer cannot tell it is
 * there.  Each poll expands the SEGMENT arguments again, reads every
 * segment's status, metric statistics and new ring records, and judges
 * the rules.  A rule's condition is kept per segment (and metric, and
 * threshold): an alert is raised when it becomes true and a clear when it
 * becomes false again, so each condition alerts once.  What an alert does
 * is watch_act.c's job.  See docs/watch.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "watch.h"

#define READ_BATCH	1024

static const char watch_usage[] =
	"usage: mring watch [RULES] [ACTIONS] [OPTIONS] SEGMENT...\n"
	"Alerts on what the segments hold, from a sidecar: it only observes (never\n"
	"drains, never slows the producer).  SEGMENT: a path, a bare name in\n"
	"$MRING_DIR (default /dev/shm), or a glob; expanded again at every poll.\n"
	"\n"
	"Rules (default: --nan --crash); each alerts once per condition:\n"
	"  --nan[=GLOB,...]     a metric logged NaN or Inf (names the first step)\n"
	"  --stall SECONDS      alive, but no mring_step() for that long\n"
	"  --lag STEPS          a rank more than STEPS behind the run's leading rank\n"
	"  --lag-factor F       a rank's time per step more than F times the median\n"
	"                       of the run's other ranks\n"
	"  --above GLOB=X       a metric's last value above X\n"
	"  --below GLOB=X       a metric's last value below X\n"
	"  --spike GLOB=K       last value above K times the running epoch mean\n"
	"  --crash              the producer died without closing\n"
	"\n"
	"Actions (every alert is printed on stdout: `alert rule=... segment=...`):\n"
	"  --json               one JSON object per line instead\n"
	"  --exec CMD           run sh -c CMD with MRING_ALERT_* in the environment;\n"
	"                       one at a time per rule and segment\n"
	"  --exec-limit N       at most N runs per minute (default 10)\n"
	"  --exec-timeout S     kill a run after S seconds (default 60)\n"
	"  --signal SIG         signal the producer (USR1, SIGUSR1 or a number); only\n"
	"                       a process of our user that is still that producer\n"
	"  --exit               exit 4 at the first alert, after its actions\n"
	"  --dump DIR           write the last --dump-steps N (default 100) steps the\n"
	"                       ring holds to DIR/SEGMENT.RULE.STEP.TIME.jsonl\n"
	"\n"
	"Options:\n"
	"  --interval SECONDS   poll period (default 0.1)\n"
	"  --until-done         exit 0 once every producer has closed or crashed\n"
	"\n"
	"Exit: 0 stopped (SIGINT, SIGTERM) or done; 1 usage; 4 an alert with --exit.\n"
	"See docs/watch.md for the output format and every rule's exact meaning.\n";

struct wmetric {
	char name[64];
	unsigned flags;
	bool nan_watch;		/* matched by --nan */
	uint64_t thr_watch;	/* bit k: matched by threshold rule k */
	uint64_t thr_on;	/* bit k: its condition holds (alerted) */
	bool spike_warned;
	/* --nan */
	bool nan_on;
	bool nan_pending;	/* a run in the history, still going at its end */
	uint64_t nan_step;	/* first step of the current non-finite run */
	double nan_value;
	uint64_t ring_nan_tick;	/* last poll the ring showed it non-finite */
	uint32_t nf_epoch;	/* statistics: the epoch of nf_live */
	uint64_t nf_live;	/* its non-finite count at the last poll */
	bool have_live, seeded;
	struct mring_stats live, ep;
	bool have_ep;
};

struct wseg {
	char *path;
	const char *base;
	struct mring_reader *r;
	dev_t dev;
	ino_t ino;
	off_t size;
	/* a matching file we could not open: report once per version of it */
	int open_err;
	struct timespec bad_mtime;
	struct mring_status st;
	bool have_st;
	bool caught_up;		/* the ring's history was read once */
	bool ring_bad;		/* mring_read said the ring is corrupt */
	uint64_t overrun_tick;	/* last poll the observer was lapped */
	struct wmetric *m;
	int nm;
	/* --stall */
	uint64_t seen_step;
	int64_t seen_wall;
	bool have_progress;
	double progress_t;	/* monotonic time the step last changed */
	bool stall_on;
	/* --lag, --lag-factor */
	struct { double t; uint64_t step; } hist[WATCH_HIST];
	unsigned nhist;
	double spt;		/* seconds per step; <0: not known */
	bool lag_on, lagf_on;
	bool crash_on;
	bool ended;		/* closed or crashed (for --until-done) */
};

struct watch {
	struct watch_opts o;
	char **args;
	int nargs;
	struct wseg *segs;
	int nsegs;
	uint64_t tick;
	int64_t start_ns;	/* when the watcher started (CLOCK_REALTIME) */
	bool waiting_said;
	bool fd_said;		/* out of descriptors: said once */
};

static volatile sig_atomic_t watch_stop;

static void on_signal(int sig)
{
	watch_stop = sig;
}

/* ---- alerts ------------------------------------------------------------ */

static void alert_init(struct alert *a, const struct wseg *s, const char *event,
		       const char *rule, const char *metric, uint64_t step, double value)
{
	memset(a, 0, sizeof(*a));
	a->event = event;
	a->rule = rule;
	a->segment = s->path;
	a->base = s->base;
	a->run = s->have_st ? s->st.run : "";
	a->rank = s->have_st ? s->st.rank : -1;
	a->pid = s->have_st ? s->st.pid : 0;
	a->metric = metric;
	a->step = step;
	a->value = value;
	a->dev = s->dev;
	a->ino = s->ino;
	a->created_ns = s->have_st ? s->st.created_ns : 0;
	a->pid_start = __mring_producer_start(s->r);
	a->alive = s->have_st && s->st.alive;
}

/*
 * Raise or clear one condition: @on is its state, @now whether it holds
 * at this poll.  Nothing happens while it stays the same.
 */
static bool edge(struct watch *w, const struct wseg *s, bool *on, bool now, const char *rule,
		 const char *metric, uint64_t step, double value, const char *fmt, ...)
	__attribute__((format(printf, 9, 10)));

static bool edge(struct watch *w, const struct wseg *s, bool *on, bool now, const char *rule,
		 const char *metric, uint64_t step, double value, const char *fmt, ...)
{
	struct alert a;
	va_list ap;

	if (*on == now)
		return false;
	*on = now;
	alert_init(&a, s, now ? "alert" : "clear", rule, metric, step, value);
	va_start(ap, fmt);
	vsnprintf(a.detail, sizeof(a.detail), fmt, ap);
	va_end(ap);
	act_alert(&w->o, &a);
	return true;
}

/* ---- the segment set ---------------------------------------------------- */

/* Forget all about the file at @s->path (it keeps its place in the set). */
static void seg_close(struct wseg *s)
{
	struct wseg fresh = { .path = s->path, .base = s->base };

	mring_reader_close(s->r);
	free(s->m);
	*s = fresh;
}

static bool same_file(const struct stat *a, const struct timespec *mtime, const struct wseg *s)
{
	return a->st_dev == s->dev && a->st_ino == s->ino && a->st_size == s->size &&
	       a->st_mtim.tv_sec == mtime->tv_sec && a->st_mtim.tv_nsec == mtime->tv_nsec;
}

static void seg_open(struct watch *w, struct wseg *s)
{
	struct mring_status st;
	struct stat sb;
	char why[4400];
	int ret;

	if (stat(s->path, &sb) < 0)
		return;
	/* a file we could not open, unchanged since: do not try again */
	if (s->open_err && same_file(&sb, &s->bad_mtime, s))
		return;
	ret = mring_reader_open(s->path, MRING_OBSERVE, &s->r);
	if (ret == -EAGAIN)
		return;		/* being created: next poll */
	if (ret == -EMFILE || ret == -ENFILE || ret == -ENOMEM) {
		s->r = NULL;	/* ours to fix, not the file's: next poll */
		if (!w->fd_said)
			fprintf(stderr, "mring watch: %s: %s; some segments are not watched "
				"until descriptors are free\n", s->path, strerror(-ret));
		w->fd_said = true;
		return;
	}
	s->dev = sb.st_dev;
	s->ino = sb.st_ino;
	s->size = sb.st_size;
	if (ret < 0) {
		s->r = NULL;
		s->open_err = ret;
		s->bad_mtime = sb.st_mtim;
		fprintf(stderr, "mring watch: %s: %s; not watched (tried again when the "
			"file changes)\n", s->path, seg_open_error(s->path, ret, why, sizeof(why)));
		return;
	}
	s->open_err = 0;
	s->spt = -1;
	if (mring_status_read(s->r, &st) == 0)
		fprintf(stderr, "mring watch: watching %s (run %s, rank %d, pid %d, %s)\n",
			s->path, st.run, st.rank, st.pid, producer_state(&st));
}

static int seg_cmp_path(const void *key, const void *elem)
{
	return strcmp(key, ((const struct wseg *)elem)->path);
}

/* The segment at @path, added in path order if new; NULL: no memory. */
static struct wseg *seg_find_or_add(struct watch *w, const char *path)
{
	struct wseg *p;
	int lo = 0, hi = w->nsegs;

	/* bsearch() wants a non-NULL base even for 0 elements */
	p = w->nsegs ? bsearch(path, w->segs, (size_t)w->nsegs, sizeof(*w->segs),
			       seg_cmp_path) : NULL;
	if (p)
		return p;
	while (lo < hi) {		/* where it goes */
		int mid = (lo + hi) / 2;

		if (strcmp(w->segs[mid].path, path) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	p = realloc(w->segs, (size_t)(w->nsegs + 1) * sizeof(*p));
	if (!p)
		return NULL;
	w->segs = p;
	memmove(&p[lo + 1], &p[lo], (size_t)(w->nsegs - lo) * sizeof(*p));
	p = &w->segs[lo];
	memset(p, 0, sizeof(*p));
	p->path = strdup(path);
	if (!p->path) {
		memmove(p, p + 1, (size_t)(w->nsegs - lo) * sizeof(*p));
		return NULL;
	}
	w->nsegs++;
	return p;
}

/*
 * Expand the arguments again: watch new matches, forget vanished files,
 * start afresh on a path whose file was replaced (a restarted run) or
 * truncated.
 */
static void rescan(struct watch *w)
{
	struct seglist l;
	struct stat sb;

	if (seglist_expand(&l, w->args, w->nargs) < 0)
		memset(&l, 0, sizeof(l));
	for (int k = 0; k < l.n; k++)
		seg_find_or_add(w, l.paths[k]);	/* no memory: the next poll */
	seglist_free(&l);
	for (int i = 0; i < w->nsegs;) {
		struct wseg *s = &w->segs[i];

		/*
		 * Gone: whether or not the expansion still listed it (a file
		 * unlinked between the glob and here is gone, not replaced).
		 * Not matched but still there: the expansion itself failed
		 * (glob sees no directory without a free descriptor), and the
		 * file is still watched.
		 */
		if (stat(s->path, &sb) < 0) {
			if (s->r)
				fprintf(stderr, "mring watch: %s: removed; no longer watched\n",
					s->path);
			seg_close(s);
			free(s->path);
			memmove(s, s + 1, (size_t)(w->nsegs - i - 1) * sizeof(*s));
			w->nsegs--;
			continue;
		}
		s->base = strrchr(s->path, '/') ? strrchr(s->path, '/') + 1 : s->path;
		if (s->r && (sb.st_ino != s->ino || sb.st_dev != s->dev || sb.st_size < s->size)) {
			fprintf(stderr, "mring watch: %s: replaced; watching the new file\n",
				s->path);
			seg_close(s);
		}
		if (!s->r)
			seg_open(w, s);
		i++;
	}
	if (!w->nsegs && !w->waiting_said) {
		fprintf(stderr, "mring watch: no segment matches yet; waiting for one\n");
		w->waiting_said = true;
	} else if (w->nsegs) {
		w->waiting_said = false;
	}
}

/* ---- metrics ------------------------------------------------------------ */

static bool name_matches(char **pats, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!fnmatch(pats[i], name, 0))
			return true;
	return false;
}

static void metric_setup(struct watch *w, struct wmetric *m)
{
	const struct watch_opts *o = &w->o;

	m->nan_watch = o->nan && (!o->nan_pats || name_matches(o->nan_pats, o->n_nan_pats,
								  m->name));
	for (int k = 0; k < o->nthr; k++)
		if (!fnmatch(o->thr[k].pattern, m->name, 0))
			m->thr_watch |= UINT64_C(1) << k;
}

static void metrics_grow(struct watch *w, struct wseg *s)
{
	int n = mring_metric_count(s->r);
	struct wmetric *p;

	if (n <= s->nm)
		return;
	p = realloc(s->m, (size_t)n * sizeof(*p));
	if (!p)
		return;
	s->m = p;
	for (int id = s->nm; id < n; id++) {
		memset(&p[id], 0, sizeof(p[id]));
		if (mring_metric_info(s->r, id, p[id].name, sizeof(p[id].name), &p[id].flags) < 0)
			snprintf(p[id].name, sizeof(p[id].name), "#%d", id);
		metric_setup(w, &p[id]);
	}
	s->nm = n;
}

static void stats_read(struct wseg *s)
{
	for (int id = 0; id < s->nm; id++) {
		struct wmetric *m = &s->m[id];
		struct mring_stats st;
		int ret;

		if (!m->nan_watch && !m->thr_watch)
			continue;
		ret = mring_stats_read(s->r, id, &st);
		if (ret == -EAGAIN)
			ret = mring_stats_read(s->r, id, &st);
		if (ret == 0) {
			m->live = st;
			m->have_live = true;
		}
		m->have_ep = mring_epoch_read(s->r, id, &m->ep) == 0;
	}
}

/* ---- --nan -------------------------------------------------------------- */

static void nan_fire(struct watch *w, struct wseg *s, struct wmetric *m, bool exact)
{
	edge(w, s, &m->nan_on, true, "nan", m->name, m->nan_step, m->nan_value,
	     exact ? "first non-finite value of %s" :
	     "%s logged a non-finite value; first step not in the ring", m->name);
}

/*
 * One ring value of a watched metric.  Values logged before the watcher
 * started are history: a non-finite run in it is only remembered
 * (pending), and alerted once the history is read if it is still going.
 */
static void nan_value(struct watch *w, struct wseg *s, struct wmetric *m,
		      const struct mring_event *ev)
{
	bool past = !s->caught_up && ev->wall_ns < w->start_ns;

	if (isfinite(ev->value)) {
		m->nan_pending = false;
		edge(w, s, &m->nan_on, false, "nan", m->name, ev->step, ev->value,
		     "%s is finite again", m->name);
		return;
	}
	m->ring_nan_tick = w->tick;
	if (m->nan_on)
		return;
	if (!m->nan_pending) {		/* the first of a run */
		m->nan_step = ev->step;
		m->nan_value = ev->value;
	}
	m->nan_pending = past;
	if (!past)
		nan_fire(w, s, m, true);
}

/*
 * Read the new ring records.  The first poll reads the ring's history
 * without alerting for what ended before the watcher came; a non-finite
 * run still going then is alerted once, with its first step.  Bounded:
 * at most WATCH_RING_KEEP slots per poll (the history: a ring's worth),
 * so a producer writing flat out cannot keep the watcher here.
 */
static void ring_read(struct watch *w, struct wseg *s)
{
	struct mring_event ev[READ_BATCH];
	uint64_t budget = (s->caught_up ? WATCH_RING_KEEP : s->st.capacity) + READ_BATCH;
	int n;

	if (s->ring_bad || !w->o.nan)
		return;
	/*
	 * Further behind than one poll's reading: go to the newest slots.
	 * Reading a flat-out producer's whole ring at every poll cost it
	 * ~5% (bench/watch.py); what is skipped is the statistics' part.
	 */
	if (s->caught_up && __mring_observe_skip(s->r, WATCH_RING_KEEP) > 0)
		s->overrun_tick = w->tick;
	do {
		n = mring_read(s->r, ev, READ_BATCH);
		if (n < 0) {
			fprintf(stderr, "mring watch: %s: %s; --nan goes by the statistics "
				"of this segment from now on\n", s->path, mring_strerror(n));
			s->ring_bad = true;
			break;
		}
		for (int i = 0; i < n; i++) {
			int id = ev[i].metric;

			if (ev[i].kind == MRING_EV_LOST && (ev[i].flags & MRING_EVF_OVERRUN))
				s->overrun_tick = w->tick;
			if (ev[i].kind != MRING_EV_VALUE || id < 0)
				continue;
			if (id >= s->nm)
				metrics_grow(w, s);
			if (id < s->nm && s->m[id].nan_watch)
				nan_value(w, s, &s->m[id], &ev[i]);
		}
		budget -= (uint64_t)n < budget ? (uint64_t)n : budget;
	} while (n == READ_BATCH && budget);
	if (!s->caught_up) {
		s->caught_up = true;
		for (int id = 0; id < s->nm; id++)
			if (s->m[id].nan_pending) {
				s->m[id].nan_pending = false;
				nan_fire(w, s, &s->m[id], true);
			}
	}
}

/*
 * Non-finite values the ring cannot show: metrics not ON_STEP, a corrupt
 * ring, or values the watcher was lapped on.  The statistics count them
 * (per epoch, published at the next step).
 */
static void nan_stats(struct watch *w, struct wseg *s, struct wmetric *m)
{
	bool ring = (m->flags & MRING_ON_STEP) && !s->ring_bad;
	uint64_t risen = 0;
	double last;
	uint64_t step;

	if (!m->have_live)
		return;
	if (m->live.epoch == m->nf_epoch)
		risen = m->live.nonfinite - m->nf_live;
	else		/* a new epoch: what the old one counted after our last look */
		risen = (m->have_ep && m->ep.epoch == m->nf_epoch ?
			 m->ep.nonfinite - m->nf_live : 0) + m->live.nonfinite;
	if (risen > m->live.nonfinite + (m->have_ep ? m->ep.nonfinite : 0))
		risen = 0;	/* counters that went backwards: a damaged segment */
	if (!m->seeded)
		risen = 0;	/* counted before we came: only a current NaN counts */
	m->seeded = true;
	m->nf_epoch = m->live.epoch;
	m->nf_live = m->live.nonfinite;
	if (!metric_last(&m->live, m->have_ep ? &m->ep : NULL, &last, &step))
		return;
	if (ring) {
		/* lapped, and the ring did not show this metric's value */
		if (risen && !m->nan_on && w->tick - s->overrun_tick <= 1 &&
		    w->tick - m->ring_nan_tick > 1) {
			m->nan_step = step;
			m->nan_value = last;
			nan_fire(w, s, m, false);
		}
		return;
	}
	if ((risen || !isfinite(last)) && !m->nan_on) {
		m->nan_step = step;
		m->nan_value = isfinite(last) ? NAN : last;
		nan_fire(w, s, m, false);
	} else if (!risen && isfinite(last)) {
		edge(w, s, &m->nan_on, false, "nan", m->name, step, last, "%s is finite again",
		     m->name);
	}
}

/* ---- thresholds ---------------------------------------------------------- */

static const char *const thr_rule[] = { "above", "below", "spike" };

static void thresholds(struct watch *w, struct wseg *s, struct wmetric *m)
{
	double last;
	uint64_t step;

	if (!m->thr_watch || !m->have_live ||
	    !metric_last(&m->live, m->have_ep ? &m->ep : NULL, &last, &step))
		return;
	for (int k = 0; k < w->o.nthr; k++) {
		const struct thr *t = &w->o.thr[k];
		uint64_t bit = UINT64_C(1) << k;
		bool on = m->thr_on & bit, now;
		double mean = m->live.value;

		if (!(m->thr_watch & bit))
			continue;
		if (t->kind == THR_SPIKE) {
			if (!(m->flags & MRING_ON_EPOCH) || (m->flags & (MRING_SUM | MRING_MIN |
									 MRING_MAX))) {
				if (!m->spike_warned)
					fprintf(stderr, "mring watch: %s: %s has no epoch mean (not "
						"ON_EPOCH MEAN); --spike %s=%g ignores it\n", s->path,
						m->name, t->pattern, t->x);
				m->spike_warned = true;
				continue;
			}
			if (m->live.count < WATCH_SPIKE_MIN_COUNT || !(mean > 0))
				continue;	/* no mean to judge by yet: keep the state */
			now = last > t->x * mean;
		} else {
			now = t->kind == THR_ABOVE ? last > t->x : last < t->x;
		}
		if (t->kind == THR_SPIKE)
			edge(w, s, &on, now, "spike", m->name, step, last,
			     "%s is %.3g times its epoch mean %.6g (limit %g)", m->name,
			     last / mean, mean, t->x);
		else
			edge(w, s, &on, now, thr_rule[t->kind], m->name, step, last,
			     "%s %s %g", m->name, now ? (t->kind == THR_ABOVE ? "above" : "below") :
			     (t->kind == THR_ABOVE ? "at or below" : "at or above"), t->x);
		m->thr_on = on ? m->thr_on | bit : m->thr_on & ~bit;
	}
}

/* ---- the producer: stall, crash ----------------------------------------- */

static void progress(struct watch *w, struct wseg *s, double now)
{
	const struct mring_status *st = &s->st;

	if (!s->have_progress || st->step != s->seen_step || st->step_wall_ns != s->seen_wall) {
		int64_t wall = st->step_wall_ns ? st->step_wall_ns : st->created_ns;
		double age = (double)(now_real_ns() - wall) * 1e-9;

		/* on attach, the step's own time says how long it has been */
		s->progress_t = s->have_progress ? now : now - (age > 0 ? age : 0);
		s->have_progress = true;
		s->seen_step = st->step;
		s->seen_wall = st->step_wall_ns;
	}
	s->hist[s->nhist++ % WATCH_HIST] = (typeof(s->hist[0])){ now, st->step };
	(void)w;
}

static void producer_rules(struct watch *w, struct wseg *s, double now)
{
	const struct mring_status *st = &s->st;
	bool crashed = !st->alive && !st->closed;

	s->ended = !st->alive;
	if (w->o.crash)
		edge(w, s, &s->crash_on, crashed || s->crash_on, "crash", NULL, st->step, NAN,
		     "producer %d died without closing", st->pid);
	if (w->o.stall_s > 0) {
		double age = round((now - s->progress_t) * 1000) / 1000;	/* ms */

		if (st->alive)
			edge(w, s, &s->stall_on, age > w->o.stall_s, "stall", NULL, st->step, age,
			     "%s for %.1f s (limit %g s)", age > w->o.stall_s ? "no step" :
			     "stepping again; last step", age, w->o.stall_s);
		else
			edge(w, s, &s->stall_on, false, "stall", NULL, st->step, age,
			     "producer gone (%s)", producer_state(st));
	}
}

/* Seconds per step over the last WATCH_RATE_WINDOW_S; -1: not known yet. */
static double seconds_per_step(const struct wseg *s, double now)
{
	unsigned n = s->nhist < WATCH_HIST ? s->nhist : WATCH_HIST;

	for (unsigned i = n; i-- > 1;) {
		unsigned k = (s->nhist - 1 - i) % WATCH_HIST;	/* i samples ago */
		double dt = now - s->hist[k].t;

		if (dt > WATCH_RATE_WINDOW_S && i > 1)
			continue;
		if (dt < WATCH_RATE_MIN_S)
			return -1;
		if (s->st.step <= s->hist[k].step)
			return dt;	/* no step in the window: at least this slow */
		return dt / (double)(s->st.step - s->hist[k].step);
	}
	return -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* --lag and --lag-factor: the alive producers of one run, compared. */
static void lag_rules(struct watch *w, double now)
{
	double *others = calloc((size_t)w->nsegs + 1, sizeof(*others));

	if (!others)
		return;
	for (int i = 0; i < w->nsegs; i++) {
		struct wseg *s = &w->segs[i];
		uint64_t lead = 0;
		int lead_rank = -1, peers = 0, n = 0;
		bool behind, slow = false;

		if (!s->r || !s->have_st)
			continue;
		s->spt = s->st.alive ? seconds_per_step(s, now) : -1;
		for (int k = 0; k < w->nsegs; k++) {
			const struct wseg *t = &w->segs[k];

			if (k == i || !t->r || !t->have_st || !t->st.alive ||
			    strcmp(t->st.run, s->st.run))
				continue;
			peers++;
			if (t->st.step > lead || lead_rank < 0) {
				lead = t->st.step;
				lead_rank = t->st.rank;
			}
			if (t->spt > 0)
				others[n++] = t->spt;
		}
		if (!s->st.alive || !peers) {
			edge(w, s, &s->lag_on, false, "lag", NULL, s->st.step, 0,
			     "no other alive rank of run %s to compare with", s->st.run);
			edge(w, s, &s->lagf_on, false, "lag", NULL, s->st.step, 0,
			     "no other alive rank of run %s to compare with", s->st.run);
			continue;
		}
		behind = w->o.lag && lead > s->st.step && lead - s->st.step > w->o.lag_steps;
		if (w->o.lag)
			edge(w, s, &s->lag_on, behind, "lag", NULL, s->st.step,
			     lead > s->st.step ? (double)(lead - s->st.step) : 0,
			     "rank %d is %llu steps behind rank %d (step %llu; limit %llu)",
			     s->st.rank, (unsigned long long)(lead > s->st.step ? lead - s->st.step : 0),
			     lead_rank, (unsigned long long)lead, (unsigned long long)w->o.lag_steps);
		if (w->o.lag_factor > 0 && s->spt > 0 && n) {
			double med;

			qsort(others, (size_t)n, sizeof(*others), cmp_double);
			med = n % 2 ? others[n / 2] : (others[n / 2 - 1] + others[n / 2]) / 2;
			slow = s->spt > w->o.lag_factor * med;
			edge(w, s, &s->lagf_on, slow, "lag", NULL, s->st.step, s->spt / med,
			     "rank %d takes %.3g s per step, %.3g times the other ranks' median "
			     "%.3g s (limit %g)", s->st.rank, s->spt, s->spt / med, med,
			     w->o.lag_factor);
		}
	}
	free(others);
}

static void seg_poll(struct watch *w, struct wseg *s, double now)
{
	if (!s->r)
		return;
	if (mring_status_read(s->r, &s->st) < 0)
		return;
	s->have_st = true;
	metrics_grow(w, s);
	/* statistics first: the ring then holds at least what they counted */
	stats_read(s);
	ring_read(w, s);
	for (int id = 0; id < s->nm; id++) {
		if (s->m[id].nan_watch)
			nan_stats(w, s, &s->m[id]);
		thresholds(w, s, &s->m[id]);
	}
	progress(w, s, now);
	producer_rules(w, s, now);
}

/* ---- command line ------------------------------------------------------ */

static int bad(const char *opt, const char *arg, const char *want)
{
	fprintf(stderr, "mring watch: %s: %s: %s (see mring watch --help)\n", opt, arg, want);
	return -EINVAL;
}

static int parse_seconds(const char *opt, const char *arg, double min, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(arg, &end);
	if (errno || end == arg || *end || !isfinite(*out) || *out < min || *out > 1e9) {
		char want[64];

		snprintf(want, sizeof(want), "not a number of seconds from %g", min);
		return bad(opt, arg, want);
	}
	return 0;
}

static int parse_thr(struct watch_opts *o, enum thr_kind kind, const char *opt,
		     const char *arg)
{
	const char *eq = strrchr(arg, '=');
	struct thr *t;
	char *end;

	if (o->nthr == WATCH_MAX_THRESHOLDS)
		return bad(opt, arg, "more than 64 --above, --below and --spike rules");
	if (!eq || eq == arg)
		return bad(opt, arg, "not METRIC=NUMBER");
	t = &o->thr[o->nthr];
	errno = 0;
	t->x = strtod(eq + 1, &end);
	if (errno || end == eq + 1 || *end || !isfinite(t->x))
		return bad(opt, arg, "not METRIC=NUMBER (a finite number)");
	if (kind == THR_SPIKE && !(t->x > 0))
		return bad(opt, arg, "K must be above 0");
	t->pattern = strndup(arg, (size_t)(eq - arg));
	if (!t->pattern)
		return -ENOMEM;
	t->kind = kind;
	o->nthr++;
	return 0;
}

static int parse_nan(struct watch_opts *o, const char *arg)
{
	char *list, *tok, *save = NULL;

	o->nan = true;
	if (!arg)
		return 0;
	list = strdup(arg);
	if (!list)
		return -ENOMEM;
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char **p = realloc(o->nan_pats, (size_t)(o->n_nan_pats + 1) * sizeof(*p));

		if (!p || !(p[o->n_nan_pats] = strdup(tok))) {
			free(list);
			return -ENOMEM;
		}
		o->nan_pats = p;
		o->n_nan_pats++;
	}
	free(list);
	if (!o->n_nan_pats)
		return bad("--nan", arg, "no metric name");
	return 0;
}

static int parse_count(const char *opt, const char *arg, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v > max) {
		char want[64];

		snprintf(want, sizeof(want), "not a whole number from 0 to %llu",
			 (unsigned long long)max);
		return bad(opt, arg, want);
	}
	*out = v;
	return 0;
}

static bool any_rule(const struct watch_opts *o)
{
	return o->nan || o->stall_s > 0 || o->lag || o->lag_factor > 0 || o->nthr || o->crash;
}

static int parse_args(struct watch *w, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "nan", optional_argument, NULL, 'n' },
		{ "stall", required_argument, NULL, 's' },
		{ "lag", required_argument, NULL, 'l' },
		{ "lag-factor", required_argument, NULL, 'L' },
		{ "above", required_argument, NULL, 'a' },
		{ "below", required_argument, NULL, 'b' },
		{ "spike", required_argument, NULL, 'k' },
		{ "crash", no_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "exec", required_argument, NULL, 'e' },
		{ "exec-limit", required_argument, NULL, 'E' },
		{ "exec-timeout", required_argument, NULL, 'T' },
		{ "signal", required_argument, NULL, 'S' },
		{ "exit", no_argument, NULL, 'x' },
		{ "dump", required_argument, NULL, 'd' },
		{ "dump-steps", required_argument, NULL, 'D' },
		{ "interval", required_argument, NULL, 'i' },
		{ "until-done", no_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct watch_opts *o = &w->o;
	uint64_t v;
	int c, ret = 0;

	o->exec_limit = 10;
	o->exec_timeout_s = 60;
	o->dump_steps = 100;
	o->interval_s = 0.1;
	optind = 1;
	while (!ret && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n': ret = parse_nan(o, optarg); break;
		case 's': ret = parse_seconds("--stall", optarg, 0.001, &o->stall_s); break;
		case 'l':
			o->lag = true;
			ret = parse_count("--lag", optarg, UINT64_MAX, &o->lag_steps);
			break;
		case 'L':
			ret = parse_seconds("--lag-factor", optarg, 1, &o->lag_factor);
			if (!ret && o->lag_factor <= 1)
				ret = bad("--lag-factor", optarg, "must be above 1");
			break;
		case 'a': ret = parse_thr(o, THR_ABOVE, "--above", optarg); break;
		case 'b': ret = parse_thr(o, THR_BELOW, "--below", optarg); break;
		case 'k': ret = parse_thr(o, THR_SPIKE, "--spike", optarg); break;
		case 'c': o->crash = true; break;
		case 'j': o->json = true; break;
		case 'e':
			o->exec = optarg;
			if (!*optarg)
				ret = bad("--exec", optarg, "an empty command");
			break;
		case 'E':
			ret = parse_count("--exec-limit", optarg, 100000, &v);
			if (!ret && !v)
				ret = bad("--exec-limit", optarg, "must be at least 1");
			if (!ret)
				o->exec_limit = (double)v;
			break;
		case 'T': ret = parse_seconds("--exec-timeout", optarg, 0.001, &o->exec_timeout_s); break;
		case 'S':
			o->sig = parse_signal(optarg);
			if (o->sig <= 0)
				ret = bad("--signal", optarg, "not a signal name or number");
			break;
		case 'x': o->exit_first = true; break;
		case 'd':
			o->dump_dir = optarg;
			if (!*optarg)
				ret = bad("--dump", optarg, "an empty directory name");
			break;
		case 'D':
			ret = parse_count("--dump-steps", optarg, 1 << 24, &o->dump_steps);
			if (!ret && !o->dump_steps)
				ret = bad("--dump-steps", optarg, "must be at least 1");
			break;
		case 'i': ret = parse_seconds("--interval", optarg, 0.001, &o->interval_s); break;
		case 'u': o->until_done = true; break;
		case 'h':
			fputs(watch_usage, stdout);
			return 1;
		default:
			fputs("see `mring watch --help`\n", stderr);
			return -EINVAL;
		}
	}
	if (ret)
		return ret;
	if (optind >= argc) {
		fprintf(stderr, "mring watch: no SEGMENT given\n%s", watch_usage);
		return -EINVAL;
	}
	if (!any_rule(o)) {
		o->nan = o->crash = true;
		fprintf(stderr, "mring watch: no rule given: watching for --nan and --crash\n");
	}
	w->args = argv + optind;
	w->nargs = argc - optind;
	return 0;
}

static void watch_free(struct watch *w)
{
	for (int i = 0; i < w->nsegs; i++) {
		seg_close(&w->segs[i]);
		free(w->segs[i].path);
	}
	free(w->segs);
	for (int i = 0; i < w->o.n_nan_pats; i++)
		free(w->o.nan_pats[i]);
	free(w->o.nan_pats);
	for (int i = 0; i < w->o.nthr; i++)
		free(w->o.thr[i].pattern);
}

/* --until-done: every segment's producer is gone (files that are not
 * segments do not count); false while there is none */
static bool all_done(const struct watch *w)
{
	int watched = 0;

	for (int i = 0; i < w->nsegs; i++) {
		if (!w->segs[i].r)
			continue;
		if (!w->segs[i].have_st || !w->segs[i].ended)
			return false;
		watched++;
	}
	return watched > 0;
}

/* One descriptor per segment: as many as the hard limit allows (the
 * usual soft limit of 1024 would cap a watcher near 1,000 segments). */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void sleep_until(double t)
{
	double d = t - now_mono();
	struct timespec ts;

	if (d <= 0)
		return;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);	/* a signal ends it early: the loop checks */
}

int cmd_watch(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	struct watch w = { 0 };
	int ret, status = 0;
	double next;

	ret = parse_args(&w, argc, argv);
	if (ret) {
		watch_free(&w);
		return ret > 0 ? 0 : EXIT_USAGE;
	}
	if (act_init(&w.o) < 0) {
		watch_free(&w);
		return EXIT_USAGE;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	w.start_ns = now_real_ns();
	next = now_mono();
	while (!watch_stop) {
		double now = now_mono();

		w.tick++;
		rescan(&w);
		for (int i = 0; i < w.nsegs; i++)
			seg_poll(&w, &w.segs[i], now);
		if (w.o.lag || w.o.lag_factor > 0)
			lag_rules(&w, now);
		act_tick(&w.o);
		if (act_fired() && w.o.exit_first) {
			status = EXIT_ALERT;
			break;
		}
		if (w.o.until_done && all_done(&w))
			break;
		next += w.o.interval_s;
		if (next < now)
			next = now;	/* fell behind: do not try to catch up */
		sleep_until(next);
	}
	/*
	 * --exit: the alert's actions complete (an --exec within its
	 * timeout); stopped by a signal: a few seconds for the dumps.
	 */
	act_finish(&w.o, status == EXIT_ALERT ? w.o.exec_timeout_s + 1 : WATCH_STOP_WAIT_S);
	watch_free(&w);
	return status;
}
