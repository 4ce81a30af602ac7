/* SPDX-License-Identifier: MIT */
/*
 * tool.h - shared by the subcommands of the mring command-line tool.
 */
#ifndef MRING_TOOL_H
#define MRING_TOOL_H

#include <stdbool.h>
#include <stddef.h>

#include <mring.h>

/* Exit statuses of every subcommand. */
#define EXIT_USAGE	1	/* bad command line, missing or bad segment */
#define EXIT_OUTPUT	2	/* an output could not be written */
#define EXIT_CRASHED	3	/* a producer died without closing */
#define EXIT_ALERT	4	/* mring watch --exit: an alert fired */

struct seglist {
	char **paths;
	int n;
};

/*
 * Expand SEGMENT arguments: a path, a bare name (in $MRING_DIR, default
 * /dev/shm) or a glob of either.  Sorted, duplicates removed.  Returns
 * 0, or -ENOENT when nothing matched, -ENOMEM.
 */
int seglist_expand(struct seglist *l, char **args, int nargs);
void seglist_free(struct seglist *l);
const char *mring_dir(void);
/* The reason opening SEGMENT argument @arg failed with @err, for a message. */
const char *seg_open_error(const char *arg, int err, char *buf, size_t len);
const char *producer_state(const struct mring_status *st);
double now_mono(void);		/* CLOCK_MONOTONIC, seconds */
int64_t now_real_ns(void);	/* CLOCK_REALTIME, ns */
bool metric_last(const struct mring_stats *live, const struct mring_stats *ep,
		 double *v, uint64_t *step);

/*
 * sigbus.c: survive a segment truncated under its mapping (reads past the
 * new end see zeros instead of killing the tool); how many pages so far.
 */
void sigbus_guard(void);
unsigned long sigbus_zero_pages(void);

int cmd_drain(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_watch(int argc, char **argv);

#endif
