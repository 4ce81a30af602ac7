// SPDX-License-Identifier: MIT
/*
 * test_sink_csv.c - the CSV sink of `mring drain`: Lightning's layout
 * (sorted union of keys, sparse cells), exact numbers, one rewrite per
 * new key set, and resume to the last commit whatever was killed when.
 *
 * Every file is read back by tests/csv_check.py (Python's csv module, in
 * Debian's /usr/bin/python3), and what it prints is compared with
 * expectations built here from C literals, not from the sink's output.
 *
 * The implementation is included directly: no header or build change.
 */
#include "../src/tool/sink_csv.c"

#include <criterion/criterion.h>
#include <float.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* ---- scratch directory, removed at exit (each test is its own process) ---- */

static char tmp_root[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	return remove(p);
}

static void tmp_cleanup(void)
{
	if (tmp_root[0])
		nftw(tmp_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh DIR/a/b (not created: the sink must mkdir -p it). */
static const char *csv_dir(void)
{
	static char dir[128];

	snprintf(tmp_root, sizeof(tmp_root), "/tmp/mring-csv-XXXXXX");
	cr_assert(mkdtemp(tmp_root), "mkdtemp: %s", strerror(errno));
	atexit(tmp_cleanup);
	snprintf(dir, sizeof(dir), "%s/a/b", tmp_root);
	return dir;
}

static const char *csv_file(const char *dir)
{
	static char path[160];

	snprintf(path, sizeof(path), "%s/metrics.csv", dir);
	return path;
}

static struct sink *open_ok(const char *dir, const struct sink_state *st)
{
	struct sink *s = NULL;
	int err = sink_csv_ops.open(&s, dir, st);

	cr_assert(err == 0, "open: %s", strerror(-err));
	return s;
}

static int put(struct sink *s, enum row_kind kind, uint64_t step, uint32_t epoch,
	       int32_t rank, int n, const char *const *keys, const double *vals)
{
	struct row r = { .kind = kind, .step = step, .epoch = epoch, .rank = rank,
			 .n = n, .keys = keys, .vals = vals };

	return sink_csv_ops.write(s, &r);
}

/* a sink_state freed at the end of its scope */
#define STATE	__attribute__((cleanup(sink_state_clear))) struct sink_state

#define KEYS(...)	((const char *const[]){ __VA_ARGS__ })
#define VALS(...)	((const double[]){ __VA_ARGS__ })
#define NARGS(...)	((int)(sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(char *)))

/* one ROW_STEP with rank -1 */
#define PUT_OK(s, step, epoch, keys, vals) \
	cr_assert_eq(put(s, ROW_STEP, step, epoch, -1, \
			 (int)(sizeof(keys) / sizeof(char *)), keys, vals), 0)

static void commit_ok(struct sink *s, struct sink_state *st)
{
	int err = sink_csv_ops.commit(s, st);

	cr_assert(err == 0, "commit: %s", strerror(-err));
}

static off_t file_size(const char *path)
{
	struct stat sb;

	cr_assert(stat(path, &sb) == 0, "stat %s: %s", path, strerror(errno));
	return sb.st_size;
}

static ino_t file_ino(const char *path)
{
	struct stat sb;

	cr_assert(stat(path, &sb) == 0, "stat %s: %s", path, strerror(errno));
	return sb.st_ino;
}

static char *slurp(const char *path)
{
	static char text[1 << 20];
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert(f, "open %s: %s", path, strerror(errno));
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	return text;
}

/* ---- expectations, in csv_check.py's canonical form ---- */

struct cell {
	const char *key;
	int is_int;
	long long i;
	double d;
};

#define I(k, v)	((struct cell){ (k), 1, (v), 0 })
#define D(k, v)	((struct cell){ (k), 0, 0, (v) })

static char expect[1 << 16];

static void ex_puts(const char *t)
{
	size_t len = strlen(expect);

	cr_assert(len + strlen(t) < sizeof(expect));
	strcat(expect + len, t);
}

/* a JSON string as json.dumps writes it (ASCII keys only) */
static void ex_str(const char *t)
{
	char c[3] = { 0 };

	ex_puts("\"");
	for (; *t; t++) {
		c[0] = *t == '"' || *t == '\\' ? '\\' : *t;
		c[1] = c[0] == '\\' ? *t : '\0';
		ex_puts(c);
	}
	ex_puts("\"");
}

static void ex_header(const char *const *names, int n)
{
	ex_puts("[");
	for (int i = 0; i < n; i++) {
		if (i)
			ex_puts(", ");
		ex_str(names[i]);
	}
	ex_puts("]\n");
}

static int cell_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cell *)a)->key, ((const struct cell *)b)->key);
}

static void ex_row(struct cell *c, int n)
{
	char t[64];
	uint64_t b;

	qsort(c, (size_t)n, sizeof(*c), cell_cmp);
	ex_puts("{");
	for (int i = 0; i < n; i++) {
		if (i)
			ex_puts(", ");
		ex_str(c[i].key);
		if (c[i].is_int) {
			snprintf(t, sizeof(t), ": %lld", c[i].i);
		} else {
			memcpy(&b, &c[i].d, sizeof(b));
			snprintf(t, sizeof(t), ": \"%016" PRIx64 "\"", b);
		}
		ex_puts(t);
	}
	ex_puts("}\n");
}

#define EX_HEADER(...)	ex_header(KEYS(__VA_ARGS__), NARGS(__VA_ARGS__))
#define EX_ROW(...)	ex_row((struct cell[]){ __VA_ARGS__ }, \
			       (int)(sizeof((struct cell[]){ __VA_ARGS__ }) / sizeof(struct cell)))

/* tests/csv_check.py next to this source file */
static const char *checker(void)
{
	static char path[512];
	const char *slash = strrchr(__FILE__, '/');
	int dlen = slash ? (int)(slash - __FILE__) : 1;

	snprintf(path, sizeof(path), "%.*s/csv_check.py", dlen, slash ? __FILE__ : ".");
	return path;
}

/* Run the independent reader on @path and compare with expect[]. */
static void check_file(const char *path)
{
	static char got[1 << 16];
	char cmd[1024];
	size_t n = 0, k;
	FILE *p;
	int rc;

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' '%s'", checker(), path);
	p = popen(cmd, "r");
	cr_assert(p, "popen: %s", strerror(errno));
	while ((k = fread(got + n, 1, sizeof(got) - 1 - n, p)) > 0)
		n += k;
	got[n] = '\0';
	rc = pclose(p);
	cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "csv_check.py failed (%d):\n%s", rc, got);
	cr_assert_str_eq(got, expect);
	expect[0] = '\0';
}

/* ---- layout ---- */

Test(sink_csv, sparse_rows_lightning_layout)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);

	cr_assert_str_eq(sink_csv_ops.path(s), path);
	PUT_OK(s, 49, 0, KEYS("train_loss"), VALS(0.71));
	PUT_OK(s, 99, 0, KEYS("val_loss"), VALS(0.65));
	PUT_OK(s, 99, 0, KEYS("val_loss", "train_loss"), VALS(0.25, 0.5));
	PUT_OK(s, 149, 1, KEYS("lr"), VALS(0.001));
	commit_ok(s, &st);
	sink_csv_ops.close(s);

	const char *want = "epoch,lr,step,train_loss,val_loss\n"
			   "0,,49,0.71,\n"
			   "0,,99,,0.65\n"
			   "0,,99,0.5,0.25\n"
			   "1,0.001,149,,\n";
	cr_assert_str_eq(slurp(path), want);
	cr_assert_eq(st.size, strlen(want));
	cr_assert_str_eq(st.extra, "epoch,lr,step,train_loss,val_loss");

	EX_HEADER("epoch", "lr", "step", "train_loss", "val_loss");
	EX_ROW(I("epoch", 0), I("step", 49), D("train_loss", 0.71));
	EX_ROW(I("epoch", 0), I("step", 99), D("val_loss", 0.65));
	EX_ROW(I("epoch", 0), I("step", 99), D("train_loss", 0.5), D("val_loss", 0.25));
	EX_ROW(I("epoch", 1), I("step", 149), D("lr", 0.001));
	check_file(path);
}

Test(sink_csv, header_quotes_commas_and_quotes)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);

	PUT_OK(s, 1, 0, KEYS("x", "a,b", "say \"hi\""), VALS(1, 2, 3));
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(st.extra, "\"a,b\",epoch,\"say \"\"hi\"\"\",step,x");

	/* resume parses the quoted header; a new quoted key rewrites it */
	s = open_ok(dir, &st);
	PUT_OK(s, 2, 0, KEYS("m,\"n\""), VALS(4));
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(st.extra,
			 "\"a,b\",epoch,\"m,\"\"n\"\"\",\"say \"\"hi\"\"\",step,x");
	cr_assert_eq(st.size, (uint64_t)file_size(path));

	EX_HEADER("a,b", "epoch", "m,\"n\"", "say \"hi\"", "step", "x");
	EX_ROW(D("a,b", 2), I("epoch", 0), D("say \"hi\"", 3), I("step", 1), D("x", 1));
	EX_ROW(I("epoch", 0), D("m,\"n\"", 4), I("step", 2));
	check_file(path);
}

Test(sink_csv, new_key_mid_order_rewrites_once)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);
	char tmp[200];
	ino_t ino1, ino2;

	for (int i = 1; i <= 3; i++)
		PUT_OK(s, i, 0, KEYS("alpha", "zeta"), VALS(i + 0.5, -i));
	commit_ok(s, &st);
	ino1 = file_ino(path);

	/* "mid" sorts between "epoch" and "step": old rows gain a middle cell */
	PUT_OK(s, 4, 0, KEYS("alpha", "mid", "zeta"), VALS(4.5, 44, -4));
	PUT_OK(s, 5, 1, KEYS("mid"), VALS(55));
	commit_ok(s, &st);
	ino2 = file_ino(path);
	cr_assert_neq(ino1, ino2, "header not rewritten");
	snprintf(tmp, sizeof(tmp), "%s/.metrics.csv.tmp", dir);
	cr_assert(access(tmp, F_OK) != 0, "temporary file left behind");

	/* known keys only: appended, no second rewrite */
	PUT_OK(s, 6, 1, KEYS("zeta", "mid"), VALS(-6, 66));
	commit_ok(s, &st);
	cr_assert_eq(file_ino(path), ino2, "rewritten without a new key");
	sink_csv_ops.close(s);

	cr_assert_str_eq(slurp(path), "alpha,epoch,mid,step,zeta\n"
				      "1.5,0,,1,-1\n"
				      "2.5,0,,2,-2\n"
				      "3.5,0,,3,-3\n"
				      "4.5,0,44,4,-4\n"
				      ",1,55,5,\n"
				      ",1,66,6,-6\n");
	cr_assert_eq(st.size, (uint64_t)file_size(path));

	EX_HEADER("alpha", "epoch", "mid", "step", "zeta");
	for (int i = 1; i <= 3; i++)
		EX_ROW(D("alpha", i + 0.5), I("epoch", 0), I("step", i), D("zeta", -i));
	EX_ROW(D("alpha", 4.5), I("epoch", 0), D("mid", 44), I("step", 4), D("zeta", -4));
	EX_ROW(I("epoch", 1), D("mid", 55), I("step", 5));
	EX_ROW(I("epoch", 1), D("mid", 66), I("step", 6), D("zeta", -6));
	check_file(path);
}

/* ---- numbers ---- */

Test(sink_csv, nan_and_inf)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);
	/* bits as Python's float() produces them (NaN sign and payload dropped) */
	union { uint64_t u; double d; } b[4] = { { 0x7ff8000000000000ull },
		{ 0x7ff0000000000000ull }, { 0xfff0000000000000ull }, { 0x8000000000000000ull } };

	PUT_OK(s, 1, 0, KEYS("a", "b", "c", "d", "e"), VALS(NAN, INFINITY, -INFINITY, -NAN, -0.0));
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(slurp(path), "a,b,c,d,e,epoch,step\nnan,inf,-inf,nan,-0,0,1\n");

	EX_HEADER("a", "b", "c", "d", "e", "epoch", "step");
	EX_ROW(D("a", b[0].d), D("b", b[1].d), D("c", b[2].d), D("d", b[0].d), D("e", b[3].d),
	       I("epoch", 0), I("step", 1));
	check_file(path);
}

Test(sink_csv, numbers_round_trip_shortest)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	static const char *const keys[] = { "v0", "v1", "v2", "v3", "v4", "v5",
					    "v6", "v7", "v8", "v9" };
	const double v[] = { 0.1, 1.0 / 3, 1e-300, 5e-324, 0.1 + 0.2, DBL_MAX,
			     100, 1e22, 2.2250738585072014e-308, 123456789012345678.0 };
	const char *text[] = { "0.1", "0.3333333333333333", "1e-300",
			       "4.94065645841247e-324", "0.30000000000000004",
			       "1.7976931348623157e+308", "100", "1e+22",
			       "2.2250738585072014e-308", "1.2345678901234568e+17" };
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);
	char want[512] = "epoch,step,v0,v1,v2,v3,v4,v5,v6,v7,v8,v9\n0,7";
	struct cell c[12];

	cr_assert_eq(put(s, ROW_EPOCH, 7, 0, -1, 10, keys, v), 0);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	for (int i = 0; i < 10; i++) {
		strcat(want, ",");
		strcat(want, text[i]);
	}
	strcat(want, "\n");
	cr_assert_str_eq(slurp(path), want);

	EX_HEADER("epoch", "step", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9");
	for (int i = 0; i < 10; i++)
		c[i] = D(keys[i], v[i]);
	c[10] = I("epoch", 0);
	c[11] = I("step", 7);
	ex_row(c, 12);
	check_file(path);
}

Test(sink_csv, rank_and_lost_columns)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);
	struct row lost = { .kind = ROW_LOST, .step = 5, .epoch = 0, .rank = 3, .lost = 7 };

	cr_assert_eq(put(s, ROW_STEP, 4, 0, 3, 1, KEYS("loss"), VALS(0.5)), 0);
	cr_assert_eq(sink_csv_ops.write(s, &lost), 0);
	cr_assert_eq(put(s, ROW_EPOCH, 9, 1, 3, 1, KEYS("loss_epoch"), VALS(0.25)), 0);
	commit_ok(s, &st);
	sink_csv_ops.close(s);

	cr_assert_str_eq(slurp(path), "epoch,loss,loss_epoch,mring_lost,rank,step\n"
				      "0,0.5,,,3,4\n"
				      "0,,,7,3,5\n"
				      "1,,0.25,,3,9\n");
	EX_HEADER("epoch", "loss", "loss_epoch", "mring_lost", "rank", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("rank", 3), I("step", 4));
	EX_ROW(I("epoch", 0), I("mring_lost", 7), I("rank", 3), I("step", 5));
	EX_ROW(I("epoch", 1), D("loss_epoch", 0.25), I("rank", 3), I("step", 9));
	check_file(path);
}

/* ---- resume ---- */

/* Enough rows of known keys to overflow the 64 KiB buffer: they hit the disk. */
static void spill(struct sink *s, uint64_t from)
{
	for (uint64_t i = 0; i < 4000; i++)
		PUT_OK(s, from + i, 9, KEYS("loss"), VALS(1.0 / 7));
}

/* The first two committed rows (keys loss), as most resume tests use. */
static struct sink *two_rows(const char *dir, struct sink_state *st)
{
	struct sink *s = open_ok(dir, NULL);

	PUT_OK(s, 1, 0, KEYS("loss"), VALS(0.5));
	PUT_OK(s, 2, 0, KEYS("loss"), VALS(0.25));
	commit_ok(s, st);
	cr_assert_str_eq(st->extra, "epoch,loss,step");
	return s;
}

Test(sink_csv, resume_drops_uncommitted_rows)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st = { 0 };
	struct sink *s = two_rows(dir, &st1);
	ino_t ino = file_ino(path);

	spill(s, 100);
	cr_assert_gt(file_size(path), (off_t)st1.size, "spill did not reach the disk");
	cr_assert_eq(file_ino(path), ino, "known keys only, yet rewritten");
	sink_csv_ops.close(s);		/* killed: no commit */

	s = open_ok(dir, &st1);
	cr_assert_eq(file_size(path), (off_t)st1.size);
	PUT_OK(s, 3, 0, KEYS("loss"), VALS(0.125));
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_eq(st.size, (uint64_t)file_size(path));

	EX_HEADER("epoch", "loss", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("step", 1));
	EX_ROW(I("epoch", 0), D("loss", 0.25), I("step", 2));
	EX_ROW(I("epoch", 0), D("loss", 0.125), I("step", 3));
	check_file(path);
}

Test(sink_csv, resume_after_sigkill)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st = { 0 };
	struct sink *s = two_rows(dir, &st1);
	pid_t pid;
	int ws;

	sink_csv_ops.close(s);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		/*
		 * A failed cr_assert in a forked child hangs the test (see
		 * tests/helpers.h): the child only _exit()s, with a code per
		 * failure, and _exit keeps tmp_cleanup() for the parent.
		 */
		struct sink *c = NULL;
		struct row r = { .kind = ROW_STEP, .epoch = 1, .rank = -1, .n = 1,
				 .keys = KEYS("loss"), .vals = VALS(2) };

		if (sink_csv_ops.open(&c, dir, &st1))
			_exit(2);
		for (r.step = 10; r.step < 10000; r.step++)
			if (sink_csv_ops.write(c, &r))
				_exit(3);
		kill(getpid(), SIGKILL);
		_exit(4);
	}
	cr_assert(waitpid(pid, &ws, 0) == pid);
	cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL,
		  "the child that writes rows and kills itself: %s %d "
		  "(exit 2: resume failed, 3: a write failed, 4: still alive after SIGKILL)",
		  WIFEXITED(ws) ? "exit" : WIFSIGNALED(ws) ? "signal" : "wait status",
		  WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? WTERMSIG(ws) : ws);
	cr_assert_gt(file_size(path), (off_t)st1.size);

	s = open_ok(dir, &st1);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_eq(st.size, st1.size);
	cr_assert_str_eq(st.extra, st1.extra);

	EX_HEADER("epoch", "loss", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("step", 1));
	EX_ROW(I("epoch", 0), D("loss", 0.25), I("step", 2));
	check_file(path);
}

/*
 * The rewrite of a commit was renamed into place, then the process died
 * before the drain recorded that commit: resume from the previous state.
 */
Test(sink_csv, resume_after_rewrite_before_state_saved)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st2 = { 0 }, st = { 0 };
	struct sink *s = two_rows(dir, &st1);

	PUT_OK(s, 3, 0, KEYS("acc", "loss"), VALS(0.75, 0.125));
	commit_ok(s, &st2);
	sink_csv_ops.close(s);
	cr_assert_str_eq(st2.extra, "acc,epoch,loss,step");

	s = open_ok(dir, &st1);
	commit_ok(s, &st);
	cr_assert_str_eq(st.extra, "acc,epoch,loss,step");
	cr_assert_eq(st.size, (uint64_t)file_size(path));
	cr_assert_str_eq(slurp(path), "acc,epoch,loss,step\n,0,0.5,1\n,0,0.25,2\n");
	/* the drain replays step 3 */
	PUT_OK(s, 3, 0, KEYS("acc", "loss"), VALS(0.75, 0.125));
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_eq(st.size, st2.size);

	EX_HEADER("acc", "epoch", "loss", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("step", 1));
	EX_ROW(I("epoch", 0), D("loss", 0.25), I("step", 2));
	EX_ROW(D("acc", 0.75), I("epoch", 0), D("loss", 0.125), I("step", 3));
	check_file(path);

	/* and with the recorded state, nothing is dropped */
	s = open_ok(dir, &st2);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_eq(st.size, st2.size);
	cr_assert_str_eq(st.extra, st2.extra);
}

/* The brief's case: exactly the committed rows under a newer header. */
Test(sink_csv, resume_accepts_rewritten_file_as_is)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	const char *old = "epoch,loss,step\n0,0.5,1\n0,0.25,2\n";
	const char *now = "acc,epoch,loss,step\n,0,0.5,1\n,0,0.25,2\n";
	struct sink_state st1 = { .size = strlen(old), .extra = "epoch,loss,step" };
	STATE st = { 0 };
	struct sink *s;
	FILE *f;

	cr_assert_eq(mkdir_p(dir), 0);
	f = fopen(path, "w");
	cr_assert(f);
	fputs(now, f);
	fclose(f);

	s = open_ok(dir, &st1);
	commit_ok(s, &st);
	cr_assert_eq(st.size, strlen(now));
	cr_assert_str_eq(st.extra, "acc,epoch,loss,step");
	PUT_OK(s, 3, 0, KEYS("acc"), VALS(1));
	commit_ok(s, &st);
	sink_csv_ops.close(s);

	EX_HEADER("acc", "epoch", "loss", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("step", 1));
	EX_ROW(I("epoch", 0), D("loss", 0.25), I("step", 2));
	EX_ROW(D("acc", 1), I("epoch", 0), I("step", 3));
	check_file(path);
}

/* A buffer overflow forced the rewrite, carrying uncommitted rows. */
Test(sink_csv, resume_after_overflow_rewrite)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st = { 0 };
	struct sink *s = two_rows(dir, &st1);
	ino_t ino = file_ino(path);

	PUT_OK(s, 3, 0, KEYS("acc"), VALS(0.75));
	spill(s, 100);
	cr_assert_neq(file_ino(path), ino, "no rewrite on overflow");
	cr_assert_gt(file_size(path), (off_t)st1.size);
	sink_csv_ops.close(s);

	s = open_ok(dir, &st1);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(slurp(path), "acc,epoch,loss,step\n,0,0.5,1\n,0,0.25,2\n");
	cr_assert_eq(st.size, (uint64_t)file_size(path));

	EX_HEADER("acc", "epoch", "loss", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("step", 1));
	EX_ROW(I("epoch", 0), D("loss", 0.25), I("step", 2));
	check_file(path);
}

Test(sink_csv, resume_quoted_header_after_rewrite)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st2 = { 0 }, st = { 0 };
	struct sink *s = open_ok(dir, NULL);

	PUT_OK(s, 1, 0, KEYS("q\"1,", "z"), VALS(1, 2));
	commit_ok(s, &st1);
	PUT_OK(s, 2, 0, KEYS("a,\"b"), VALS(3));
	commit_ok(s, &st2);
	sink_csv_ops.close(s);

	s = open_ok(dir, &st1);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(st.extra, st2.extra);

	EX_HEADER("a,\"b", "epoch", "q\"1,", "step", "z");
	EX_ROW(I("epoch", 0), D("q\"1,", 1), I("step", 1), D("z", 2));
	check_file(path);
}

/* ---- errors ---- */

Test(sink_csv, open_refuses_and_checks)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st0 = { 0 };
	struct sink_state bad;		/* borrows st1's text: not freed */
	struct sink *s = two_rows(dir, &st1), *t = NULL;

	sink_csv_ops.close(s);
	cr_assert_eq(sink_csv_ops.open(&t, dir, NULL), -EEXIST);

	/* not a superset of the committed columns: someone else's file */
	bad = st1;
	bad.extra = "epoch,other,step";
	cr_assert_eq(sink_csv_ops.open(&t, dir, &bad), -EBADMSG);
	/* shorter than committed */
	bad = st1;
	bad.size += 10;
	cr_assert_eq(sink_csv_ops.open(&t, dir, &bad), -EBADMSG);

	/* nothing committed: start empty */
	s = open_ok(dir, &st0);
	cr_assert_eq(file_size(path), 0);
	sink_csv_ops.close(s);

	unlink(path);
	cr_assert_eq(sink_csv_ops.open(&t, dir, &st1), -ENOENT);
	s = open_ok(dir, &st0);
	sink_csv_ops.close(s);
	cr_assert_eq(file_size(path), 0);
}

Test(sink_csv, bad_keys_leave_header_alone)
{
	const char *dir = csv_dir();
	STATE st = { 0 };
	struct sink *s = open_ok(dir, NULL);

	cr_assert_eq(put(s, ROW_STEP, 1, 0, -1, 1, KEYS(""), VALS(1)), -EINVAL);
	cr_assert_eq(put(s, ROW_STEP, 1, 0, -1, 1, KEYS("step"), VALS(1)), -EINVAL);
	cr_assert_eq(put(s, ROW_STEP, 1, 0, -1, 1, KEYS("a\nb"), VALS(1)), -EINVAL);
	cr_assert_eq(put(s, ROW_STEP, 1, 0, -1, 2, KEYS("new", "new"), VALS(1, 2)), -EINVAL);
	PUT_OK(s, 1, 0, KEYS("x"), VALS(1));
	cr_assert_eq(put(s, ROW_STEP, 1, 0, -1, 3, KEYS("y", "x", "x"), VALS(1, 2, 3)), -EINVAL);
	commit_ok(s, &st);
	cr_assert_str_eq(st.extra, "epoch,step,x");
	sink_csv_ops.close(s);
}

Test(sink_csv, write_error_truncates_to_commit)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st = { 0 };
	struct sink *s = two_rows(dir, &st1);
	struct rlimit old, lim;
	int err = 0;

	signal(SIGXFSZ, SIG_IGN);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = st1.size + 1000;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	for (uint64_t i = 0; i < 10000 && !err; i++)
		err = put(s, ROW_STEP, 10 + i, 0, -1, 1, KEYS("loss"), VALS(3));
	cr_assert_eq(err, -EFBIG);
	cr_assert_eq(file_size(path), (off_t)st1.size);
	cr_assert_eq(sink_csv_ops.commit(s, &st), -EFBIG, "error not sticky");
	sink_csv_ops.close(s);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

	s = open_ok(dir, &st1);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_eq(st.size, st1.size);
	EX_HEADER("epoch", "loss", "step");
	EX_ROW(I("epoch", 0), D("loss", 0.5), I("step", 1));
	EX_ROW(I("epoch", 0), D("loss", 0.25), I("step", 2));
	check_file(path);
}

/* ---- a shared directory: symlinks, leftovers, a second drain ---- */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

/* A victim file outside the CSV directory, holding @text. */
static const char *victim(const char *text)
{
	static char path[128];

	snprintf(path, sizeof(path), "%s/victim", tmp_root);
	write_file(path, text);
	return path;
}

static bool is_symlink(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode);
}

Test(sink_csv, symlink_at_metrics_csv_is_refused)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 };
	struct sink *s = two_rows(dir, &st1), *t = NULL;
	const char *v;

	sink_csv_ops.close(s);

	/*
	 * Resume: metrics.csv replaced by a link to a file that looks like
	 * it plus a row.  Followed, the resume would cut the target back.
	 */
	v = victim("epoch,loss,step\n0,0.5,1\n0,0.25,2\n0,9,9\n");
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(symlink(v, path), 0);
	cr_assert_eq(sink_csv_ops.open(&t, dir, &st1), -ELOOP);
	cr_assert_str_eq(slurp(v), "epoch,loss,step\n0,0.5,1\n0,0.25,2\n0,9,9\n");

	/* nothing committed yet: would be created or cut to 0 */
	st1.size = 0;
	cr_assert_eq(sink_csv_ops.open(&t, dir, &st1), -ELOOP);
	cr_assert_str_eq(slurp(v), "epoch,loss,step\n0,0.5,1\n0,0.25,2\n0,9,9\n");

	/* fresh, to an empty target: would be taken as an empty leftover */
	v = victim("");
	cr_assert_eq(sink_csv_ops.open(&t, dir, NULL), -ELOOP);
	cr_assert_null(t);
	cr_assert_eq(file_size(v), 0);
	cr_assert(is_symlink(path));
}

/* Planted after open, so the stale-file removal at open does not help. */
Test(sink_csv, symlink_at_temp_file_is_not_followed)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st1 = { 0 }, st = { 0 };
	struct sink *s = two_rows(dir, &st1);
	const char *v = victim("precious\n");
	char tmp[200];

	snprintf(tmp, sizeof(tmp), "%s/.metrics.csv.tmp", dir);
	cr_assert_eq(symlink(v, tmp), 0);
	PUT_OK(s, 3, 0, KEYS("acc"), VALS(0.75));	/* a new key: rewrite */
	commit_ok(s, &st);
	sink_csv_ops.close(s);

	cr_assert_str_eq(slurp(v), "precious\n");
	cr_assert(!is_symlink(path), "metrics.csv is the planted link");
	cr_assert(access(tmp, F_OK) != 0 && !is_symlink(tmp), "temporary name left behind");
	cr_assert_str_eq(slurp(path), "acc,epoch,loss,step\n,0,0.5,1\n,0,0.25,2\n0.75,0,,3\n");
	cr_assert_eq(st.size, (uint64_t)file_size(path));
}

/* A drain killed between creating metrics.csv and recording it. */
Test(sink_csv, fresh_open_reuses_empty_file_only)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 };
	struct sink *s, *t = NULL;

	cr_assert_eq(mkdir_p(dir), 0);
	write_file(path, "");
	s = open_ok(dir, NULL);
	PUT_OK(s, 1, 0, KEYS("loss"), VALS(0.5));
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(slurp(path), "epoch,loss,step\n0,0.5,1\n");

	/* not empty: someone's data */
	cr_assert_eq(sink_csv_ops.open(&t, dir, NULL), -EEXIST);
	cr_assert_str_eq(slurp(path), "epoch,loss,step\n0,0.5,1\n");

	/* empty but another user's: not ours to take */
	if (geteuid() == 0) {
		write_file(path, "");
		cr_assert_eq(chown(path, 65534, 65534), 0);
		cr_assert_eq(sink_csv_ops.open(&t, dir, NULL), -EEXIST);
	}
}

/* Empty, but a live drain has it open: a second one must not share it. */
Test(sink_csv, second_drain_on_same_output_is_busy)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	STATE st = { 0 }, st2 = { 0 };
	struct sink *s = open_ok(dir, NULL), *t = NULL;

	cr_assert_eq(file_size(path), 0);
	cr_assert_eq(sink_csv_ops.open(&t, dir, NULL), -EBUSY);
	PUT_OK(s, 1, 0, KEYS("loss"), VALS(0.5));
	commit_ok(s, &st);
	cr_assert_eq(sink_csv_ops.open(&t, dir, &st), -EBUSY);
	/* a rewrite hands the lock on to the new file */
	PUT_OK(s, 2, 0, KEYS("acc"), VALS(1));
	commit_ok(s, &st2);
	cr_assert_eq(sink_csv_ops.open(&t, dir, &st2), -EBUSY);
	sink_csv_ops.close(s);
	s = open_ok(dir, &st2);
	sink_csv_ops.close(s);
	cr_assert_null(t);
}

Test(sink_csv, dir_that_is_a_file_is_enotdir)
{
	const char *dir = csv_dir();
	char file[160], under[200];
	struct sink *t = NULL;

	snprintf(file, sizeof(file), "%s/plain", tmp_root);
	write_file(file, "x");
	snprintf(under, sizeof(under), "%s/sub", file);
	cr_assert_eq(sink_csv_ops.open(&t, file, NULL), -ENOTDIR);
	cr_assert_eq(sink_csv_ops.open(&t, under, NULL), -ENOTDIR);
	cr_assert_null(t);
	(void)dir;
}

/* ---- a header of any length ---- */

#define NBIG	1100

/* Key i of the big header: 72 bytes, in sorted order with i. */
static const char *big_key(int i)
{
	static char names[NBIG][80];

	if (!names[i][0])
		snprintf(names[i], sizeof(names[i]), "k%04d_layer.attention.output.dense.weight.grad_norm_%016d",
			 i, i);
	return names[i];
}

/* "epoch,<NBIG keys>,step" (and ",zz" when @zz), built here. */
static char *big_header(bool zz)
{
	struct buf b = { 0 };

	buf_puts(&b, "epoch");
	for (int i = 0; i < NBIG; i++) {
		buf_putc(&b, ',');
		buf_puts(&b, big_key(i));
	}
	buf_puts(&b, zz ? ",step,zz" : ",step");
	buf_putc(&b, '\0');
	cr_assert(!b.oom);
	return b.p;
}

static void put_big(struct sink *s, uint64_t step)
{
	static const char *keys[NBIG];
	static double vals[NBIG];

	for (int i = 0; i < NBIG; i++) {
		keys[i] = big_key(i);
		vals[i] = i;
	}
	cr_assert_eq(put(s, ROW_STEP, step, 0, -1, NBIG, keys, vals), 0);
}

Test(sink_csv, header_over_64k_commits_and_resumes)
{
	const char *dir = csv_dir(), *path = csv_file(dir);
	char *hdr = big_header(false), *hdr_zz = big_header(true);
	STATE st1 = { 0 }, st2 = { 0 }, st = { 0 };
	struct sink *s = open_ok(dir, NULL);
	const char *text;

	cr_assert_gt(strlen(hdr), 65536);
	put_big(s, 1);
	commit_ok(s, &st1);
	cr_assert_str_eq(st1.extra, hdr);
	cr_assert_eq(st1.size, (uint64_t)file_size(path));
	sink_csv_ops.close(s);

	/* resume, one more row */
	s = open_ok(dir, &st1);
	put_big(s, 2);
	commit_ok(s, &st2);
	cr_assert_str_eq(st2.extra, hdr);
	/* a new key: rewritten under an even longer header, then "killed" */
	PUT_OK(s, 3, 0, KEYS("zz"), VALS(3));
	commit_ok(s, &st);
	cr_assert_str_eq(st.extra, hdr_zz);
	sink_csv_ops.close(s);

	/* resume from before the rewrite: the committed prefix is found */
	s = open_ok(dir, &st2);
	commit_ok(s, &st);
	sink_csv_ops.close(s);
	cr_assert_str_eq(st.extra, hdr_zz);
	text = slurp(path);
	cr_assert_eq(strncmp(text, hdr_zz, strlen(hdr_zz)), 0);
	cr_assert_eq(text[strlen(hdr_zz)], '\n');
	/* two rows of NBIG + 3 cells, ending in ",1," and ",2," (step, zz) */
	text += strlen(hdr_zz) + 1;
	cr_assert_eq(strncmp(text, "0,0,1,2,", 8), 0);
	cr_assert(strstr(text, ",1099,1,\n0,0,1,2,"), "row 1 not whole");
	cr_assert_eq(strcmp(text + strlen(text) - 9, ",1099,2,\n"), 0);
	cr_assert_eq(st.size, (uint64_t)file_size(path));
	free(hdr);
	free(hdr_zz);
}
