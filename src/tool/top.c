// SPDX-License-Identifier: MIT
/*
 * top.c - mring top: a full-screen live view of segments and their metrics.
 *
 * Observers only (MRING_OBSERVE: read-only, never moves the drain
 * position), so any number of `mring top` can watch a run next to its
 * drainer.  Every read is non-blocking: a producer that died or stopped
 * never holds the view up.  The SEGMENT|GLOB arguments are expanded again
 * every second, so new segments appear and removed files disappear
 * without a restart.  See docs/top.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curses.h>

#include "tool.h"

int cmd_top(int argc, char **argv);

#define TOP_REFRESH_MS	250	/* screen refresh and key poll */
#define TOP_RESCAN_S	1.0	/* glob re-expansion */
#define TOP_RATE_S	1.0	/* minimum window of the rate estimates */
#define TOP_STALE_S	5.0	/* alive, but no step for this long: stale */
#define TOP_HIST	20	/* sparkline length */
#define TOP_READ_BATCH	512
#define TOP_READ_ROUNDS	64	/* bound on mring_read calls per segment per tick */

static const char top_usage[] =
	"usage: mring top [--all-users] [SEGMENT|GLOB]...\n"
	"A full-screen live view of segments (default: every segment in $MRING_DIR,\n"
	"or /dev/shm) and their metrics, refreshed 4 times a second.  Read-only:\n"
	"it observes the rings and never drains them.  New segments matching the\n"
	"arguments appear without a restart.  Only segments of the tool's user\n"
	"are shown unless --all-users is given.\n"
	"\n"
	"Per segment: run, rank, producer state (alive, stale = alive but no step\n"
	"for 5 s, closed, crashed), step, epoch, steps/s, records/s, ring fill,\n"
	"dropped and overwritten records.  Per metric: last value, the live epoch\n"
	"reduction, min, max, count, non-finite count (highlighted), the last\n"
	"completed epoch's value, and a sparkline of recent values.\n"
	"\n"
	"Keys: q quit;  a  toggle all metrics (progress-bar ones first, the\n"
	"default) / progress-bar metrics only;  /  filter metrics by name\n"
	"(Enter applies, Esc clears).\n";

struct top_metric {
	char name[64];
	unsigned flags;
	int have_stats, have_epoch;
	struct mring_stats live, ep;
	double hist[TOP_HIST];	/* ring of recent values */
	int nhist, hpos;
};

struct top_seg {
	char *path;
	const char *base;
	struct mring_reader *r;	/* NULL: not (yet) a readable segment */
	dev_t dev;
	ino_t ino;
	off_t size;		/* at attach: a smaller file was truncated */
	int keep;		/* still matched at the last rescan */
	int have_st;
	struct mring_status st;
	/* rates */
	int have_prev;
	uint64_t prev_step, prev_written;
	double prev_t, steps_s, recs_s;
	struct top_metric *m;
	int nm;
};

struct top {
	char **args;
	int nargs;
	struct top_seg *segs;
	int nsegs;
	double last_scan;
	int bar_only;
	char filter[64];
	int editing;
	char edit[64];
	int utf8;
	int colors;
	int all_users;		/* --all-users: also other users' segments */
};

static volatile sig_atomic_t top_stop;

static void top_on_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

/* ---- segments -------------------------------------------------------- */

static void seg_close(struct top_seg *s)
{
	mring_reader_close(s->r);
	s->r = NULL;
	free(s->m);
	s->m = NULL;
	s->nm = 0;
	s->have_st = 0;
	s->have_prev = 0;
}

static void seg_free(struct top_seg *s)
{
	seg_close(s);
	free(s->path);
}

static void seg_open(struct top_seg *s)
{
	struct stat sb;

	if (stat(s->path, &sb) < 0)
		return;
	if (mring_reader_open(s->path, MRING_OBSERVE, &s->r) < 0) {
		s->r = NULL;	/* not a segment, or being created: retry later */
		return;
	}
	s->dev = sb.st_dev;
	s->ino = sb.st_ino;
	s->size = sb.st_size;
}

static int seg_cmp(const void *a, const void *b)
{
	return strcmp(((const struct top_seg *)a)->path, ((const struct top_seg *)b)->path);
}

/* Expand the arguments again: add new matches, drop vanished files,
 * reopen a path whose file was replaced (a new run of the same name). */
static void top_rescan(struct top *t)
{
	char *star = "*";
	struct seglist l;
	struct stat sb;
	int i, k;

	if (seglist_expand(&l, t->nargs ? t->args : &star, t->nargs ? t->nargs : 1) < 0)
		memset(&l, 0, sizeof(l));
	for (i = 0; i < t->nsegs; i++)
		t->segs[i].keep = 0;
	for (k = 0; k < l.n; k++) {
		/* another user's segment only on request (--all-users) */
		if (!t->all_users && (stat(l.paths[k], &sb) < 0 || sb.st_uid != geteuid()))
			continue;
		for (i = 0; i < t->nsegs; i++)
			if (!strcmp(t->segs[i].path, l.paths[k]))
				break;
		if (i == t->nsegs) {
			struct top_seg *p = realloc(t->segs, (size_t)(t->nsegs + 1) * sizeof(*p));

			if (!p)
				continue;
			t->segs = p;
			memset(&p[i], 0, sizeof(p[i]));
			p[i].path = strdup(l.paths[k]);
			if (!p[i].path)
				continue;
			t->nsegs++;
		}
		t->segs[i].keep = 1;
	}
	seglist_free(&l);
	for (i = 0; i < t->nsegs;) {
		struct top_seg *s = &t->segs[i];

		if (!s->keep) {
			seg_free(s);
			memmove(s, s + 1, (size_t)(t->nsegs - i - 1) * sizeof(*s));
			t->nsegs--;
			continue;
		}
		if (s->r && (stat(s->path, &sb) < 0 || sb.st_ino != s->ino ||
			     sb.st_dev != s->dev || sb.st_size < s->size))
			seg_close(s);
		if (!s->r)
			seg_open(s);
		i++;
	}
	if (t->nsegs > 1)
		qsort(t->segs, (size_t)t->nsegs, sizeof(*t->segs), seg_cmp);
	for (i = 0; i < t->nsegs; i++) {
		const char *b = strrchr(t->segs[i].path, '/');

		t->segs[i].base = b ? b + 1 : t->segs[i].path;
	}
}

static void hist_push(struct top_metric *m, double v)
{
	m->hist[m->hpos] = v;
	m->hpos = (m->hpos + 1) % TOP_HIST;
	if (m->nhist < TOP_HIST)
		m->nhist++;
}

static void seg_poll(struct top_seg *s, double now)
{
	struct mring_event ev[TOP_READ_BATCH];
	int n, id;

	if (!s->r)
		return;
	if (mring_status_read(s->r, &s->st) == 0) {
		s->have_st = 1;
		if (!s->have_prev) {
			s->have_prev = 1;
			s->prev_t = now;
			s->prev_step = s->st.step;
			s->prev_written = s->st.written;
			s->steps_s = s->recs_s = 0;
		} else if (now - s->prev_t >= TOP_RATE_S) {
			double dt = now - s->prev_t;

			s->steps_s = s->st.step >= s->prev_step ?
				(double)(s->st.step - s->prev_step) / dt : 0;
			s->recs_s = s->st.written >= s->prev_written ?
				(double)(s->st.written - s->prev_written) / dt : 0;
			s->prev_t = now;
			s->prev_step = s->st.step;
			s->prev_written = s->st.written;
		}
	}
	n = mring_metric_count(s->r);
	if (n > s->nm) {
		struct top_metric *p = realloc(s->m, (size_t)n * sizeof(*p));

		if (p) {
			s->m = p;
			for (id = s->nm; id < n; id++) {
				memset(&p[id], 0, sizeof(p[id]));
				if (mring_metric_info(s->r, id, p[id].name, sizeof(p[id].name),
						      &p[id].flags) < 0)
					snprintf(p[id].name, sizeof(p[id].name), "#%d", id);
			}
			s->nm = n;
		}
	}
	for (id = 0; id < s->nm; id++) {
		struct top_metric *m = &s->m[id];
		struct mring_stats st;
		int ret = mring_stats_read(s->r, id, &st);

		if (ret == -EAGAIN)
			ret = mring_stats_read(s->r, id, &st);
		if (ret == 0) {
			m->live = st;
			m->have_stats = 1;
		}
		if (mring_epoch_read(s->r, id, &st) == 0) {
			m->ep = st;
			m->have_epoch = 1;
		}
	}
	/* Recent values, observed (never drained); bounded work per tick. */
	for (int round = 0; round < TOP_READ_ROUNDS; round++) {
		n = mring_read(s->r, ev, TOP_READ_BATCH);
		if (n <= 0)
			break;
		for (int i = 0; i < n; i++) {
			id = ev[i].metric;
			if (id < 0 || id >= s->nm)
				continue;
			if (ev[i].kind == MRING_EV_VALUE ||
			    (ev[i].kind == MRING_EV_EPOCH_VALUE && !(s->m[id].flags & MRING_ON_STEP)))
				hist_push(&s->m[id], ev[i].value);
		}
		if (n < TOP_READ_BATCH)
			break;
	}
}

/* ---- drawing --------------------------------------------------------- */

enum { PAIR_OK = 1, PAIR_WARN, PAIR_BAD, PAIR_DIM };

/* Print at (y, *x), clipped to the screen width; never wraps. */
static void put(int y, int *x, attr_t attr, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int room = COLS - *x;

	if (y >= LINES || room <= 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if ((int)strlen(buf) > room)
		buf[room] = 0;
	if (attr)
		attron(attr);
	mvaddstr(y, *x, buf);
	if (attr)
		attroff(attr);
	*x += (int)strlen(buf);
}

/*
 * A number in at most @width columns: 9 significant digits, fewer when
 * it would not fit (-1.23456789e+300 is 16 wide), so columns never shift.
 */
static void fmt_fit(char *buf, size_t len, double v, int width)
{
	for (int prec = 9; prec >= 1; prec--) {
		snprintf(buf, len, "%.*g", prec, v);
		if ((int)strlen(buf) <= width)
			return;
	}
}

static void fmt_num(char *buf, size_t len, double v)
{
	if (isnan(v))
		snprintf(buf, len, "%s", "-");
	else
		fmt_fit(buf, len, v, 13);
}

/* A rate in at most 9 columns: 123456.7, 1.23M, 4.56G. */
static void fmt_rate(char *buf, size_t len, double v)
{
	if (v < 1e6)
		snprintf(buf, len, "%.1f", v);
	else if (v < 1e9)
		snprintf(buf, len, "%.2fM", v / 1e6);
	else
		snprintf(buf, len, "%.2fG", v / 1e9);
}

static void draw_spark(const struct top *t, int y, int x, const struct top_metric *m)
{
	static const char *const blocks[8] = { "\u2581", "\u2582", "\u2583", "\u2584",
					       "\u2585", "\u2586", "\u2587", "\u2588" };
	static const char ascii[] = "_.-~=+*#";
	double lo = NAN, hi = NAN;
	int i;

	for (i = 0; i < m->nhist; i++) {
		double v = m->hist[(m->hpos - m->nhist + i + TOP_HIST) % TOP_HIST];

		if (!isfinite(v))
			continue;
		if (!(v >= lo))
			lo = v;
		if (!(v <= hi))
			hi = v;
	}
	for (i = 0; i < m->nhist && x < COLS - 1; i++, x++) {
		double v = m->hist[(m->hpos - m->nhist + i + TOP_HIST) % TOP_HIST];
		int lvl;

		if (!isfinite(v)) {
			mvaddstr(y, x, "!");
			continue;
		}
		lvl = hi > lo ? (int)((v - lo) / (hi - lo) * 7.0 + 0.5) : 3;
		if (lvl < 0)
			lvl = 0;
		if (lvl > 7)
			lvl = 7;
		if (t->utf8)
			mvaddstr(y, x, blocks[lvl]);
		else
			mvaddch(y, x, (chtype)ascii[lvl]);
	}
}

static attr_t color(const struct top *t, int pair)
{
	return t->colors ? COLOR_PAIR(pair) : 0;
}

/* State text and attribute of a segment. */
static const char *seg_state(const struct top *t, const struct top_seg *s, int64_t now_ns,
			     attr_t *attr)
{
	if (!s->have_st) {
		*attr = color(t, PAIR_DIM);
		return "?";
	}
	if (s->st.alive) {
		if (s->st.step_wall_ns > 0 &&
		    (double)(now_ns - s->st.step_wall_ns) > TOP_STALE_S * 1e9) {
			*attr = A_BOLD | color(t, PAIR_WARN);
			return "stale";
		}
		*attr = color(t, PAIR_OK);
		return "alive";
	}
	if (s->st.closed) {
		*attr = color(t, PAIR_DIM);
		return "closed";
	}
	*attr = A_BOLD | A_REVERSE | color(t, PAIR_BAD);
	return "crashed";
}

static int metric_shown(const struct top *t, const struct top_metric *m)
{
	if (t->bar_only && !(m->flags & MRING_PROG_BAR))
		return 0;
	if (t->filter[0] && !strcasestr(m->name, t->filter))
		return 0;
	return 1;
}

static int draw_metrics(const struct top *t, const struct top_seg *s, int y)
{
	int shown = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (int id = 0; id < s->nm && y < LINES - 1; id++) {
			const struct top_metric *m = &s->m[id];
			char last[24], now[24], mn[24], mx[24], epv[32];
			int x = 2, bar = !!(m->flags & MRING_PROG_BAR), has_last;
			uint64_t last_step;
			double lastv = NAN;

			/* progress-bar metrics first */
			if (bar != (pass == 0) || !metric_shown(t, m))
				continue;
			shown++;
			/* kept across epoch ends; "-" when never logged */
			has_last = metric_last(m->have_stats ? &m->live : NULL,
					       m->have_epoch ? &m->ep : NULL, &lastv, &last_step);
			if (!has_last)
				lastv = NAN;
			fmt_num(last, sizeof(last), lastv);
			fmt_num(now, sizeof(now), m->have_stats ? m->live.value : NAN);
			fmt_num(mn, sizeof(mn), m->have_stats ? m->live.min : NAN);
			fmt_num(mx, sizeof(mx), m->have_stats ? m->live.max : NAN);
			if (m->have_epoch) {
				char at[16];

				snprintf(at, sizeof(at), "@%u", m->ep.epoch);
				fmt_fit(epv, sizeof(epv), m->ep.value, 16 - (int)strlen(at));
				strcat(epv, at);
			} else {
				snprintf(epv, sizeof(epv), "-");
			}
			if (has_last && isnan(lastv))
				snprintf(last, sizeof(last), "nan");	/* a logged NaN */
			else if (has_last && isinf(lastv))
				snprintf(last, sizeof(last), "%s", lastv > 0 ? "inf" : "-inf");
			move(y, 0);
			clrtoeol();
			/* what matters first within 80 columns: the value,
			 * non-finite values, the epoch figures */
			put(y, &x, bar ? A_BOLD : 0, "%-20.20s", m->name);
			put(y, &x, 0, " %13s ", last);
			if (m->have_stats && m->live.nonfinite)
				put(y, &x, A_BOLD | A_REVERSE | color(t, PAIR_BAD), "%6llu",
				    (unsigned long long)m->live.nonfinite);
			else
				put(y, &x, 0, "%6d", 0);
			put(y, &x, 0, " %13s %16s %9llu %13s %13s  ",
			    (m->flags & MRING_ON_EPOCH) ? now : "-", epv,
			    (unsigned long long)(m->have_stats ? m->live.count : 0), mn, mx);
			draw_spark(t, y, x, m);
			y++;
		}
	}
	if (!shown && y < LINES - 1) {
		int x = 2;

		put(y, &x, color(t, PAIR_DIM), "%s",
		    t->bar_only ? "(no progress-bar metric matches; press a to show all)" :
		    t->filter[0] ? "(no metric matches the filter)" : "(no metrics yet)");
		y++;
	}
	return y;
}

static void top_draw(const struct top *t)
{
	int64_t now_ns = now_real_ns();
	int y = 0, x = 0, i, nseg = 0;
	char tbuf[32];
	time_t tt = time(NULL);
	struct tm tm;

	erase();
	localtime_r(&tt, &tm);
	strftime(tbuf, sizeof(tbuf), "%H:%M:%S", &tm);
	put(y, &x, A_BOLD, "mring top");
	for (i = 0; i < t->nsegs; i++)
		nseg += t->segs[i].r != NULL;
	put(y, &x, 0, "  %s  %d segment%s  view: %s  filter: %s", tbuf, nseg,
	    nseg == 1 ? "" : "s", t->bar_only ? "progress-bar only" : "all",
	    t->filter[0] ? t->filter : "-");
	y++;
	x = 0;
	if (t->editing) {
		put(y, &x, A_BOLD, "filter> %s_", t->edit);
		put(y, &x, 0, "   (Enter applies, Esc clears)");
	} else {
		put(y, &x, color(t, PAIR_DIM), "q quit   a all/progress-bar metrics   / filter by name");
	}
	y += 2;
	x = 0;
	/* the first 74 columns say whether a run is healthy: 80 is enough */
	put(y, &x, A_BOLD, "%-20s %-7s %12s %5s %9s %6s %9s %4s %8s %10s %9s %-16s",
	    "SEGMENT", "STATE", "STEP", "EPOCH", "STEPS/S", "FILL", "DROPPED", "RANK", "PID",
	    "RECS/S", "OVERWR", "RUN");
	y++;
	if (!nseg && y < LINES) {
		x = 0;
		put(y, &x, color(t, PAIR_DIM), "(no segment matches yet; waiting)");
		y++;
	}
	for (i = 0; i < t->nsegs && y < LINES; i++) {
		const struct top_seg *s = &t->segs[i];
		const struct mring_status *st = &s->st;
		const char *state;
		char sps[24], rps[24];
		attr_t attr;
		double fill;

		x = 0;
		if (!s->r || !s->have_st)
			continue;	/* not a segment (or still being created) */
		state = seg_state(t, s, now_ns, &attr);
		fill = st->capacity ? (double)(st->written - st->read) / (double)st->capacity : 0;
		if (fill > 1)
			fill = 1;
		put(y, &x, 0, "%-20.20s ", s->base);
		put(y, &x, attr, "%-7s", state);
		fmt_rate(sps, sizeof(sps), s->steps_s);
		fmt_rate(rps, sizeof(rps), s->recs_s);
		put(y, &x, 0, " %12llu %5u %9s %5.1f%% %9llu %4d %8d %10s %9llu %-16.16s",
		    (unsigned long long)st->step, st->epoch, sps, fill * 100,
		    (unsigned long long)st->dropped, st->rank, st->pid, rps,
		    (unsigned long long)st->overwritten, st->run);
		if (!strcmp(state, "stale"))
			put(y, &x, attr, "  no step for %.0fs",
			    (double)(now_ns - st->step_wall_ns) * 1e-9);
		y++;
	}
	for (i = 0; i < t->nsegs && y < LINES - 2; i++) {
		const struct top_seg *s = &t->segs[i];

		if (!s->r || !s->have_st)
			continue;
		y++;
		x = 0;
		put(y, &x, A_BOLD, "== %s", s->base);
		put(y, &x, 0, "  run %s  rank %d", s->st.run, s->st.rank);
		y++;
		x = 2;
		put(y, &x, A_UNDERLINE, "%-20s %13s %6s %13s %16s %9s %13s %13s  %-20s", "METRIC",
		    "LAST", "NONFIN", "EPOCH-NOW", "LAST-EPOCH", "COUNT", "MIN", "MAX", "RECENT");
		y++;
		y = draw_metrics(t, s, y);
	}
	refresh();
}

/* ---- keys ------------------------------------------------------------ */

/* Returns 1 to quit. */
static int top_key(struct top *t, int ch)
{
	if (t->editing) {
		size_t n = strlen(t->edit);

		if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
			snprintf(t->filter, sizeof(t->filter), "%s", t->edit);
			t->editing = 0;
		} else if (ch == 27) {	/* Esc */
			t->filter[0] = t->edit[0] = 0;
			t->editing = 0;
		} else if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
			if (n)
				t->edit[n - 1] = 0;
		} else if (ch >= 32 && ch < 127 && n + 1 < sizeof(t->edit)) {
			t->edit[n] = (char)ch;
			t->edit[n + 1] = 0;
		}
		return 0;
	}
	switch (ch) {
	case 'q':
	case 'Q':
		return 1;
	case 'a':
	case 'A':
		t->bar_only = !t->bar_only;
		break;
	case '/':
		t->editing = 1;
		snprintf(t->edit, sizeof(t->edit), "%s", t->filter);
		break;
	case 27:
		t->filter[0] = 0;
		break;
	default:
		break;
	}
	return 0;
}

int cmd_top(int argc, char **argv)
{
	struct top t;
	struct sigaction sa;
	int i, quit = 0;
	double next_draw = 0;

	memset(&t, 0, sizeof(t));
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(top_usage, stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--all-users")) {
			t.all_users = 1;
			memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(*argv));
			argc--;
			i--;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "mring top: unknown option '%s' (see mring top --help)\n",
				argv[i]);
			return EXIT_USAGE;
		}
	}
	t.args = argv + 1;
	t.nargs = argc - 1;
	if (t.nargs && !strcmp(t.args[0], "--")) {
		t.args++;
		t.nargs--;
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		fprintf(stderr, "mring top: needs a terminal (use `mring stat` or `mring ls` "
			"in scripts)\n");
		return EXIT_USAGE;
	}
	setlocale(LC_ALL, "");
	t.utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
	/* Esc in the filter prompt should act at once, not after a second. */
	if (!getenv("ESCDELAY"))
		set_escdelay(25);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = top_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (!initscr()) {
		fprintf(stderr, "mring top: cannot initialize the terminal\n");
		return EXIT_USAGE;
	}
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	curs_set(0);
	timeout(TOP_REFRESH_MS);
	if (has_colors()) {
		start_color();
		use_default_colors();
		init_pair(PAIR_OK, COLOR_GREEN, -1);
		init_pair(PAIR_WARN, COLOR_YELLOW, -1);
		init_pair(PAIR_BAD, COLOR_RED, -1);
		init_pair(PAIR_DIM, COLOR_CYAN, -1);
		t.colors = 1;
	}

	t.last_scan = -1e9;
	while (!quit && !top_stop) {
		double now = now_mono();
		int ch;

		if (now - t.last_scan >= TOP_RESCAN_S) {
			top_rescan(&t);
			t.last_scan = now;
		}
		if (now >= next_draw) {
			for (i = 0; i < t.nsegs; i++)
				seg_poll(&t.segs[i], now);
			top_draw(&t);
			next_draw = now + TOP_REFRESH_MS / 1000.0;
		}
		ch = getch();
		while (ch != ERR && !quit) {
			if (ch != KEY_RESIZE)
				quit = top_key(&t, ch);
			next_draw = 0;	/* show the effect of a key at once */
			timeout(0);
			ch = getch();
		}
		timeout(TOP_REFRESH_MS);
	}
	endwin();
	for (i = 0; i < t.nsegs; i++)
		seg_free(&t.segs[i]);
	free(t.segs);
	return 0;
}
