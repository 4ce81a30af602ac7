// SPDX-License-Identifier: MIT
/*
 * prod_script.c - a producer driven line by line from stdin, for tests
 * that need one exact sequence of records (tests/e2e_drain.py).
 *
 * Usage: prod_script SEGMENT MODE CAPACITY [MAX_METRICS]
 *   MODE: drop, overwrite or wait.  The segment replaces one whose
 *   producer is gone.  Prints "ready" once it exists.  $PROD_RUN and
 *   $PROD_RANK, when set, give the run name and the rank.
 * Commands, one per line; each is answered with "ok" on stdout once done
 * (or "err N" with mring's return code), so the test knows where the
 * producer is:
 *   metric NAME FLAGS     register; FLAGS: step, epoch, mean, sum, min,
 *                         max joined by '|'; answers "ok ID"
 *   step N                mring_step(N)
 *   log ID VALUE          mring_log (VALUE: a number, nan, inf, -inf)
 *   steps A B ID...       for s in [A, B): step s, then log each ID with
 *                         s * 1000 + ID + 0.25
 *   row S FIRST LAST      step S, then log ids FIRST..LAST (inclusive)
 *                         with S * 1000 + ID + 0.25
 *   paced A B US ID...    as steps, sleeping US microseconds after each
 *                         step (a trainer of a known pace: tests/e2e_watch.py)
 *   flush                 mring_flush()
 *   epoch                 mring_epoch_end()
 *   drainer               wait until a drainer is attached
 *   close                 mring_writer_close() and exit 0
 *   crash                 SIGKILL itself (a producer that dies unclosed)
 *   hparams JSON...       mring_set_hparams() with the rest of the line
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mring.h>

static unsigned parse_flags(char *s)
{
	static const struct { const char *name; unsigned flag; } map[] = {
		{ "step", MRING_ON_STEP }, { "epoch", MRING_ON_EPOCH }, { "mean", MRING_MEAN },
		{ "sum", MRING_SUM }, { "min", MRING_MIN }, { "max", MRING_MAX },
	};
	unsigned flags = 0;

	for (char *t = strtok(s, "|"); t; t = strtok(NULL, "|"))
		for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
			if (!strcmp(t, map[i].name))
				flags |= map[i].flag;
	return flags;
}

static int steps(struct mring_writer *w, char *args, bool paced)
{
	unsigned long long a, b;
	long us = 0;
	int ids[64], n = 0, pos = 0, ret = 0;

	if (sscanf(args, "%llu %llu%n", &a, &b, &pos) != 2)
		return -1;
	if (paced) {
		int more = 0;

		if (sscanf(args + pos, "%ld%n", &us, &more) != 1)
			return -1;
		pos += more;
	}
	for (char *t = strtok(args + pos, " "); t && n < 64; t = strtok(NULL, " "))
		ids[n++] = atoi(t);
	for (uint64_t s = a; s < b && !ret; s++) {
		mring_step(w, s);
		for (int i = 0; i < n && !ret; i++)
			ret = mring_log(w, ids[i], (double)s * 1000 + ids[i] + 0.25);
		if (us)
			usleep((useconds_t)us);
	}
	return ret;
}

static int row(struct mring_writer *w, const char *args)
{
	unsigned long long s;
	int first, last, ret = 0;

	if (sscanf(args, "%llu %d %d", &s, &first, &last) != 3)
		return -1;
	mring_step(w, s);
	for (int id = first; id <= last && !ret; id++)
		ret = mring_log(w, id, (double)s * 1000 + id + 0.25);
	return ret;
}

static int drainer(struct mring_writer *w, const char *seg)
{
	struct mring_reader *r;
	struct mring_status st = { 0 };
	struct timespec ts = { 0, 100000 };

	(void)w;
	if (mring_reader_open(seg, MRING_OBSERVE, &r) < 0)
		return -1;
	while (mring_status_read(r, &st) == 0 && !st.drainer)
		nanosleep(&ts, NULL);
	mring_reader_close(r);
	return 0;
}

static int run(struct mring_writer *w, const char *seg, char *line)
{
	char name[256], flags[128];
	double v;
	int id, ret;

	if (sscanf(line, "metric %255s %127s", name, flags) == 2) {
		ret = mring_metric(w, name, parse_flags(flags));
		if (ret >= 0)
			printf("ok %d\n", ret);
		return ret < 0 ? ret : 1;
	}
	if (!strncmp(line, "step ", 5))
		return mring_step(w, strtoull(line + 5, NULL, 10)), 0;
	if (sscanf(line, "log %d %lf", &id, &v) == 2)
		return mring_log(w, id, v);
	if (!strncmp(line, "steps ", 6))
		return steps(w, line + 6, false);
	if (!strncmp(line, "paced ", 6))
		return steps(w, line + 6, true);
	if (!strcmp(line, "flush"))
		return mring_flush(w);
	if (!strncmp(line, "row ", 4))
		return row(w, line + 4);
	if (!strcmp(line, "epoch"))
		return mring_epoch_end(w);
	if (!strcmp(line, "drainer"))
		return drainer(w, seg);
	if (!strcmp(line, "close"))
		exit(mring_writer_close(w) != 0);
	if (!strncmp(line, "hparams ", 8))
		return mring_set_hparams(w, line + 8);
	if (!strcmp(line, "crash"))
		raise(SIGKILL);
	return -1;
}

int main(int argc, char **argv)
{
	struct mring_config cfg = { .flags = MRING_CFG_REPLACE };
	struct mring_writer *w;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int ret;

	if (argc < 4) {
		fprintf(stderr, "usage: prod_script SEGMENT MODE CAPACITY [MAX_METRICS]\n");
		return 1;
	}
	cfg.on_full = !strcmp(argv[2], "wait") ? MRING_FULL_WAIT :
		      !strcmp(argv[2], "overwrite") ? MRING_FULL_OVERWRITE : MRING_FULL_DROP;
	cfg.capacity = strtoull(argv[3], NULL, 10);
	cfg.max_metrics = argc > 4 ? (uint32_t)atoi(argv[4]) : 0;
	cfg.run = getenv("PROD_RUN");
	cfg.rank = getenv("PROD_RANK") ? atoi(getenv("PROD_RANK")) : 0;
	ret = mring_writer_open(argv[1], &cfg, &w);
	if (ret < 0) {
		fprintf(stderr, "prod_script: %s\n", mring_strerror(ret));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		ret = run(w, argv[1], line);
		if (ret < 0)
			printf("err %d %s\n", ret, line);
		else if (ret == 0)
			printf("ok\n");
		fflush(stdout);
	}
	free(line);
	return mring_writer_close(w) != 0;
}
