/* SPDX-License-Identifier: MIT */
/*
 * watch.h - the parts of `mring watch`, one job per file:
 *
 *   watch.c       command line, the segment set, the poll loop, the rules
 *   watch_act.c   what an alert does: the line or JSON, --exec, --signal,
 *                 --dump, and the child processes they start
 *
 * See docs/watch.md.
 */
#ifndef MRING_TOOL_WATCH_H
#define MRING_TOOL_WATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tool.h"

#define WATCH_MAX_THRESHOLDS	64	/* --above, --below, --spike rules together */
#define WATCH_SPIKE_MIN_COUNT	8	/* values into the epoch before --spike judges */
#define WATCH_RATE_WINDOW_S	5.0	/* --lag-factor: time per step over this window */
#define WATCH_RATE_MIN_S	1.0	/* ... and over at least this much history */
#define WATCH_HIST		64	/* samples kept for it (power of two) */
#define WATCH_RING_KEEP		(1u << 18)	/* ring slots read per segment per poll */
#define WATCH_STOP_WAIT_S	5.0	/* stopped: how long children get to finish */

enum thr_kind { THR_ABOVE, THR_BELOW, THR_SPIKE };

struct thr {
	enum thr_kind kind;
	char *pattern;		/* metric name glob */
	double x;		/* the threshold, or K for a spike */
};

struct watch_opts {
	/* rules */
	bool nan;
	char **nan_pats;	/* NULL: every metric */
	int n_nan_pats;
	double stall_s;		/* 0: off */
	bool lag;
	uint64_t lag_steps;
	double lag_factor;	/* 0: off */
	struct thr thr[WATCH_MAX_THRESHOLDS];
	int nthr;
	bool crash;
	/* actions */
	bool json;
	const char *exec;
	double exec_limit;	/* runs per minute */
	double exec_timeout_s;
	int sig;		/* 0: none */
	bool exit_first;
	const char *dump_dir;
	uint64_t dump_steps;
	/* options */
	double interval_s;
	bool until_done;
};

/* What one alert (or the clearing of one) says. */
struct alert {
	const char *event;	/* "alert" or "clear" */
	const char *rule;	/* "nan", "stall", "lag", "above", "below", "spike", "crash" */
	const char *segment;	/* path */
	const char *base;	/* file name */
	const char *run;
	int32_t rank;
	int32_t pid;
	const char *metric;	/* NULL: a rule about the whole segment */
	uint64_t step;
	double value;
	char detail[160];
	/* for --signal: which file the producer must have open */
	dev_t dev;
	ino_t ino;
	int64_t created_ns;
	uint64_t pid_start;	/* the producer's start time, 0: unknown */
	bool alive;
};

/* watch_act.c */
int act_init(const struct watch_opts *o);
/* Print @a and, for an "alert", start its actions. */
void act_alert(const struct watch_opts *o, const struct alert *a);
/* Reap children, start waiting --exec runs, kill overdue ones. */
void act_tick(const struct watch_opts *o);
/* Wait up to @wait_s for the children, then kill what still runs. */
void act_finish(const struct watch_opts *o, double wait_s);
/* An alert was raised (not a clear): --exit ends the watcher. */
bool act_fired(void);
int parse_signal(const char *s);

#endif
