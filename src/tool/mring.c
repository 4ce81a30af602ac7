// SPDX-License-Identifier: MIT
/*
 * mring.c - the mring command-line tool: subcommand dispatch, segment
 * arguments, and the small subcommands (ls, stat, rm).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

static const char usage[] =
	"usage: mring COMMAND [ARGS]\n"
	"\n"
	"  drain [OPTIONS] SEGMENT...   drain rings into JSONL, CSV, TensorBoard\n"
	"  ls [DIR]                     list segments (default $MRING_DIR or /dev/shm)\n"
	"  stat [--hparams] SEGMENT     status, hyperparameters and every metric\n"
	"  rm [--force] SEGMENT...      remove segments whose producer is gone\n"
	"  top [SEGMENT|GLOB]...        live full-screen view of segments and metrics\n"
	"  serve [OPTIONS] [SEGMENT]... Prometheus /metrics endpoint (default 127.0.0.1:9464)\n"
	"  watch [RULES] SEGMENT...     alerts on NaN, stalls, stragglers, thresholds, crashes\n"
	"\n"
	"  version                      tool, library and segment format versions\n"
	"  help [COMMAND]               this text, or a command's own\n"
	"\n"
	"SEGMENT: a path, a bare name in $MRING_DIR (default /dev/shm), or a glob.\n"
	"`mring COMMAND --help` (or `mring help COMMAND`) describes each command.\n";

/*
 * The tool links libmring statically, so the library it reads segments
 * with is the one it was built with: the versions are compile-time ones.
 */
static int cmd_version(int argc, char **argv)
{
	(void)argv;
	if (argc > 1) {
		fputs("usage: mring version\n", stderr);
		return EXIT_USAGE;
	}
	printf("mring %d.%d.%d\n", MRING_VERSION_MAJOR, MRING_VERSION_MINOR,
	       MRING_VERSION_PATCH);
	printf("libmring %d.%d.%d (linked in; inline ABI %d)\n", MRING_VERSION_MAJOR,
	       MRING_VERSION_MINOR, MRING_VERSION_PATCH, _MRING_INLINE_ABI);
	printf("segment format %d.%d (reads %d.x)\n", _MRING_ABI_MAJOR, _MRING_ABI_MINOR,
	       _MRING_ABI_MAJOR);
	return 0;
}

const char *mring_dir(void)
{
	const char *d = getenv("MRING_DIR");

	return d && *d ? d : "/dev/shm";
}

const char *producer_state(const struct mring_status *st)
{
	if (st->alive)
		return "alive";
	return st->closed ? "closed" : "crashed";
}

/*
 * A metric's last logged value and its step, for stat, top and serve.
 * The library keeps them across epoch ends, so the live snapshot has
 * them (NaN before the first value); the completed epoch's are the same
 * value.  A NaN is a logged NaN when either epoch counted a non-finite
 * value.  False when there is nothing to show.  @live or @ep: NULL when
 * not readable.
 */
bool metric_last(const struct mring_stats *live, const struct mring_stats *ep,
		 double *v, uint64_t *step)
{
	const struct mring_stats *s = live ? live : ep;

	if (!s || (isnan(s->last) && !(live && live->count + live->nonfinite) &&
		   !(ep && ep->count + ep->nonfinite)))
		return false;
	*v = s->last;
	*step = s->last_step;
	return true;
}

/*
 * What to say when opening SEGMENT argument @arg failed with @err.  For
 * -ENOENT, mring_strerror() cannot know which of its causes it was; we
 * do: a missing directory, a pattern where one name is taken, or no such
 * file at the path the name resolves to.
 */
const char *seg_open_error(const char *arg, int err, char *buf, size_t len)
{
	char text[PATH_MAX + 32];	/* callers' @buf (4400) holds it and the hint */

	/* a reader's open is busy only for the drainer lock: a live
	 * producer is normal for a reader */
	if (err == -EBUSY)
		return "another drainer is attached (one drainer per segment; "
		       "observers like mring stat, top and serve are always welcome)";
	if (err != -ENOENT)
		return mring_strerror(err);
	__mring_enoent_text(arg, text, sizeof(text));
	if (strpbrk(arg, "*?[") && !strncmp(text, "no segment ", 11))
		snprintf(buf, len, "no segment named %s (a pattern? this command takes "
			 "one segment name; `mring ls` lists them)", text + 11);
	else
		snprintf(buf, len, "%s", text);
	return buf;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int seglist_add(struct seglist *l, const char *path)
{
	char **p = realloc(l->paths, (size_t)(l->n + 1) * sizeof(*p));

	if (!p)
		return -ENOMEM;
	l->paths = p;
	l->paths[l->n] = strdup(path);
	if (!l->paths[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

int seglist_expand(struct seglist *l, char **args, int nargs)
{
	char pattern[4096];
	glob_t g;
	int i, ret = 0;

	memset(l, 0, sizeof(*l));
	for (i = 0; i < nargs && !ret; i++) {
		if (strchr(args[i], '/'))
			snprintf(pattern, sizeof(pattern), "%s", args[i]);
		else
			snprintf(pattern, sizeof(pattern), "%s/%s", mring_dir(), args[i]);
		if (glob(pattern, 0, NULL, &g) != 0)
			continue;
		for (size_t k = 0; k < g.gl_pathc && !ret; k++)
			ret = seglist_add(l, g.gl_pathv[k]);
		globfree(&g);
	}
	if (ret)
		return ret;
	if (!l->n)
		return -ENOENT;
	qsort(l->paths, (size_t)l->n, sizeof(*l->paths), cmp_str);
	for (i = 1; i < l->n;) {
		if (!strcmp(l->paths[i], l->paths[i - 1])) {
			free(l->paths[i]);
			memmove(&l->paths[i], &l->paths[i + 1],
				(size_t)(l->n - i - 1) * sizeof(*l->paths));
			l->n--;
		} else {
			i++;
		}
	}
	return 0;
}

void seglist_free(struct seglist *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->paths[i]);
	free(l->paths);
	memset(l, 0, sizeof(*l));
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return true;
	return false;
}

/* ---- ls -------------------------------------------------------------- */

struct ls_row {
	char *name;
	struct mring_status st;
};

/* The status of the segment at @path into @row; false if not a segment. */
static bool ls_read(const char *path, const char *name, struct ls_row *row)
{
	struct mring_reader *r;
	bool ok;

	if (mring_reader_open(path, MRING_OBSERVE, &r) < 0)
		return false;	/* not a segment (or not ours to read) */
	ok = mring_status_read(r, &row->st) == 0 && (row->name = strdup(name));
	mring_reader_close(r);
	return ok;
}

/* The NAME column is as wide as the longest name, so columns stay aligned. */
static void ls_print(const struct ls_row *rows, int n)
{
	int w = 4;

	for (int i = 0; i < n; i++)
		if ((int)strlen(rows[i].name) > w)
			w = (int)strlen(rows[i].name);
	printf("%-*s %-7s %10s %5s %10s %10s %12s %4s %8s %s\n", w, "NAME", "STATE", "STEP",
	       "EPOCH", "BACKLOG", "DROPPED", "WRITTEN", "RANK", "PID", "RUN");
	for (int i = 0; i < n; i++) {
		const struct mring_status *st = &rows[i].st;

		printf("%-*s %-7s %10llu %5u %10llu %10llu %12llu %4d %8d %s\n", w,
		       rows[i].name, producer_state(st), (unsigned long long)st->step,
		       st->epoch, (unsigned long long)(st->written - st->read),
		       (unsigned long long)st->dropped, (unsigned long long)st->written,
		       st->rank, st->pid, st->run);
	}
}

int cmd_ls(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : mring_dir();
	struct dirent **ents;
	struct ls_row *rows;
	char path[4096];
	int n, nrows = 0;

	if (wants_help(argc, argv) || argc > 2) {
		fprintf(argc > 2 ? stderr : stdout,
			"usage: mring ls [DIR]\n"
			"One line per segment in DIR (default $MRING_DIR or /dev/shm): name,\n"
			"producer state (alive/closed/crashed), step, epoch, backlog (ring\n"
			"slots written but not drained), slots dropped and written, rank,\n"
			"producer pid and run.  The first 71 columns fit any terminal.\n");
		return argc > 2 ? EXIT_USAGE : 0;
	}
	n = scandir(dir, &ents, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "mring ls: %s: %s\n", dir, strerror(errno));
		return EXIT_USAGE;
	}
	rows = calloc(n ? (size_t)n : 1, sizeof(*rows));
	for (int i = 0; i < n; i++) {
		if (rows && ents[i]->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
			nrows += ls_read(path, ents[i]->d_name, &rows[nrows]);
		}
		free(ents[i]);
	}
	free(ents);
	if (!rows) {
		fprintf(stderr, "mring ls: %s\n", strerror(ENOMEM));
		return EXIT_USAGE;
	}
	ls_print(rows, nrows);
	for (int i = 0; i < nrows; i++)
		free(rows[i].name);
	free(rows);
	return 0;
}

/* ---- stat ------------------------------------------------------------ */

static void flags_text(unsigned f, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s",
		 f & MRING_ON_STEP ? "step" : "",
		 (f & MRING_ON_STEP) && (f & MRING_ON_EPOCH) ? "+" : "",
		 f & MRING_ON_EPOCH ? (f & MRING_SUM ? "epoch:sum" : f & MRING_MIN ? "epoch:min" :
				      f & MRING_MAX ? "epoch:max" : "epoch:mean") : "",
		 f & MRING_PROG_BAR ? ",bar" : "");
}

/* %.6g, or "-" for a figure that does not exist (NaN of an empty epoch) */
static const char *num_or_dash(char *buf, size_t len, double v, bool exists)
{
	if (!exists)
		return "-";
	snprintf(buf, len, "%.6g", v);
	return buf;
}

static void stat_metric(struct mring_reader *r, int id)
{
	struct mring_stats live, ep;
	char name[64], fl[48], epv[32] = "-", b[4][32];
	bool have_ep, have_last, live_fin;
	uint64_t last_step;
	unsigned flags;
	double last;

	if (mring_metric_info(r, id, name, sizeof(name), &flags) < 0 ||
	    mring_stats_read(r, id, &live) < 0)
		return;
	flags_text(flags, fl, sizeof(fl));
	have_ep = mring_epoch_read(r, id, &ep) == 0;
	if (have_ep)
		snprintf(epv, sizeof(epv), "%.6g@%u", ep.value, ep.epoch);
	live_fin = live.count > 0;
	/* LAST: kept across epoch ends (a finished run shows its last
	 * values); "-" when the metric never logged one */
	have_last = metric_last(&live, have_ep ? &ep : NULL, &last, &last_step);
	printf("%4d %-28s %-20s %10llu %6llu %12s %12s %12s %12s %s\n", id, name, fl,
	       (unsigned long long)live.count, (unsigned long long)live.nonfinite,
	       num_or_dash(b[0], sizeof(b[0]), last, have_last),
	       num_or_dash(b[1], sizeof(b[1]), live.value, live_fin && (flags & MRING_ON_EPOCH)),
	       num_or_dash(b[2], sizeof(b[2]), live.min, live_fin && (flags & MRING_ON_EPOCH)),
	       num_or_dash(b[3], sizeof(b[3]), live.max, live_fin && (flags & MRING_ON_EPOCH)),
	       epv);
}

/* The hyperparameters: a line of the status (cut), or the whole text. */
static int stat_hparams(struct mring_reader *r, bool whole)
{
	static char text[MRING_HPARAMS_MAX + 1];
	int n = mring_hparams_read(r, text, sizeof(text));

	if (whole) {
		if (n < 0)
			return n;
		printf("%s\n", text);
		return 0;
	}
	if (n == -ENOENT)
		printf("hparams none\n");
	else if (n < 0)
		printf("hparams unreadable: %s\n", mring_strerror(n));
	else if (n <= 160)
		printf("hparams %s\n", text);
	else
		printf("hparams %.150s... (%d bytes; `mring stat --hparams` prints them whole)\n",
		       text, n);
	return 0;
}

int cmd_stat(int argc, char **argv)
{
	bool hparams = argc == 3 && !strcmp(argv[1], "--hparams");
	struct mring_reader *r;
	struct mring_status st;
	int ret, n;

	if (hparams) {
		argv++;
		argc--;
	}
	if (wants_help(argc, argv) || argc != 2) {
		fprintf(argc != 2 ? stderr : stdout,
			"usage: mring stat [--hparams] SEGMENT\n"
			"The segment's status and hyperparameters, then every metric with\n"
			"its live epoch statistics and its last completed epoch value.\n"
			"--hparams: only the hyperparameters, the JSON object as stored\n"
			"(exit 1 when none were set).\n");
		return argc != 2 ? EXIT_USAGE : 0;
	}
	ret = mring_reader_open(argv[1], MRING_OBSERVE, &r);
	if (ret < 0) {
		char why[4400];

		fprintf(stderr, "mring stat: %s: %s\n", argv[1],
			seg_open_error(argv[1], ret, why, sizeof(why)));
		return EXIT_USAGE;
	}
	if (hparams) {
		ret = stat_hparams(r, true);
		mring_reader_close(r);
		if (ret < 0)
			fprintf(stderr, "mring stat: %s: %s\n", argv[1], ret == -ENOENT ?
				"no hyperparameters set" : mring_strerror(ret));
		return ret < 0 ? EXIT_USAGE : 0;
	}
	mring_status_read(r, &st);
	printf("run %s  rank %d  pid %d  %s\n", st.run, st.rank, st.pid, producer_state(&st));
	printf("step %llu  epoch %u  capacity %llu  written %llu  read %llu  dropped %llu  "
	       "overwritten %llu  drainer %s\n",
	       (unsigned long long)st.step, st.epoch, (unsigned long long)st.capacity,
	       (unsigned long long)st.written, (unsigned long long)st.read,
	       (unsigned long long)st.dropped, (unsigned long long)st.overwritten,
	       st.drainer ? "attached" : "none");
	stat_hparams(r, false);
	n = mring_metric_count(r);
	printf("%4s %-28s %-20s %10s %6s %12s %12s %12s %12s %s\n", "ID", "METRIC", "FLAGS",
	       "COUNT", "NONFIN", "LAST", "EPOCH-NOW", "MIN", "MAX", "LAST-EPOCH");
	for (int id = 0; id < n; id++)
		stat_metric(r, id);
	mring_reader_close(r);
	if (sigbus_zero_pages()) {
		fprintf(stderr, "mring stat: %s was truncated while it was read: the "
			"figures above may be zeros\n", argv[1]);
		return EXIT_USAGE;
	}
	return 0;
}

/* ---- rm -------------------------------------------------------------- */

/*
 * Removal holds the producer lock byte (as MRING_CFG_REPLACE does) from
 * the last check to the unlink: no creator can take the file over in
 * between, and we check that the path still names the file we locked.
 * A write lock when we may open the file for writing, which also keeps
 * two `mring rm` apart; else a read lock, which still stops creators.
 */
struct rm_file {
	int fd;
	struct stat st;
};

static int rm_lock(const char *path, struct rm_file *f)
{
	struct flock fl = {
		.l_type = F_WRLCK, .l_whence = SEEK_SET,
		.l_start = _MRING_LOCK_PRODUCER, .l_len = 1,
	};
	int flags = O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;

	/* O_NONBLOCK: a FIFO swapped in at the path must not hang us */
	f->fd = open(path, O_RDWR | flags);
	if (f->fd < 0 && (errno == EACCES || errno == EROFS)) {
		f->fd = open(path, O_RDONLY | flags);
		fl.l_type = F_RDLCK;
	}
	if (f->fd < 0)
		return -errno;
	if (fstat(f->fd, &f->st) < 0 || !S_ISREG(f->st.st_mode)) {
		close(f->fd);
		return -EPROTO;
	}
	if (fcntl(f->fd, F_OFD_SETLK, &fl) < 0) {
		int err = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;

		close(f->fd);
		return err;
	}
	return 0;
}

/* Unlink @path if it is still the file @f locked; closes @f. */
static int rm_unlink(const char *path, struct rm_file *f)
{
	struct stat now;
	int ret = 0;

	if (lstat(path, &now) < 0)
		ret = -errno;
	else if (now.st_dev != f->st.st_dev || now.st_ino != f->st.st_ino)
		ret = -ESTALE;		/* replaced since we looked */
	else if (unlink(path) < 0)
		ret = -errno;
	close(f->fd);			/* drops our lock */
	return ret;
}

static int rm_fail(const char *path, int err)
{
	fprintf(stderr, "mring rm: %s: %s; not removed\n", path,
		err == -ESTALE ? "replaced while we looked" :
		err == -EBUSY ? "a producer took it over" :
		err == -EPROTO ? "not an mring segment" : strerror(-err));
	return EXIT_USAGE;
}

/*
 * mring_reader_open() said -EAGAIN: the file is empty, or its header was
 * never published (magic 0).  What a creator killed inside
 * mring_writer_open() leaves, unless a creator is at work right now.
 * Same rule as MRING_CFG_REPLACE: unlocked, regular, first 8 bytes 0,
 * size a multiple of 4096 (0 included); anything else is not ours.
 */
static int rm_unpublished(const char *path, bool force)
{
	struct rm_file f;
	uint64_t magic = 0;
	char what[96];
	int ret;

	ret = rm_lock(path, &f);
	if (ret == -EBUSY) {
		fprintf(stderr, "mring rm: %s: a producer is creating it now (it holds "
			"the producer lock); not removed\n", path);
		return EXIT_USAGE;
	}
	if (ret < 0)
		return rm_fail(path, ret);
	if (f.st.st_size >= (off_t)sizeof(magic) &&
	    pread(f.fd, &magic, sizeof(magic), 0) != (ssize_t)sizeof(magic))
		magic = 1;
	if (magic != 0 || f.st.st_size % 4096) {
		close(f.fd);
		return rm_fail(path, -EPROTO);
	}
	if (f.st.st_size == 0)
		snprintf(what, sizeof(what), "an empty file");
	else
		snprintf(what, sizeof(what), "a segment of %lld bytes whose header was never "
			 "published", (long long)f.st.st_size);
	if (!force) {
		close(f.fd);
		fprintf(stderr, "mring rm: %s: %s, left by a producer killed inside "
			"mring_writer_open (no producer holds it); `mring rm --force %s` "
			"removes it\n", path, what, path);
		return EXIT_USAGE;
	}
	ret = rm_unlink(path, &f);
	if (ret < 0)
		return rm_fail(path, ret);
	fprintf(stderr, "mring rm: %s: removed %s, left by a producer killed inside "
		"mring_writer_open\n", path, what);
	return 0;
}

/*
 * Records a removal would lose: written - read.  In OVERWRITE mode the
 * ring holds at most its capacity of them; the rest of written - read
 * was overwritten already (lost whatever we do), so the count is
 * min(written - read, capacity), and @gone gets the difference.
 */
static uint64_t rm_backlog(const struct mring_status *st, uint64_t *gone)
{
	uint64_t behind = st->written > st->read ? st->written - st->read : 0;

	*gone = 0;
	if (st->on_full == MRING_FULL_OVERWRITE && behind > st->capacity) {
		*gone = behind - st->capacity;
		behind = st->capacity;
	}
	return behind;
}

static int rm_one(const char *path, bool force)
{
	struct mring_reader *r;
	struct mring_status st;
	struct rm_file f;
	uint64_t lost, gone, created;
	int ret = mring_reader_open(path, MRING_OBSERVE, &r);

	if (ret == -EAGAIN)
		return rm_unpublished(path, force);
	if (ret < 0) {
		char why[4400];

		fprintf(stderr, "mring rm: %s: %s; not removed\n", path,
			seg_open_error(path, ret, why, sizeof(why)));
		return EXIT_USAGE;
	}
	mring_status_read(r, &st);
	mring_reader_close(r);
	if (st.alive) {
		fprintf(stderr, "mring rm: %s: producer %d is alive; not removed\n", path, st.pid);
		return EXIT_USAGE;
	}
	lost = rm_backlog(&st, &gone);
	if (lost && !force) {
		fprintf(stderr, "mring rm: %s: %llu record%s written but not drained would "
			"be lost (producer %s)", path, (unsigned long long)lost,
			lost == 1 ? "" : "s", producer_state(&st));
		if (st.on_full == MRING_FULL_OVERWRITE)
			fprintf(stderr, "; an OVERWRITE ring holds at most its capacity of "
				"%llu, %llu older ones were overwritten already",
				(unsigned long long)st.capacity, (unsigned long long)gone);
		fprintf(stderr, "; not removed. `mring drain` them first, or "
			"`mring rm --force %s`\n", path);
		return EXIT_USAGE;
	}
	ret = rm_lock(path, &f);
	if (ret < 0)
		return rm_fail(path, ret);
	/* the file we locked is the segment we looked at, not a successor */
	if (pread(f.fd, &created, sizeof(created),
		  offsetof(struct _mring_shm_hdr, id.created_ns)) != (ssize_t)sizeof(created) ||
	    (int64_t)created != st.created_ns) {
		close(f.fd);
		return rm_fail(path, -ESTALE);
	}
	ret = rm_unlink(path, &f);
	if (ret < 0)
		return rm_fail(path, ret);
	if (lost)
		fprintf(stderr, "mring rm: %s: removed with %llu undrained record%s\n", path,
			(unsigned long long)lost, lost == 1 ? "" : "s");
	return 0;
}

static const char rm_usage[] =
	"usage: mring rm [--force] SEGMENT...\n"
	"Removes segments whose producer is gone (closed or crashed) and whose\n"
	"records were all drained.  Never removes a live segment, or a file that\n"
	"is not an mring segment (a symlink, a FIFO, other data).\n"
	"Without --force it also refuses, saying what would be lost:\n"
	"  - a segment with records written but not drained (written - read; an\n"
	"    OVERWRITE ring holds at most its capacity of them, the older ones\n"
	"    are overwritten already),\n"
	"  - an empty or unpublished file that a producer killed inside\n"
	"    mring_writer_open left behind (no producer holds it).\n"
	"  -f, --force   remove those too\n";

int cmd_rm(int argc, char **argv)
{
	struct seglist l;
	bool force = false, opts = true;
	char **segs;
	int i, n = 0, ret, status = 0;

	if (wants_help(argc, argv)) {
		fputs(rm_usage, stdout);
		return 0;
	}
	segs = calloc((size_t)argc, sizeof(*segs));
	if (!segs) {
		fprintf(stderr, "mring rm: %s\n", strerror(ENOMEM));
		return EXIT_USAGE;
	}
	for (i = 1; i < argc; i++) {
		if (opts && !strcmp(argv[i], "--")) {
			opts = false;
		} else if (opts && (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-f"))) {
			force = true;
		} else if (opts && argv[i][0] == '-') {
			fprintf(stderr, "mring rm: unknown option '%s'\n%s", argv[i], rm_usage);
			free(segs);
			return EXIT_USAGE;
		} else {
			segs[n++] = argv[i];
		}
	}
	if (!n) {
		fputs(rm_usage, stderr);
		free(segs);
		return EXIT_USAGE;
	}
	ret = seglist_expand(&l, segs, n);
	if (ret < 0) {
		fprintf(stderr, "mring rm: no segment matches %s%s (in %s)\n", segs[0],
			n > 1 ? " ..." : "", strchr(segs[0], '/') ? "its directory" : mring_dir());
		free(segs);
		return EXIT_USAGE;
	}
	free(segs);
	for (i = 0; i < l.n; i++)
		if (rm_one(l.paths[i], force))
			status = EXIT_USAGE;
	seglist_free(&l);
	return status;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "drain", cmd_drain }, { "ls", cmd_ls }, { "stat", cmd_stat }, { "rm", cmd_rm },
		{ "top", cmd_top }, { "serve", cmd_serve }, { "watch", cmd_watch },
	};

	const size_t ncmds = sizeof(cmds) / sizeof(cmds[0]);
	static char prog[32];

	sigbus_guard();

	if (argc < 2) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    (!strcmp(argv[1], "help") && argc == 2)) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))
		return cmd_version(argc - 1, argv + 1);
	if (!strcmp(argv[1], "help")) {
		/* `mring help drain` is `mring drain --help` */
		char *sub[] = { argv[2], (char *)"--help", NULL };

		if (argc > 3) {
			fputs("usage: mring help [COMMAND]\n", stderr);
			return EXIT_USAGE;
		}
		if (!strcmp(argv[2], "version") || !strcmp(argv[2], "help")) {
			fputs(usage, stdout);
			return 0;
		}
		for (size_t i = 0; i < ncmds; i++)
			if (!strcmp(argv[2], cmds[i].name))
				return cmds[i].fn(2, sub);
		fprintf(stderr, "mring help: unknown command '%s'\n%s", argv[2], usage);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "version"))
		return cmd_version(argc - 1, argv + 1);
	for (size_t i = 0; i < ncmds; i++) {
		if (strcmp(argv[1], cmds[i].name))
			continue;
		/* getopt_long prefixes its messages with argv[0] */
		snprintf(prog, sizeof(prog), "mring %s", cmds[i].name);
		argv[1] = prog;
		return cmds[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "mring: unknown command '%s'\n%s", argv[1], usage);
	return EXIT_USAGE;
}
