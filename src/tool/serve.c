// SPDX-License-Identifier: MIT
/*
 * serve.c - mring serve: a Prometheus endpoint (/metrics, text format
 * 0.0.4) over every segment that matches the arguments.
 *
 * Threads:
 *  - main: the accept loop.  Each connection gets its own detached worker
 *    thread (at most MAX_CONNS at once, PEER_CONNS per client address, and
 *    the last RESERVED_CONNS only for an address that holds none: one
 *    client cannot lock Prometheus out; the rest get 503), whose socket has
 *    receive and send timeouts and whose request has an overall deadline,
 *    so a slow or hostile client holds only its own thread.
 *  - discovery: re-expands the arguments every --interval seconds, opens
 *    new segments as observers, replaces a segment whose file was
 *    replaced, removes one whose file vanished.
 *  - call_rcu worker (liburcu's): closes and frees removed segments after
 *    a grace period.
 *
 * The registry is a cds_lfht (liburcu-cds) under the memb flavour,
 * keyed by path.  Only the discovery thread changes it (add_replace,
 * del); scrapers iterate it inside urcu_memb_read_lock(), take no lock,
 * and copy what they need before they unlock, so a segment is never
 * unmapped under them.
 *
 * Sharing a reader handle between concurrent scrapers: they call only
 * mring_status_read(), mring_metric_count(), mring_metric_info(),
 * mring_stats_read() and mring_epoch_read().  These (src/stats.c) read
 * the shared mapping and the handle's fields fixed at open (hdr, metrics,
 * ring, fd, id, capacity, max_metrics, flags) and write nothing in the
 * handle; the only syscall is the F_OFD_GETLK probe of the producer lock,
 * which is stateless.  mring_read(), which moves the handle's position,
 * is never called here.  The producer is never touched: observers map
 * the segment read-only and the hot path has no reader-side state.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>

#include "sink.h"
#include "text.h"
#include "tool.h"

int cmd_serve(int argc, char **argv);

#define DEFAULT_LISTEN	"127.0.0.1:9464"
#define MAX_CONNS	64		/* concurrent connections */
#define PEER_CONNS	16		/* of them from one client address */
#define RESERVED_CONNS	8		/* the last ones: for a new address only */
#define REQ_MAX		8192		/* request line + headers */
#define IO_TIMEOUT_MS	5000		/* whole request; each send */

/* ---- registry ----------------------------------------------------------- */

struct seg {
	struct cds_lfht_node node;
	struct rcu_head rh;
	char *path;
	const char *name;		/* basename of path */
	dev_t dev;
	ino_t ino;
	off_t size;		/* at attach: a smaller file was truncated */
	struct mring_reader *r;
	unsigned gen;			/* discovery thread only */
};

/*
 * ThreadSanitizer cannot see liburcu's ordering: Debian's liburcu is not
 * instrumented, and rcu_dereference()/rcu_assign_pointer() are
 * dependency-ordered, which TSan does not model.  Under TSan, tell it the
 * two orders the registry relies on:
 *  - publication: the discovery thread's writes to a seg happen before
 *    any thread that finds the seg in the registry reads it (release
 *    before cds_lfht_add_replace, acquire in seg_of());
 *  - reclamation: every read-side section that could see a seg ends
 *    before the grace period that frees it (release at reg_unlock(),
 *    acquire in seg_free_rcu()).
 * Elsewhere these compile to nothing.
 */
#if defined(__SANITIZE_THREAD__)
#define SERVE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SERVE_TSAN 1
#endif
#endif
#ifdef SERVE_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tsan_acquire(p)	__tsan_acquire(p)
#define tsan_release(p)	__tsan_release(p)
#else
#define tsan_acquire(p)	((void)(p))
#define tsan_release(p)	((void)(p))
#endif
static char grace_period_token;		/* TSan's name for "a grace period" */

static struct cds_lfht *registry;
static atomic_int nsegs;
/* set by the signal handler, read by every thread: a lock-free atomic is
 * async-signal-safe, and unlike volatile sig_atomic_t is shared safely */
static atomic_bool stopping;

static unsigned long hash_str(const char *s)
{
	unsigned long h = 1469598103934665603UL;	/* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211UL;
	return h;
}

/* A registry node found by a lookup or an iteration. */
static struct seg *seg_of(struct cds_lfht_node *n)
{
	struct seg *s = caa_container_of(n, struct seg, node);

	tsan_acquire(s);	/* pairs with tsan_release(s) in discover() */
	return s;
}

static void reg_lock(void)
{
	urcu_memb_read_lock();
}

static void reg_unlock(void)
{
	/* pairs with tsan_acquire() in seg_free_rcu() */
	tsan_release(&grace_period_token);
	urcu_memb_read_unlock();
}

static int seg_match(struct cds_lfht_node *n, const void *key)
{
	return !strcmp(seg_of(n)->path, key);
}

static void seg_free(struct seg *s)
{
	if (s->r)
		mring_reader_close(s->r);
	free(s->path);
	free(s);
}

static void seg_free_rcu(struct rcu_head *h)
{
	tsan_acquire(&grace_period_token);	/* pairs with reg_unlock() */
	seg_free(caa_container_of(h, struct seg, rh));
}

static struct seg *seg_open(const char *path, const struct stat *sb)
{
	struct seg *s = calloc(1, sizeof(*s));
	const char *slash;

	if (!s)
		return NULL;
	s->path = strdup(path);
	if (!s->path || mring_reader_open(path, MRING_OBSERVE, &s->r) < 0) {
		s->r = NULL;
		seg_free(s);
		return NULL;
	}
	slash = strrchr(s->path, '/');
	s->name = slash ? slash + 1 : s->path;
	s->dev = sb->st_dev;
	s->ino = sb->st_ino;
	s->size = sb->st_size;
	return s;
}

/* --all-users: also segments of other users (default: the tool's user's) */
static bool all_users;

/* One discovery round; the caller is a registered RCU thread. */
static void discover(char **args, int nargs, unsigned gen, bool verbose)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;
	struct seglist l;
	struct stat sb;

	if (seglist_expand(&l, args, nargs) < 0)
		memset(&l, 0, sizeof(l));
	for (int i = 0; i < l.n; i++) {
		const char *path = l.paths[i];
		unsigned long h = hash_str(path);
		struct seg *old = NULL, *s;

		if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
			continue;
		/* another user's segment only on request: it can be truncated
		 * under us at will (survived, see sigbus.c, but not wanted) */
		if (!all_users && sb.st_uid != geteuid())
			continue;
		reg_lock();
		cds_lfht_lookup(registry, h, seg_match, path, &it);
		n = cds_lfht_iter_get_node(&it);
		if (n)
			old = seg_of(n);
		if (old && old->dev == sb.st_dev && old->ino == sb.st_ino &&
		    sb.st_size >= old->size) {
			old->gen = gen;		/* unchanged */
			reg_unlock();
			continue;
		}
		reg_unlock();
		s = seg_open(path, &sb);	/* not a segment (yet): next round */
		if (!s)
			continue;
		s->gen = gen;
		tsan_release(s);	/* pairs with tsan_acquire() in seg_of() */
		reg_lock();
		n = cds_lfht_add_replace(registry, h, seg_match, path, &s->node);
		reg_unlock();
		if (n) {
			urcu_memb_call_rcu(&seg_of(n)->rh,
					   seg_free_rcu);
			if (verbose)
				fprintf(stderr, "mring serve: %s replaced\n", path);
		} else {
			atomic_fetch_add(&nsegs, 1);
			if (verbose)
				fprintf(stderr, "mring serve: + %s\n", path);
		}
	}
	seglist_free(&l);

	/* Whatever this round did not see is gone. */
	reg_lock();
	cds_lfht_for_each(registry, &it, n) {
		struct seg *s = seg_of(n);

		if (s->gen != gen && !cds_lfht_del(registry, n)) {
			atomic_fetch_sub(&nsegs, 1);
			if (verbose)
				fprintf(stderr, "mring serve: - %s\n", s->path);
			urcu_memb_call_rcu(&s->rh, seg_free_rcu);
		}
	}
	reg_unlock();
}

struct disc_arg {
	char **args;
	int nargs;
	double interval;
	bool verbose;
};

static void *discovery_main(void *p)
{
	struct disc_arg *a = p;
	unsigned gen = 1;

	urcu_memb_register_thread();
	while (!stopping) {
		struct timespec ts;
		long ms = (long)(a->interval * 1000);

		discover(a->args, a->nargs, ++gen, a->verbose);
		/* sleep in short slices so that a stop is prompt */
		for (long slept = 0; slept < ms && !stopping; slept += 50) {
			ts.tv_sec = 0;
			ts.tv_nsec = 50 * 1000000L;
			nanosleep(&ts, NULL);
		}
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ---- snapshot ------------------------------------------------------------ */

struct msnap {
	char name[64];
	unsigned flags;
	bool live_ok, epoch_ok;
	struct mring_stats live, ep;
};

struct ssnap {
	char seg[256];
	struct mring_status st;
	int nm;
	struct msnap *m;
	char *hparams;		/* the JSON object, or NULL */
};

struct snap {
	struct ssnap *s;
	int n, cap;
};

static void snap_free(struct snap *sn)
{
	for (int i = 0; i < sn->n; i++) {
		free(sn->s[i].m);
		free(sn->s[i].hparams);
	}
	free(sn->s);
}

static int read_retry(int (*fn)(const struct mring_reader *, int, struct mring_stats *),
		      const struct mring_reader *r, int id, struct mring_stats *out)
{
	int ret;

	for (int i = 0; i < 3; i++)
		if ((ret = fn(r, id, out)) != -EAGAIN)
			break;
	return ret;
}

/* The segment's hyperparameters, or NULL (none, unreadable, no memory). */
static char *hparams_copy(const struct mring_reader *r)
{
	char *text = malloc(MRING_HPARAMS_MAX + 1);
	int n = text ? mring_hparams_read(r, text, MRING_HPARAMS_MAX + 1) : -ENOMEM;

	if (n < 0) {
		free(text);
		return NULL;
	}
	return text;
}

static int snap_one(struct ssnap *ss, struct seg *s)
{
	memset(ss, 0, sizeof(*ss));
	snprintf(ss->seg, sizeof(ss->seg), "%s", s->name);
	if (mring_status_read(s->r, &ss->st) < 0)
		return -1;
	ss->hparams = hparams_copy(s->r);
	ss->nm = mring_metric_count(s->r);
	if (ss->nm < 0)
		ss->nm = 0;
	ss->m = ss->nm ? calloc((size_t)ss->nm, sizeof(*ss->m)) : NULL;
	if (ss->nm && !ss->m)
		return -1;
	for (int id = 0; id < ss->nm; id++) {
		struct msnap *m = &ss->m[id];

		if (mring_metric_info(s->r, id, m->name, sizeof(m->name), &m->flags) < 0) {
			m->name[0] = '\0';	/* corrupt slot: skipped */
			continue;
		}
		m->live_ok = read_retry(mring_stats_read, s->r, id, &m->live) == 0;
		m->epoch_ok = read_retry(mring_epoch_read, s->r, id, &m->ep) == 0;
	}
	return 0;
}

/* Copy everything a scrape shows, inside one RCU read-side section. */
static int snap_take(struct snap *sn)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;
	int ret = 0;

	memset(sn, 0, sizeof(*sn));
	reg_lock();
	cds_lfht_for_each(registry, &it, n) {
		struct seg *s = seg_of(n);

		if (sn->n == sn->cap) {
			int cap = sn->cap ? 2 * sn->cap : 16;
			struct ssnap *p = realloc(sn->s, (size_t)cap * sizeof(*p));

			if (!p) {
				ret = -ENOMEM;
				break;
			}
			sn->s = p;
			sn->cap = cap;
		}
		if (snap_one(&sn->s[sn->n], s) == 0)
			sn->n++;
		else
			free(sn->s[sn->n].m);
	}
	reg_unlock();
	return ret;
}

/* ---- exposition ------------------------------------------------------------ */


/*
 * A label value in the text format: \ " and newline escaped; invalid
 * UTF-8 (a file name can hold any byte) becomes U+FFFD, which
 * Prometheus would otherwise reject along with the whole scrape.
 */
static void buf_label(struct buf *b, const char *v)
{
	const unsigned char *s = (const unsigned char *)v;

	while (*s) {
		size_t n;

		if (*s == '\\') {
			buf_put(b, "\\\\", 2);
			s++;
		} else if (*s == '"') {
			buf_put(b, "\\\"", 2);
			s++;
		} else if (*s == '\n') {
			buf_put(b, "\\n", 2);
			s++;
		} else if ((n = (size_t)utf8_len(s)) == 0) {
			buf_put(b, "\xef\xbf\xbd", 3);
			s++;
		} else {
			buf_put(b, (const char *)s, n);
			s += n;
		}
	}
}

/* A sample value: Prometheus spells the non-finite ones its own way. */
static void prom_double(struct buf *b, double v)
{
	if (isnan(v))
		buf_puts(b, "NaN");
	else if (isinf(v))
		buf_puts(b, v > 0 ? "+Inf" : "-Inf");
	else
		buf_double(b, v);	/* shortest that round-trips */
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_fmt(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* NAME{segment="...",run="...",rank="N" : the caller adds and closes */
static void labels_open(struct buf *b, const char *name, const struct ssnap *ss)
{
	buf_puts(b, name);
	buf_puts(b, "{segment=\"");
	buf_label(b, ss->seg);
	buf_puts(b, "\",run=\"");
	buf_label(b, ss->st.run);
	buf_fmt(b, "\",rank=\"%d\"", (int)ss->st.rank);
}

static void labels(struct buf *b, const char *name, const struct ssnap *ss,
		   const struct msnap *m)
{
	labels_open(b, name, ss);
	if (m) {
		buf_puts(b, ",metric=\"");
		buf_label(b, m->name);
		buf_puts(b, "\"");
	}
	buf_puts(b, "} ");
}

enum seg_field { F_UP, F_STEP, F_EPOCH, F_HEARTBEAT, F_RECORDS, F_DROPPED, F_OVERWRITTEN,
		 F_CAPACITY, F_METRICS };

static const struct {
	const char *name, *type, *help;
} seg_fields[] = {
	[F_UP] = { "mring_up", "gauge",
		   "1 while a producer has the segment open, 0 once it closed or crashed." },
	[F_STEP] = { "mring_step", "gauge", "Current step of the producer." },
	[F_EPOCH] = { "mring_epoch", "gauge", "Current (running) epoch, numbered from 0." },
	[F_HEARTBEAT] = { "mring_step_timestamp_seconds", "gauge",
			  "Wall-clock time of the current step (producer heartbeat)." },
	[F_RECORDS] = { "mring_records_total", "counter",
			"Ring slots committed (a STEP takes two, any other record one)." },
	[F_DROPPED] = { "mring_dropped_total", "counter",
			"Ring slots dropped on a full ring (a STEP counts two)." },
	[F_OVERWRITTEN] = { "mring_overwritten_total", "counter",
			    "Records overwritten before being drained (overwrite mode)." },
	[F_CAPACITY] = { "mring_capacity_records", "gauge", "Ring capacity in records." },
	[F_METRICS] = { "mring_metrics", "gauge", "Registered metrics." },
};

static void emit_seg_field(struct buf *b, const struct snap *sn, enum seg_field f)
{
	family(b, seg_fields[f].name, seg_fields[f].type, seg_fields[f].help);
	for (int i = 0; i < sn->n; i++) {
		const struct mring_status *st = &sn->s[i].st;

		labels(b, seg_fields[f].name, &sn->s[i], NULL);
		switch (f) {
		case F_UP: buf_puts(b, st->alive ? "1" : "0"); break;
		case F_STEP: buf_fmt(b, "%llu", (unsigned long long)st->step); break;
		case F_EPOCH: buf_fmt(b, "%u", st->epoch); break;
		case F_HEARTBEAT: prom_double(b, (double)st->step_wall_ns / 1e9); break;
		case F_RECORDS: buf_fmt(b, "%llu", (unsigned long long)st->written); break;
		case F_DROPPED: buf_fmt(b, "%llu", (unsigned long long)st->dropped); break;
		case F_OVERWRITTEN:
			buf_fmt(b, "%llu", (unsigned long long)st->overwritten); break;
		case F_CAPACITY: buf_fmt(b, "%llu", (unsigned long long)st->capacity); break;
		case F_METRICS: buf_fmt(b, "%u", st->metrics); break;
		}
		buf_puts(b, "\n");
	}
}

enum met_field { M_VALUE, M_VALUE_STEP, M_RUNNING, M_EPOCH_VALUE, M_EPOCH_WEIGHT,
		 M_EPOCH_OF_VALUE, M_VALUES, M_NONFINITE };

static const struct {
	const char *name, *type, *help;
} met_fields[] = {
	[M_VALUE] = { "mring_value", "gauge",
		      "Last logged value of the metric (may be NaN or +-Inf)." },
	[M_VALUE_STEP] = { "mring_value_step", "gauge", "Step of mring_value." },
	[M_RUNNING] = { "mring_epoch_running", "gauge",
			"Running reduction (mean, sum, min or max) of the current epoch; NaN while empty." },
	[M_EPOCH_VALUE] = { "mring_epoch_value", "gauge",
			    "Reduction of the last completed epoch." },
	[M_EPOCH_WEIGHT] = { "mring_epoch_weight", "gauge",
			     "Total weight of the last completed epoch (mean metrics): for exact cross-rank means." },
	[M_EPOCH_OF_VALUE] = { "mring_epoch_value_epoch", "gauge",
			       "Epoch number of mring_epoch_value." },
	[M_VALUES] = { "mring_values_total", "counter",
		       "Finite values logged in the current epoch (resets at each epoch end)." },
	[M_NONFINITE] = { "mring_nonfinite_total", "counter",
			  "NaN and +-Inf values logged in the current epoch (resets at each epoch end)." },
};

/* mring_value: the last value, kept across epoch ends (metric_last()). */
static bool last_value(const struct msnap *m, double *v, uint64_t *step)
{
	return metric_last(m->live_ok ? &m->live : NULL, m->epoch_ok ? &m->ep : NULL, v, step);
}

static void emit_met_field(struct buf *b, const struct snap *sn, enum met_field f)
{
	family(b, met_fields[f].name, met_fields[f].type, met_fields[f].help);
	for (int i = 0; i < sn->n; i++) {
		const struct ssnap *ss = &sn->s[i];

		for (int id = 0; id < ss->nm; id++) {
			const struct msnap *m = &ss->m[id];
			bool epoch = m->flags & MRING_ON_EPOCH;
			double v = 0;
			uint64_t step = 0;

			if (!m->name[0])
				continue;
			switch (f) {
			case M_VALUE:
			case M_VALUE_STEP:
				if (!last_value(m, &v, &step))
					continue;
				labels(b, met_fields[f].name, ss, m);
				if (f == M_VALUE)
					prom_double(b, v);
				else
					buf_fmt(b, "%llu", (unsigned long long)step);
				break;
			case M_RUNNING:
				if (!epoch || !m->live_ok)
					continue;
				labels(b, met_fields[f].name, ss, m);
				prom_double(b, m->live.value);
				break;
			case M_EPOCH_VALUE:
			case M_EPOCH_OF_VALUE:
				if (!m->epoch_ok)
					continue;
				labels(b, met_fields[f].name, ss, m);
				if (f == M_EPOCH_VALUE)
					prom_double(b, m->ep.value);
				else
					buf_fmt(b, "%u", m->ep.epoch);
				break;
			case M_EPOCH_WEIGHT:
				if (!m->epoch_ok || (m->flags & (MRING_SUM | MRING_MIN | MRING_MAX)))
					continue;
				labels(b, met_fields[f].name, ss, m);
				prom_double(b, m->ep.weight);
				break;
			case M_VALUES:
			case M_NONFINITE:
				if (!m->live_ok)
					continue;
				labels(b, met_fields[f].name, ss, m);
				buf_fmt(b, "%llu", (unsigned long long)(f == M_VALUES ? m->live.count
									     : m->live.nonfinite));
				break;
			}
			buf_puts(b, "\n");
		}
	}
}

/*
 * mring_hparam_info: one series per top-level member of the object,
 * {name="KEY", value="VALUE"} 1, VALUE being a string's text or any
 * other value's compact JSON (hparams_top()), cut at HPARAM_LABEL_MAX
 * bytes.
 */
#define HPARAM_LABEL_MAX 256

/* Cut @v to HPARAM_LABEL_MAX bytes at a UTF-8 character boundary. */
static void label_cut(char *v)
{
	size_t n = strlen(v);

	if (n <= HPARAM_LABEL_MAX)
		return;
	n = HPARAM_LABEL_MAX;
	while (n && ((unsigned char)v[n] & 0xc0) == 0x80)
		n--;
	v[n] = '\0';
}

static void emit_hparams(struct buf *b, const struct snap *sn)
{
	family(b, "mring_hparam_info", "gauge",
	       "The producer's hyperparameters, one series per top-level key: name and value "
	       "(a string's text, or JSON; cut at 256 bytes). Always 1.");
	for (int i = 0; i < sn->n; i++) {
		const char *text = sn->s[i].hparams;
		struct hparam *hp;
		int n;

		if (!text || hparams_top(text, strlen(text), &hp, &n) < 0)
			continue;
		for (int k = 0; k < n; k++) {
			label_cut(hp[k].key);
			label_cut(hp[k].str);
			labels_open(b, "mring_hparam_info", &sn->s[i]);
			buf_puts(b, ",name=\"");
			buf_label(b, hp[k].key);
			buf_puts(b, "\",value=\"");
			buf_label(b, hp[k].str);
			buf_puts(b, "\"} 1\n");
		}
		hparams_flat_free(hp, n);
	}
}

static int render(struct buf *b)
{
	struct snap sn;
	int ret = snap_take(&sn);

	if (ret == 0) {
		for (int f = F_UP; f <= F_METRICS; f++)
			emit_seg_field(b, &sn, (enum seg_field)f);
		for (int f = M_VALUE; f <= M_NONFINITE; f++)
			emit_met_field(b, &sn, (enum met_field)f);
		emit_hparams(b, &sn);
		family(b, "mring_serve_segments", "gauge", "Segments attached by mring serve.");
		buf_fmt(b, "mring_serve_segments %d\n", sn.n);
	}
	snap_free(&sn);
	return b->oom ? -ENOMEM : ret;
}

/* ---- HTTP ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int send_all(int fd, const char *p, size_t n)
{
	int64_t deadline = now_ms() + IO_TIMEOUT_MS;

	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;	/* EAGAIN: SO_SNDTIMEO expired */
		}
		p += k;
		n -= (size_t)k;
		if (n && now_ms() > deadline)
			return -1;	/* a client that reads a trickle */
	}
	return 0;
}

static void respond(int fd, int code, const char *reason, const char *extra,
		    const char *ctype, const char *body, size_t blen, bool head)
{
	char hdr[512];
	int n = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %d %s\r\n"
			 "Content-Type: %s\r\n"
			 "Content-Length: %zu\r\n"
			 "%s"
			 "Connection: close\r\n\r\n",
			 code, reason, ctype, blen, extra ? extra : "");

	if (send_all(fd, hdr, (size_t)n) == 0 && !head && blen)
		send_all(fd, body, blen);
}

static void respond_error(int fd, int code, const char *reason, const char *extra)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "%d %s\n", code, reason);

	respond(fd, code, reason, extra, "text/plain; charset=utf-8", body, (size_t)n, false);
}

/*
 * Read the request head (up to the blank line).  Returns its length,
 * -1 on a timeout or a closed connection, -2 when it is too large.
 */
static int read_head(int fd, char *buf, size_t cap)
{
	int64_t deadline = now_ms() + IO_TIMEOUT_MS;
	size_t len = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		ssize_t k;

		if (left <= 0)
			return -1;
		if (poll(&p, 1, (int)left) <= 0)
			continue;	/* timeout is caught above; EINTR retried */
		if (len == cap - 1)
			return -2;
		k = recv(fd, buf + len, cap - 1 - len, 0);
		if (k <= 0) {
			if (k < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			return -1;
		}
		len += (size_t)k;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			return (int)len;
	}
}

static bool token_char(char c)
{
	return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static void handle(int fd)
{
	char req[REQ_MAX], *method, *target, *version, *eol, *q;
	int n = read_head(fd, req, sizeof(req));
	bool head;

	if (n == -1) {
		respond_error(fd, 408, "Request Timeout", NULL);
		return;
	}
	if (n == -2) {
		respond_error(fd, 431, "Request Header Fields Too Large", NULL);
		return;
	}
	if (memchr(req, '\0', (size_t)n)) {
		respond_error(fd, 400, "Bad Request", NULL);
		return;
	}
	eol = strpbrk(req, "\r\n");
	*eol = '\0';
	/* request-line = method SP request-target SP HTTP-version */
	method = req;
	target = strchr(method, ' ');
	version = target ? strchr(target + 1, ' ') : NULL;
	if (!target || !version || strchr(version + 1, ' ')) {
		respond_error(fd, 400, "Bad Request", NULL);
		return;
	}
	*target++ = '\0';
	*version++ = '\0';
	for (char *c = method; *c; c++)
		if (!token_char(*c)) {
			respond_error(fd, 400, "Bad Request", NULL);
			return;
		}
	if (!*method || *target != '/' || strncmp(version, "HTTP/1.", 7) ||
	    !version[7] || version[8]) {
		respond_error(fd, 400, "Bad Request", NULL);
		return;
	}
	for (char *c = target; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
			respond_error(fd, 400, "Bad Request", NULL);
			return;
		}
	q = strchr(target, '?');
	if (q)
		*q = '\0';
	if (strcmp(target, "/metrics")) {
		respond_error(fd, 404, "Not Found", NULL);
		return;
	}
	head = !strcmp(method, "HEAD");
	if (!head && strcmp(method, "GET")) {
		respond_error(fd, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
		return;
	}
	{
		struct buf b = { 0 };

		if (render(&b) < 0)
			respond_error(fd, 500, "Internal Server Error", NULL);
		else
			respond(fd, 200, "OK", NULL, "text/plain; version=0.0.4; charset=utf-8",
				b.p, b.len, head);
		free(b.p);
	}
}

/* Close gracefully: unread request bytes would otherwise turn into a RST
 * that can destroy the response before the client reads it. */
static void linger_close(int fd)
{
	char sink[4096];
	int64_t deadline = now_ms() + 1000;

	shutdown(fd, SHUT_WR);
	while (now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 100) <= 0)
			continue;
		if (recv(fd, sink, sizeof(sink), 0) <= 0)
			break;
	}
	close(fd);
}

/* ---- admission: who may hold how many connections ----------------------------- */

/*
 * The connections each client address holds (the port is not part of
 * it: a hostile client opens as many as it likes).  Only the accept loop
 * adds; a worker removes its own at the end.  MAX_CONNS entries suffice:
 * an address holds at least one connection while it has an entry.
 */
struct peer {
	unsigned char addr[16];		/* IPv4 as IPv4-mapped IPv6 */
	int n;
};

static struct peer peers[MAX_CONNS];
static pthread_mutex_t peers_lock = PTHREAD_MUTEX_INITIALIZER;

static void peer_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	} else if (ss->ss_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	}
}

/*
 * Admit a connection from @key, or say why not: the total limit, the
 * per-address limit, or the reserve kept for addresses that hold none
 * (a scraper still gets in while one client holds all it may).
 */
static bool peer_admit(const unsigned char key[16])
{
	struct peer *mine = NULL, *free_slot = NULL;
	int total = 0;
	bool ok;

	pthread_mutex_lock(&peers_lock);
	for (int i = 0; i < MAX_CONNS; i++) {
		total += peers[i].n;
		if (peers[i].n && !memcmp(peers[i].addr, key, 16))
			mine = &peers[i];
		else if (!peers[i].n && !free_slot)
			free_slot = &peers[i];
	}
	ok = total < MAX_CONNS &&
	     (mine ? mine->n < PEER_CONNS && total < MAX_CONNS - RESERVED_CONNS : !!free_slot);
	if (ok && !mine) {
		mine = free_slot;
		memcpy(mine->addr, key, 16);
	}
	if (ok)
		mine->n++;
	pthread_mutex_unlock(&peers_lock);
	return ok;
}

static void peer_release(const unsigned char key[16])
{
	pthread_mutex_lock(&peers_lock);
	for (int i = 0; i < MAX_CONNS; i++) {
		if (peers[i].n && !memcmp(peers[i].addr, key, 16)) {
			peers[i].n--;
			break;
		}
	}
	pthread_mutex_unlock(&peers_lock);
}

struct conn {
	int fd;
	unsigned char key[16];
};

static void *conn_main(void *p)
{
	struct conn *c = p;
	int fd = c->fd;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_MS / 1000 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	urcu_memb_register_thread();
	handle(fd);
	urcu_memb_unregister_thread();
	linger_close(fd);
	peer_release(c->key);
	free(c);
	return NULL;
}

/* ---- command ------------------------------------------------------------------- */

/*
 * PORT: decimal digits only (no service names), 0 to 65535: -ERANGE past
 * that, where a plain strtoul + htons would wrap 65536 to 0 (a random
 * port) and 99999 to 34463.
 */
static int port_parse(const char *p, char *out, size_t size)
{
	unsigned long v = 0;

	if (!*p)
		return -EINVAL;
	for (const char *c = p; *c; c++) {
		if (*c < '0' || *c > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(*c - '0');
		if (v > 65535)
			return -ERANGE;
	}
	snprintf(out, size, "%lu", v);
	return 0;
}

/*
 * HOST:PORT, [V6]:PORT, or :PORT.  An empty host is loopback, like the
 * default: serving every interface takes an explicit 0.0.0.0 or [::].
 */
static int listen_on(const char *spec, char *shown, size_t shown_len)
{
	char host[256], port[32];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV }, *res, *ai;
	const char *colon = strrchr(spec, ':');
	int fd = -1, ret;

	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		return -EINVAL;
	ret = port_parse(colon + 1, port, sizeof(port));
	if (ret)
		return ret;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	if (host[0] == '[') {		/* [::1]:9464 */
		size_t hl = strlen(host);

		if (hl < 2 || host[hl - 1] != ']')
			return -EINVAL;
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	if (!host[0])
		strcpy(host, "127.0.0.1");
	ret = getaddrinfo(host, port, &hints, &res);
	if (ret)
		return -ENXIO;	/* not an address, and no such name */
	for (ai = res; ai; ai = ai->ai_next) {
		int one = 1;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
			break;
		ret = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return ret ? ret : -EADDRNOTAVAIL;
	{
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char addr[INET6_ADDRSTRLEN] = "?";
		int pnum = 0;

		getsockname(fd, (struct sockaddr *)&ss, &sl);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
			pnum = ntohs(in->sin_port);
			snprintf(shown, shown_len, "%s:%d", addr, pnum);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
			pnum = ntohs(in6->sin6_port);
			snprintf(shown, shown_len, "[%s]:%d", addr, pnum);
		}
	}
	return fd;
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stopping, true);
}

static const char serve_usage[] =
	"usage: mring serve [--listen HOST:PORT] [--interval SECONDS] [--print] [-v]\n"
	"                   [--all-users] [SEGMENT|GLOB]...\n"
	"Serves /metrics in the Prometheus text format 0.0.4 for every segment\n"
	"matching the arguments (default: every segment in $MRING_DIR or /dev/shm).\n"
	"The arguments are re-expanded every --interval seconds (default 1):\n"
	"segments that appear are attached, segments whose file is removed or\n"
	"replaced are dropped.\n"
	"  --listen HOST:PORT  address to bind (default " DEFAULT_LISTEN ", loopback;\n"
	"                      :PORT is loopback too; 0.0.0.0:PORT or [::]:PORT to\n"
	"                      serve the network; PORT 0 to 65535, 0 picks a free\n"
	"                      port); the bound address is\n"
	"                      printed on stderr as 'listening on http://ADDR/metrics'\n"
	"  --print             write one exposition to stdout and exit\n"
	"  -v, --verbose       log attached and removed segments on stderr\n"
	"  --all-users         also segments other users own (default: only the\n"
	"                      tool's user's; a truncated segment is dropped either way)\n"
	"Series carry labels segment, run, rank and (per metric) metric; see\n"
	"docs/serve.md.  Stop with SIGINT or SIGTERM.\n";

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "interval", required_argument, NULL, 'i' },
		{ "print", no_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "all-users", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static char *all[] = { "*" };
	const char *listen_spec = DEFAULT_LISTEN;
	struct disc_arg da = { .interval = 1.0 };
	bool print = false;
	char shown[300], *end;
	pthread_t disc;
	pthread_attr_t attr;
	struct sigaction sa;
	int c, lfd;

	optind = 1;
	while ((c = getopt_long(argc, argv, "l:i:pvh", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_spec = optarg;
			break;
		case 'i':
			da.interval = strtod(optarg, &end);
			if (*end || !(da.interval >= 0.05 && da.interval <= 3600)) {
				fprintf(stderr, "mring serve: bad --interval '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'p':
			print = true;
			break;
		case 'v':
			da.verbose = true;
			break;
		case 'a':
			all_users = true;
			break;
		case 'h':
			fputs(serve_usage, stdout);
			return 0;
		default:
			/* getopt said what was wrong, as 'mring serve: ...' */
			fputs("see `mring serve --help`\n", stderr);
			return EXIT_USAGE;
		}
	}
	da.args = optind < argc ? argv + optind : all;
	da.nargs = optind < argc ? argc - optind : 1;

	registry = cds_lfht_new_flavor(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
				       &urcu_memb_flavor, NULL);
	if (!registry) {
		fprintf(stderr, "mring serve: out of memory\n");
		return EXIT_USAGE;
	}
	urcu_memb_register_thread();

	if (print) {
		struct buf b = { 0 };
		int ret;

		discover(da.args, da.nargs, 1, da.verbose);
		ret = render(&b);
		if (ret == 0 && (fwrite(b.p, 1, b.len, stdout) != b.len || fflush(stdout)))
			ret = -EIO;
		free(b.p);
		urcu_memb_unregister_thread();
		if (ret < 0)
			fprintf(stderr, "mring serve: %s\n", strerror(-ret));
		return ret < 0 ? EXIT_OUTPUT : 0;
	}

	lfd = listen_on(listen_spec, shown, sizeof(shown));
	if (lfd < 0) {
		fprintf(stderr, "mring serve: cannot listen on '%s': %s\n", listen_spec,
			lfd == -EINVAL ? "not HOST:PORT, [IPV6]:PORT or :PORT" :
			lfd == -ERANGE ? "port out of range (0 to 65535)" :
			lfd == -ENXIO ? "no such host or address" : strerror(-lfd));
		urcu_memb_unregister_thread();
		return EXIT_USAGE;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	/* First round before serving: the first scrape already sees them. */
	discover(da.args, da.nargs, 1, da.verbose);
	if (pthread_create(&disc, NULL, discovery_main, &da)) {
		fprintf(stderr, "mring serve: cannot start the discovery thread\n");
		return EXIT_USAGE;
	}
	fprintf(stderr, "mring serve: listening on http://%s/metrics (%d segments)\n", shown,
		atomic_load(&nsegs));
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);

	/* The main thread only accepts; it is offline for RCU meanwhile. */
	urcu_memb_unregister_thread();
	while (!stopping) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		struct conn *cn;
		pthread_t t;
		int fd;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept4(lfd, (struct sockaddr *)&ss, &sslen, SOCK_CLOEXEC);
		if (fd < 0)
			continue;	/* EMFILE, ECONNABORTED ...: next one */
		cn = malloc(sizeof(*cn));
		if (cn) {
			cn->fd = fd;
			peer_key(&ss, cn->key);
		}
		if (!cn || !peer_admit(cn->key)) {
			static const char busy[] =
				"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
				"Retry-After: 1\r\nConnection: close\r\n\r\n";

			(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			close(fd);
			free(cn);
			continue;
		}
		if (pthread_create(&t, &attr, conn_main, cn)) {
			close(fd);
			peer_release(cn->key);
			free(cn);
		}
	}
	close(lfd);
	pthread_join(disc, NULL);
	pthread_attr_destroy(&attr);
	/* Workers may still be answering: the registry is left to exit(). */
	fprintf(stderr, "mring serve: stopped\n");
	return 0;
}
