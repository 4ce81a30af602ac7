/* SPDX-License-Identifier: MIT */
/*
 * drain.h - the parts of `mring drain`, one job per file:
 *
 *   drain.c         the loop: segments, reads, when to commit, the exit
 *   drain_state.c   the drain state file and the commit (exactly once)
 *   drain_names.c   metric id -> output key, unique within a segment
 *   drain_rows.c    events -> step, epoch and loss rows
 *   drain_every.c   --every N: window means
 *   drain_reduce.c  --reduce-ranks: cross-rank epoch rows
 *   drain_hparams.c the run's hyperparameters, to the sinks that take them
 *
 * The exactly-once rules, and where each lives:
 *  - The library position never passes a record that is not either in
 *    every sink or in the drain state (an open row, window or cross-rank
 *    epoch is kept there): drain_commit(), after the sinks and the state.
 *  - After any failure to take an event or write a row, nothing is
 *    committed again in this run (drain.failed): the records wait in the
 *    ring for the next drainer.
 *  - Events below a segment's recorded next seq are in the sinks already
 *    and are skipped, except the unreported part of an overrun LOST range
 *    (seg_take() in drain.c).
 */
#ifndef MRING_TOOL_DRAIN_H
#define MRING_TOOL_DRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "sink.h"
#include "tool.h"

/* A row being built: ids of metrics, resolved to keys when written. */
struct pending {
	bool active;
	uint64_t step;
	uint32_t epoch;
	int64_t wall_ns;
	int n, cap;
	int *ids;
	double *vals;
	uint64_t gen;		/* marks which metrics are in this row */
};

struct names {
	unsigned flags;
	char *step;		/* key of its ON_STEP values (name or name_step) */
	char *epoch;		/* key of its epoch results (name or name_epoch) */
	char *hf;		/* --hf: its Hugging Face name (sink_hf.c) */
	uint64_t mark;		/* pending.gen of the step row holding it */
};

/* Every key a segment's metrics use, so that no two metrics share one. */
struct keyset {
	const char **slot;	/* open addressing; points into struct names */
	size_t cap, n;
};

/*
 * --every N (Hugging Face logging_steps): one row per window of N steps
 * holding each metric's mean over the window.
 */
struct window {
	bool active;
	uint64_t index;		/* step / N */
	uint64_t last_step;
	uint32_t epoch;
	int64_t wall_ns;
	int n;			/* metrics with a slot below */
	double *sum;		/* per metric id: finite values */
	uint64_t *count;
	uint64_t *nonfinite;
};

/* --reduce-ranks: one metric of one epoch, folded over the ranks. */
struct xmetric {
	char *name;
	unsigned flags;
	double vw, w, sum, min, max;
	uint64_t n;		/* ranks folded in */
	bool incomplete;	/* a MEAN whose weight record was lost */
};

struct xepoch {
	bool used;
	uint32_t epoch;
	uint64_t step;		/* the latest last step among the ranks */
	int done;		/* segments that ended this epoch */
	/*
	 * A rank lost records before ending it: a metric not every rank
	 * gave a value for may lack a lost one, so it is incomplete (NaN).
	 */
	bool lossy;
	int n;
	struct xmetric *m;
};

struct seg {
	char *path;
	struct mring_reader *r;
	int32_t rank;		/* -1 with a single segment */
	int64_t created_ns;	/* identifies this segment in the state */
	uint64_t capacity;
	uint64_t skip_below;	/* events below this seq are in the sinks */
	uint64_t next_seq;	/* after the last event taken */
	uint64_t committed_seq;	/* next_seq at the last commit */
	uint64_t prog_from;	/* progress: the position it started from */
	bool done, crashed;
	bool void_pending;	/* drain_rewind.c: voiding rows of steps >= */
	uint64_t void_step;	/* void_step is under way (in the state) */
	struct names *names;
	int nnames;
	struct keyset keys;
	struct keyset hfkeys;	/* the hf names, unique within the segment too */
	struct pending step_row, epoch_row;
	struct window win;
	bool lost_in_epoch;	/* --reduce-ranks: a LOST since its last EPOCH_END */
	int stash_id;		/* --reduce-ranks: a MEAN epoch value waiting */
	double stash_value;	/* for its weight record; -1: none */
	uint64_t events, lost;	/* taken */
	uint64_t events_committed, lost_committed;
	bool hp_compared;	/* its hparams were compared with the chosen ones */
	bool hp_bad;		/* said once that its hparams are damaged */
};

struct out {
	const struct sink_ops *ops;
	const char *arg;
	struct sink *s;
	struct sink_state st;
	bool in_state;		/* the drain state records this output */
	uint64_t hp_hash;	/* hparams it holds (hparams_hash()), 0: none */
	bool hp_ended;		/* it holds the session end */
};

/* The hyperparameters handed to the sinks: drain_hparams.c. */
struct hpsel {
	char *buf;		/* MRING_HPARAMS_MAX + 1: a read */
	char *text;		/* the chosen ones, NULL: none seen yet */
	size_t len;
	uint64_t hash;
	double start_time;	/* creation of the segment they come from */
	struct hparams forms;	/* what the sinks get, made when first needed */
	char *yaml;
	struct hparam *flat;
	bool made, bad;		/* forms made; the text does not parse */
	int64_t polled;		/* ms: the last check while idle */
	bool warned;		/* said once that the ranks differ */
	bool hold;		/* not yet: the first commit of a fresh drain */
};

struct drain {
	struct seg *segs;
	int nsegs;
	struct out outs[4];
	int nouts;
	char *state_path;
	long flush_ms;
	uint64_t every;		/* --every N, 0: every step */
	bool reduce;		/* --reduce-ranks */
	bool observe;		/* --observe: export, consume nothing */
	bool keep_rewinds;	/* --on-rewind keep */
	uint64_t last_steps;	/* --last-steps N (with --observe), 0: all */
	struct xepoch *xe;
	int nxe;
	bool follow, wait;
	bool dirty;		/* taken since the last commit */
	bool unsynced;		/* committed since the last fsync */
	bool failed;		/* an event or row failed: never commit again */
	bool output_failed;	/* ... because an output could not be written */
	uint64_t rows, rows_committed;
	uint64_t gen;
	struct hpsel hp;
	const char **keybuf;	/* scratch: the keys of the row being written */
	const char **hfbuf;	/* and their hf names */
	int keycap;
	struct progress {	/* on a terminal only: drain.c progress_*() */
		bool on, shown;
		uint64_t backlog;	/* written - drained at the start */
		uint64_t events0;	/* events taken before the start */
		int64_t t0, last;	/* ms */
		int64_t every;		/* ms between updates */
	} prog;
};

/* drain_rewind.c */
int rewind_take(struct drain *d, struct seg *g, const struct mring_event *ev);
int rewind_recover(struct drain *d);
/* drain_state.c: sinks committed and synced, state written: no position moves */
int drain_checkpoint(struct drain *d);

/* drain_names.c */
int names_cover(struct seg *g, int id);
void names_free(struct seg *g);

/* drain_rows.c */
int emit(struct drain *d, const struct row *r);
int pending_add(struct drain *d, struct pending *p, const struct mring_event *ev, int id);
int pending_flush(struct drain *d, struct seg *g, struct pending *p, enum row_kind kind);
void pending_free(struct pending *p);
int take_event(struct drain *d, struct seg *g, const struct mring_event *ev);
int seg_finish(struct drain *d, struct seg *g);
void rows_save(FILE *f, const struct seg *g);
int rows_load(struct drain *d, const char *line);
int rows_restored(struct drain *d, struct seg *g);

/* drain_every.c */
int window_add(struct drain *d, struct seg *g, const struct mring_event *ev);
int window_flush(struct drain *d, struct seg *g);
int window_max_id(const struct window *w);
void window_save(FILE *f, const struct seg *g);
int window_load(struct drain *d, const char *line);
void window_free(struct window *w);

/* drain_reduce.c */
int take_reduce(struct drain *d, struct seg *g, const struct mring_event *ev);
void xstate_save(FILE *f, const struct drain *d);
int xstate_load(struct drain *d, const char *line);
void xstate_free(struct drain *d);

/* drain_hparams.c */
int hparams_update(struct drain *d);
bool hparams_changed(struct drain *d);
void hparams_save(FILE *f, const struct out *o);
int hparams_load(struct out *o, const char *line);
void hparams_free(struct drain *d);

/* drain_state.c */
int state_read(struct drain *d);
int drain_commit(struct drain *d, bool durable);
struct seg *seg_by_path(struct drain *d, const char *path);

#endif /* MRING_TOOL_DRAIN_H */
