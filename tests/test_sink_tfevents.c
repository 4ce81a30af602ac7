// SPDX-License-Identifier: MIT
/*
 * test_sink_tfevents.c - the TensorBoard sink of `mring drain`.
 *
 * The sink's .c is included, so its static encoders can be checked
 * against the golden bytes of the formats reference; the files it writes
 * are read back by tests/tfevents_check.py, which shares no code with it
 * (python3-crc32c for framing, python3-protobuf + protoc for the Event).
 * Expected verifier output is written out by hand here, never produced
 * by the sink's own code.
 */
#include "../src/tool/sink_tfevents.c"

#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define PY		"/usr/bin/python3"
#define WALL_NS		1700000000500000000LL	/* 1700000000.5 s, exact in a double */
#define WALL_TXT	"1700000000.5"

static char tmpdir[64];

static void mk_tmpdir(void)
{
	strcpy(tmpdir, "/tmp/mring-tfev-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	chmod(p, 0755);
	return remove(p);
}

static void rm_tmpdir(void)
{
	if (tmpdir[0])
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* a sink_state freed at the end of its scope */
#define STATE	__attribute__((cleanup(sink_state_clear))) struct sink_state

TestSuite(sink_tfevents, .init = mk_tmpdir, .fini = rm_tmpdir);

/* --- helpers --- */

static char *subdir(const char *name)
{
	static char p[256];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	return p;
}

static int put(struct sink *s, enum row_kind kind, uint64_t step, int32_t rank,
	       int n, const char *const *keys, const double *vals)
{
	struct row r = {
		.kind = kind, .step = step, .rank = rank, .wall_ns = WALL_NS,
		.n = n, .keys = keys, .vals = vals,
	};

	return sink_tfevents_ops.write(s, &r);
}

static int put1(struct sink *s, uint64_t step, const char *key, double v)
{
	return put(s, ROW_STEP, step, -1, 1, &key, &v);
}

static int put_lost(struct sink *s, uint64_t step, int32_t rank, uint64_t lost)
{
	struct row r = {
		.kind = ROW_LOST, .step = step, .rank = rank, .wall_ns = WALL_NS,
		.lost = lost,
	};

	return sink_tfevents_ops.write(s, &r);
}

static uint64_t file_size(const char *path)
{
	struct stat sb;

	cr_assert_eq(stat(path, &sb), 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)sb.st_size;
}

/* Run the verifier; returns its stdout (caller frees), *rc its exit status. */
static char *verify(const char *file, const char *opt, int *rc)
{
	const char *me = __FILE__;
	const char *slash = strrchr(me, '/');
	char cmd[1024], *out = NULL;
	size_t len = 0;
	FILE *o = open_memstream(&out, &len);
	FILE *p;
	int c;

	snprintf(cmd, sizeof(cmd), "%s %.*s/tfevents_check.py %s '%s' 2>&1", PY,
		 slash ? (int)(slash - me) : 1, slash ? me : ".", opt, file);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	while ((c = fgetc(p)) != EOF)
		fputc(c, o);
	*rc = pclose(p);
	fclose(o);
	return out;
}

static void expect_verifier(const char *file, const char *opt, const char *want)
{
	int rc;
	char *got = verify(file, opt, &rc);

	cr_assert_eq(rc, 0, "verifier failed (rc %d) on %s; it needs python3-protobuf "
		     "python3-crc32c protobuf-compiler; output:\n%s", rc, file, got);
	cr_assert_str_eq(got, want);
	free(got);
}

/* --- golden values (docs: formats-and-verifiers.md 1.2, 1.4) --- */

Test(sink_tfevents, crc_golden)
{
	static const unsigned char len24[8] = { 0x18 };

	cr_assert_eq(tfevents_crc32c("123456789", 9), 0xE3069283u);
	cr_assert_eq(tfevents_mask(0xE3069283u), 0xC78AB0E5u);
	cr_assert_eq(tfevents_crc32c("", 0), 0u);
	/* a3 7f 4b 22, little-endian */
	cr_assert_eq(tfevents_mask(tfevents_crc32c(len24, 8)), 0x224b7fa3u);
}

Test(sink_tfevents, record_golden)
{
	static const unsigned char want[] = {
		/* record 0: Event{wall_time=1.5, file_version="brain.Event:2"} */
		0x18, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0x7f, 0x4b, 0x22,
		0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 0x0d,
		'b', 'r', 'a', 'i', 'n', '.', 'E', 'v', 'e', 'n', 't', ':', '2',
		0x2a, 0x28, 0x64, 0x6c,
		/* record 1: step 3, "loss" = 0.5 */
		0x1a, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x9b, 0xd8, 0x2d,
		0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 0x03, 0x2a, 0x0d,
		0x0a, 0x0b, 0x0a, 0x04, 'l', 'o', 's', 's', 0x15, 0, 0, 0, 0x3f,
		0x80, 0x65, 0x5e, 0xe3,
	};
	static const char *const key[] = { "loss" };
	static const double val[] = { 0.5 };
	struct sink s = { .fd = -1 };
	struct row r = {
		.kind = ROW_STEP, .step = 3, .rank = -1, .wall_ns = 1500000000,
		.n = 1, .keys = key, .vals = val,
	};

	cr_assert_eq(tfevents_put_version(&s, 1.5), 0);
	/* through the sink op: small enough to stay in the buffer */
	cr_assert_eq(sink_tfevents_ops.write(&s, &r), 0);
	cr_assert_eq(s.out.len, sizeof(want));
	cr_assert_arr_eq(s.out.p, want, sizeof(want));
	buf_free(&s.out);
}

/* --- whole files, read back by the verifier --- */

Test(sink_tfevents, rows_verified)
{
	static const char *const k2[] = { "loss", "acc" };
	static const double v2[] = { 0.5, 0.1 };
	static const char *const kr[] = { "loss", "lr" };
	static const double vr[] = { -2.0, 1e-3 };
	static const char *const ke[] = { "val_loss_epoch" };
	static const double ve[] = { 0.25 };
	STATE st = { 0 };
	struct sink *s;
	char want_base[4600];
	const char *want =
		"0 loss 0.5 " WALL_TXT "\n"
		"0 acc 0.10000000149011612 " WALL_TXT "\n"
		"7 loss nan " WALL_TXT "\n"
		"8 loss -inf " WALL_TXT "\n"
		"9 rank2/loss -2.0 " WALL_TXT "\n"
		"9 rank2/lr 0.0010000000474974513 " WALL_TXT "\n"
		"10 mring/lost 3.0 " WALL_TXT "\n"
		"10 rank1/mring/lost 16777216.0 " WALL_TXT "\n"
		"10 val_loss_epoch 0.25 " WALL_TXT "\n"
		"1099511627776 big inf " WALL_TXT "\n"
		"records 9 OK\n";

	cr_assert_eq(sink_tfevents_ops.open(&s, subdir("a/b/tb"), NULL), 0);
	cr_assert_eq(put(s, ROW_STEP, 0, -1, 2, k2, v2), 0);	/* step 0: omitted */
	cr_assert_eq(put1(s, 7, "loss", NAN), 0);
	cr_assert_eq(put1(s, 8, "loss", -INFINITY), 0);
	cr_assert_eq(put(s, ROW_STEP, 9, 2, 2, kr, vr), 0);
	cr_assert_eq(put(s, ROW_STEP, 9, 3, 0, NULL, NULL), 0);	/* no keys: no event */
	cr_assert_eq(put_lost(s, 10, -1, 3), 0);
	cr_assert_eq(put_lost(s, 10, 1, 16777217), 0);		/* float rounds */
	cr_assert_eq(put(s, ROW_EPOCH, 10, -1, 1, ke, ve), 0);
	cr_assert_eq(put1(s, 1ull << 40, "big", 1e300), 0);	/* float overflows */
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);

	snprintf(want_base, sizeof(want_base), "events.out.tfevents.");
	cr_assert_eq(strncmp(st.extra, want_base, strlen(want_base)), 0, "%s", st.extra);
	snprintf(want_base, sizeof(want_base), ".%d.mring", (int)getpid());
	cr_assert(strlen(st.extra) > strlen(want_base) &&
		  !strcmp(st.extra + strlen(st.extra) - strlen(want_base), want_base),
		  "%s", st.extra);
	cr_assert(!strchr(st.extra, '/') && !strchr(st.extra, '\n'));
	snprintf(want_base, sizeof(want_base), "%s/%.255s", subdir("a/b/tb"), st.extra);
	cr_assert_str_eq(sink_tfevents_ops.path(s), want_base);
	cr_assert_eq(st.size, file_size(want_base));

	expect_verifier(want_base, "--wall", want);
	sink_tfevents_ops.close(s);
}

/* The verifier is not vacuous: one flipped payload byte fails it. */
Test(sink_tfevents, verifier_catches_corruption)
{
	STATE st = { 0 };
	struct sink *s;
	char *out;
	int rc, fd;
	unsigned char c;

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	cr_assert_eq(put1(s, 1, "loss", 1.0), 0);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	fd = open(sink_tfevents_ops.path(s), O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &c, 1, (off_t)st.size - 6), 1);
	c ^= 0x01;
	cr_assert_eq(pwrite(fd, &c, 1, (off_t)st.size - 6), 1);
	close(fd);
	out = verify(sink_tfevents_ops.path(s), "", &rc);
	cr_assert_neq(rc, 0, "corrupt file accepted:\n%s", out);
	free(out);
	sink_tfevents_ops.close(s);
}

/* Append @n rows "loss" = step at steps from..from+n-1 to @want. */
static void want_rows(FILE *want, uint64_t from, int n)
{
	for (int i = 0; i < n; i++)
		fprintf(want, "%llu loss %llu.0\n", (unsigned long long)(from + i),
			(unsigned long long)(from + i));
}

static void put_rows(struct sink *s, uint64_t from, int n)
{
	for (int i = 0; i < n; i++)
		cr_assert_eq(put1(s, from + i, "loss", (double)(from + i)), 0);
}

Test(sink_tfevents, resume_drops_uncommitted_tail)
{
	STATE st = { 0 }, st2 = { 0 };
	struct sink *s;
	char path[512], *want;
	size_t wlen;
	FILE *w = open_memstream(&want, &wlen);

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	put_rows(s, 1, 3);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	want_rows(w, 1, 3);
	snprintf(path, sizeof(path), "%s", sink_tfevents_ops.path(s));

	/* > 64 KiB of rows: the sink writes them out before any commit */
	put_rows(s, 100, 4000);
	cr_assert_gt(file_size(path), st.size, "no uncommitted tail reached the file");
	sink_tfevents_ops.close(s);		/* killed: no commit */

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &st), 0);
	cr_assert_str_eq(sink_tfevents_ops.path(s), path);
	cr_assert_eq(file_size(path), st.size);
	put_rows(s, 4, 2);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st2), 0);
	want_rows(w, 4, 2);
	cr_assert_str_eq(st2.extra, st.extra);
	cr_assert_eq(st2.size, file_size(path));
	sink_tfevents_ops.close(s);

	/* a second resume with nothing new changes nothing */
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &st2), 0);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	cr_assert_eq(st.size, st2.size);
	sink_tfevents_ops.close(s);

	fprintf(w, "records 6 OK\n");
	fclose(w);
	expect_verifier(path, "", want);
	free(want);
}

Test(sink_tfevents, resume_errors)
{
	STATE st = { 0 };
	struct sink_state bad;		/* texts not owned */
	struct sink *s;
	char path[512];

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	put_rows(s, 1, 3);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	snprintf(path, sizeof(path), "%s", sink_tfevents_ops.path(s));
	sink_tfevents_ops.close(s);

	/* shorter than committed: events we promised are gone */
	cr_assert_eq(truncate(path, (off_t)st.size - 1), 0);
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &st), -EIO);
	cr_assert_null(s);

	/* not a plain tfevents basename */
	bad = st;
	bad.extra = "../events.out.tfevents.x";
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EINVAL);
	bad.extra = "";
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EINVAL);
	bad.extra = NULL;
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EINVAL);
	bad.extra = "metrics.csv";
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EINVAL);

	/* missing */
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &st), -ENOENT);
	cr_assert_null(s);
}

/*
 * Unwritable directory.  The tests usually run as root, which ignores
 * permission bits, so the portable case is a parent that is a regular
 * file (-ENOTDIR); -EACCES is checked only when not root.
 */
Test(sink_tfevents, open_errors)
{
	struct sink *s;
	char *f = subdir("file");
	char dir[300];
	int fd = open(f, O_CREAT | O_WRONLY, 0644);

	cr_assert_geq(fd, 0);
	close(fd);
	snprintf(dir, sizeof(dir), "%s/tb", f);
	cr_assert_eq(sink_tfevents_ops.open(&s, dir, NULL), -ENOTDIR);
	cr_assert_eq(sink_tfevents_ops.open(&s, f, NULL), -ENOTDIR);
	cr_assert_null(s);

	if (geteuid() != 0) {
		char *ro = subdir("ro");

		cr_assert_eq(mkdir(ro, 0555), 0);
		cr_assert_eq(sink_tfevents_ops.open(&s, ro, NULL), -EACCES);
	} else {
		cr_log_info("running as root: -EACCES case skipped");
	}
}

/* Lower the soft file size limit; 0 raises it back to the hard one. */
static void fsize_limit(rlim_t soft)
{
	struct rlimit rl;

	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = soft ? soft : rl.rlim_max;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/*
 * A write that fails part-way (RLIMIT_FSIZE: a short write, then EFBIG,
 * like a disk filling up) rolls the file back to the last commit; the
 * next commit then claims only bytes that were fully written.
 */
Test(sink_tfevents, write_error_rolls_back)
{
	STATE st = { 0 }, st2 = { 0 };
	struct sink *s;
	char path[512], *want;
	size_t wlen;
	FILE *w = open_memstream(&want, &wlen);
	int err = 0;

	signal(SIGXFSZ, SIG_IGN);	/* per test: Criterion forks each one */
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	snprintf(path, sizeof(path), "%s", sink_tfevents_ops.path(s));
	put_rows(s, 1, 2);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	want_rows(w, 1, 2);

	/* failing commit: st2 must stay untouched */
	fsize_limit(st.size + 100);
	put_rows(s, 10, 20);
	st2.size = 0x5a5a5a5a5a5a5a5aull;
	cr_assert_eq(sink_tfevents_ops.commit(s, &st2), -EFBIG);
	cr_assert_eq(st2.size, 0x5a5a5a5a5a5a5a5aull);
	cr_assert_null(st2.extra);
	cr_assert_eq(file_size(path), st.size);

	/* failing flush from write() */
	for (uint64_t i = 1000; i < 100000 && !err; i++)
		err = put1(s, i, "loss", 1.0);
	cr_assert_eq(err, -EFBIG);
	cr_assert_eq(file_size(path), st.size);

	fsize_limit(0);
	put_rows(s, 3, 2);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st2), 0);
	want_rows(w, 3, 2);
	cr_assert_eq(st2.size, file_size(path));
	sink_tfevents_ops.close(s);

	fprintf(w, "records 5 OK\n");
	fclose(w);
	expect_verifier(path, "", want);
	free(want);
}

/* --- a shared directory: symlinks, leftovers, a second drain --- */

static char *slurp(const char *p, size_t *len)
{
	char *text = NULL;
	FILE *f = fopen(p, "r"), *o = open_memstream(&text, len);
	int c;

	cr_assert_not_null(f, "%s: %s", p, strerror(errno));
	while ((c = fgetc(f)) != EOF)
		fputc(c, o);
	fclose(f);
	fclose(o);
	return text;
}

static void copy_file(const char *from, const char *to, const char *tail)
{
	size_t len;
	char *text = slurp(from, &len);
	FILE *f = fopen(to, "w");

	cr_assert_not_null(f);
	fwrite(text, 1, len, f);
	fputs(tail, f);
	cr_assert_eq(fclose(f), 0);
	free(text);
}

Test(sink_tfevents, symlink_at_event_file_is_refused)
{
	STATE st = { 0 };
	struct sink *s;
	char path[512], v[512];
	size_t before, after;
	char *a, *b;

	cr_assert_eq(sink_tfevents_ops.open(&s, subdir("tb"), NULL), 0);
	put_rows(s, 1, 3);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	snprintf(path, sizeof(path), "%s", sink_tfevents_ops.path(s));
	sink_tfevents_ops.close(s);

	/* a link to a file longer than the commit: followed, it is cut back */
	snprintf(v, sizeof(v), "%s", subdir("victim"));
	copy_file(path, v, "and more that is not ours to cut");
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(symlink(v, path), 0);
	a = slurp(v, &before);
	cr_assert_eq(sink_tfevents_ops.open(&s, subdir("tb"), &st), -ELOOP);
	cr_assert_null(s);
	b = slurp(v, &after);
	cr_assert_eq(after, before);
	cr_assert_arr_eq(a, b, before);
	free(a);
	free(b);
}

Test(sink_tfevents, second_drain_on_same_file_is_busy)
{
	STATE st = { 0 };
	struct sink *s, *t;

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	put_rows(s, 1, 2);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	cr_assert_eq(sink_tfevents_ops.open(&t, tmpdir, &st), -EBUSY);
	cr_assert_null(t);
	sink_tfevents_ops.close(s);
	cr_assert_eq(sink_tfevents_ops.open(&t, tmpdir, &st), 0);
	sink_tfevents_ops.close(t);
}

/* Event files in @dir, names sorted, one per line. */
static char *event_files(const char *dir)
{
	struct dirent **list;
	char *out = NULL;
	size_t len = 0;
	FILE *o = open_memstream(&out, &len);
	int n = scandir(dir, &list, NULL, alphasort);

	cr_assert_geq(n, 0);
	for (int i = 0; i < n; i++) {
		if (!strncmp(list[i]->d_name, "events.", 7))
			fprintf(o, "%s\n", list[i]->d_name);
		free(list[i]);
	}
	free(list);
	fclose(o);
	return out;
}

/* A file holding just the version record, as a killed drain leaves one. */
static void version_only(const char *dir, const char *name)
{
	struct sink *s;
	char to[512];

	cr_assert_eq(sink_tfevents_ops.open(&s, dir, NULL), 0);
	snprintf(to, sizeof(to), "%s/%s", dir, name);
	cr_assert_eq(rename(sink_tfevents_ops.path(s), to), 0);
	sink_tfevents_ops.close(s);		/* killed: nothing committed */
	cr_assert_eq(file_size(to), 40);
}

Test(sink_tfevents, fresh_open_removes_version_only_leftovers)
{
	char *dir = strdup(subdir("tb")), *names, p[1024], own[512], want[1024];
	struct sink *live, *s;
	STATE st = { 0 };
	int fd;

	cr_assert_eq(mkdir(dir, 0755), 0);
	/* two killed drains */
	version_only(dir, "events.out.tfevents.0000000001.h.1.mring");
	version_only(dir, "events.out.tfevents.0000000002.h.2.mring");
	/* not leftovers: a live drain's file (locked), a file with events,
	 * TensorBoard's own name, a link to a version-only file */
	cr_assert_eq(sink_tfevents_ops.open(&live, dir, NULL), 0);
	snprintf(p, sizeof(p), "%s/events.out.tfevents.0000000003.h.3.mring", dir);
	cr_assert_eq(rename(sink_tfevents_ops.path(live), p), 0);
	cr_assert_eq(sink_tfevents_ops.open(&s, dir, NULL), 0);
	put_rows(s, 1, 1);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	snprintf(p, sizeof(p), "%s/events.out.tfevents.0000000004.h.4.mring", dir);
	cr_assert_eq(rename(sink_tfevents_ops.path(s), p), 0);
	sink_tfevents_ops.close(s);
	version_only(dir, "events.out.tfevents.0000000005.h");
	snprintf(p, sizeof(p), "%s/events.out.tfevents.0000000005.h", dir);
	snprintf(own, sizeof(own), "%s/events.out.tfevents.0000000006.h.6.mring", dir);
	cr_assert_eq(symlink(p, own), 0);

	/* a restarted drain: one file of its own, the leftovers gone */
	cr_assert_eq(sink_tfevents_ops.open(&s, dir, NULL), 0);
	snprintf(own, sizeof(own), "%s", strrchr(sink_tfevents_ops.path(s), '/') + 1);
	names = event_files(dir);
	snprintf(want, sizeof(want), "events.out.tfevents.0000000003.h.3.mring\n"
		 "events.out.tfevents.0000000004.h.4.mring\n"
		 "events.out.tfevents.0000000005.h\n"
		 "events.out.tfevents.0000000006.h.6.mring\n%s\n", own);
	cr_assert_str_eq(names, want);
	free(names);
	sink_tfevents_ops.close(s);
	sink_tfevents_ops.close(live);

	/* a version record with a byte changed is not ours: kept */
	snprintf(p, sizeof(p), "%s/%s", dir, own);
	snprintf(want, sizeof(want), "%s/events.out.tfevents.0000000007.h.7.mring", dir);
	cr_assert_eq(rename(p, want), 0);
	snprintf(p, sizeof(p), "%s", want);
	fd = open(p, O_WRONLY);
	cr_assert_eq(pwrite(fd, "X", 1, 30), 1);
	close(fd);
	cr_assert_eq(sink_tfevents_ops.open(&s, dir, NULL), 0);
	sink_tfevents_ops.close(s);
	cr_assert_eq(access(p, F_OK), 0, "a foreign file was removed");
	free(dir);
}

/*
 * A drain that committed nothing but the version record, whose file a
 * later fresh drain removed as a leftover, resumes into a new file.
 */
Test(sink_tfevents, resume_of_version_only_file_that_is_gone)
{
	STATE st = { 0 }, st2 = { 0 };
	struct sink *s;

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	cr_assert_eq(st.size, 40);
	sink_tfevents_ops.close(s);
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);	/* removes it */
	sink_tfevents_ops.close(s);
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &st), 0);
	put_rows(s, 1, 1);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st2), 0);
	cr_assert_eq(st2.size, file_size(sink_tfevents_ops.path(s)));
	expect_verifier(sink_tfevents_ops.path(s), "", "1 loss 1.0\nrecords 2 OK\n");
	sink_tfevents_ops.close(s);
}

/*
 * A resume appends at the committed size, so that size must end a
 * record, and the file must start with our version record: a damaged
 * state (or a file changed since) is refused and the file left as it is.
 */
Test(sink_tfevents, resume_needs_the_committed_size_to_end_a_record)
{
	STATE st = { 0 };
	uint64_t ends[4];
	struct sink *s;
	struct sink_state bad = { 0 };
	char path[512];
	size_t len;
	char *before, *after;
	int fd;

	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, NULL), 0);
	cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
	ends[0] = st.size;
	for (int i = 1; i < 4; i++) {
		put_rows(s, (uint64_t)i, 1);
		cr_assert_eq(sink_tfevents_ops.commit(s, &st), 0);
		ends[i] = st.size;
		cr_assert_gt(ends[i], ends[i - 1]);
	}
	snprintf(path, sizeof(path), "%s", sink_tfevents_ops.path(s));
	sink_tfevents_ops.close(s);
	cr_assert_eq(ends[0], 40);
	before = slurp(path, &len);

	bad.extra = st.extra;
	for (uint64_t size = 0; size < ends[3]; size++) {
		bool boundary = false;

		for (int i = 0; i < 4; i++)
			boundary |= size == ends[i];
		if (boundary)
			continue;
		bad.size = size;
		cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EBADMSG,
			     "size %llu accepted", (unsigned long long)size);
	}
	after = slurp(path, &len);
	cr_assert_eq(len, ends[3]);
	cr_assert_arr_eq(after, before, len, "a refused resume changed the file");
	free(after);

	/* a length whose CRC does not match: not our record */
	fd = open(path, O_WRONLY);
	cr_assert_eq(pwrite(fd, "\xff", 1, (off_t)ends[1] + 1), 1);
	bad.size = ends[3];
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EBADMSG);
	cr_assert_eq(pwrite(fd, before + ends[1] + 1, 1, (off_t)ends[1] + 1), 1);
	/* the first record changed: not a file we started */
	cr_assert_eq(pwrite(fd, "X", 1, 30), 1);
	cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), -EBADMSG);
	cr_assert_eq(pwrite(fd, before + 30, 1, 30), 1);
	close(fd);

	/* every record end is a place to resume: last to first */
	for (int i = 3; i >= 0; i--) {
		bad.size = ends[i];
		cr_assert_eq(sink_tfevents_ops.open(&s, tmpdir, &bad), 0, "end %d", i);
		sink_tfevents_ops.close(s);
		cr_assert_eq(file_size(path), ends[i]);
	}
	expect_verifier(path, "", "records 1 OK\n");
	free(before);
}

/* A drain killed between creating its file and the first byte leaves it empty. */
Test(sink_tfevents, fresh_open_removes_empty_leftovers_but_not_locked_ones)
{
	char *dir = strdup(subdir("tb")), dead[1024], live[1024], *names, want[2048];
	struct sink *s;
	int fd, lfd;

	cr_assert_eq(mkdir(dir, 0755), 0);
	snprintf(dead, sizeof(dead), "%s/events.out.tfevents.0000000001.h.1.mring", dir);
	snprintf(live, sizeof(live), "%s/events.out.tfevents.0000000002.h.2.mring", dir);
	fd = open(dead, O_CREAT | O_EXCL | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	/* a drain that created its file and holds the lock, before its first byte */
	lfd = open(live, O_CREAT | O_EXCL | O_WRONLY, 0644);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(flock(lfd, LOCK_EX), 0);

	cr_assert_eq(sink_tfevents_ops.open(&s, dir, NULL), 0);
	names = event_files(dir);
	snprintf(want, sizeof(want), "events.out.tfevents.0000000002.h.2.mring\n%s\n",
		 strrchr(sink_tfevents_ops.path(s), '/') + 1);
	cr_assert_str_eq(names, want);
	free(names);
	sink_tfevents_ops.close(s);
	close(lfd);
	free(dir);
}

/*
 * Drains starting side by side in one directory: each one's scan may see
 * the others' files empty, between their creation and their lock.  Every
 * drain must end up with its own file, still in the directory, holding
 * what it committed.  Children, so that each has its own pid and name.
 */
Test(sink_tfevents, drains_starting_together_keep_their_files)
{
	enum { WORKERS = 3, EACH = 150 };
	char *dir = strdup(subdir("tb"));
	pid_t w[WORKERS];

	cr_assert_eq(mkdir(dir, 0755), 0);
	for (int i = 0; i < WORKERS; i++) {
		w[i] = fork();
		cr_assert_geq(w[i], 0);
		if (w[i])
			continue;
		for (int k = 0; k < EACH; k++) {
			pid_t c = fork();
			int status;

			if (c == 0) {
				STATE st = { 0 };
				struct sink *s;
				struct stat sb;
				char p[1024];
				int ok;

				if (sink_tfevents_ops.open(&s, dir, NULL))
					_exit(10);
				if (put1(s, 1, "loss", 1.0) || sink_tfevents_ops.commit(s, &st))
					_exit(11);
				snprintf(p, sizeof(p), "%s", sink_tfevents_ops.path(s));
				ok = stat(p, &sb) == 0 && (uint64_t)sb.st_size == st.size &&
				     st.size > 40;
				/* nothing committed was lost: the next run resumes it */
				sink_tfevents_ops.close(s);
				if (!ok)
					_exit(12);
				if (sink_tfevents_ops.open(&s, dir, &st))
					_exit(13);
				sink_tfevents_ops.close(s);
				unlink(p);
				_exit(0);
			}
			if (c < 0 || waitpid(c, &status, 0) != c || !WIFEXITED(status) ||
			    WEXITSTATUS(status))
				_exit(1 + (c < 0 ? 0 : WEXITSTATUS(status)));
		}
		_exit(0);
	}
	for (int i = 0; i < WORKERS; i++) {
		int status;

		cr_assert_eq(waitpid(w[i], &status, 0), w[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "worker %d: %s %d (a drain's failure + 1: 11 open, 12 commit, "
			  "13 file gone, 14 resume)", i,
			  WIFEXITED(status) ? "exit" : "signal",
			  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	}
	free(dir);
}
