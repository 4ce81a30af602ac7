/* SPDX-License-Identifier: MIT */
/*
 * sink.h - the interface between `mring drain` and its output formats.
 *
 * The drain loop turns ring events into rows and hands them to every
 * sink.  A sink buffers; sink_commit() makes everything handed so far
 * durable (write + fsync) and reports the file's committed size, which
 * the drain state records.  On restart, sink_open() gets that state back
 * and must make the file exactly what it was at that commit (truncate
 * what a killed drainer wrote after it), so nothing appears twice.
 *
 * All functions return 0 or -errno, and print nothing: the caller
 * reports errors (with sink_path() and strerror).
 */
#ifndef MRING_TOOL_SINK_H
#define MRING_TOOL_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum row_kind {
	ROW_STEP,	/* ON_STEP values of one step: keys are name or name_step */
	ROW_EPOCH,	/* epoch results at the epoch's last step: name or name_epoch */
	ROW_LOST,	/* records lost here: n == 0, lost holds the count */
};

struct row {
	enum row_kind kind;
	uint64_t step;
	uint32_t epoch;
	int32_t rank;		/* -1: single segment, no "rank" key */
	int64_t wall_ns;	/* wall time of the step (ns since the Unix epoch) */
	uint64_t lost;		/* ROW_LOST only */
	int n;			/* number of key/value pairs */
	const char *const *keys;	/* final names, valid during the call */
	const double *vals;
};

/* What a sink persists in the drain state between commits. */
struct sink_state {
	uint64_t size;		/* committed file size in bytes */
	char extra[65536];	/* sink-specific text, one line, no '\n' (CSV: header) */
};

/*
 * Keys every row has already.  A sink refuses a metric key of one of
 * these names; the drain renames such a metric to metric/NAME first.
 */
static inline bool sink_key_reserved(const char *key)
{
	static const char *const keys[] = { "epoch", "step", "rank", "mring_lost" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(key, keys[i]))
			return true;
	return false;
}

struct sink;

struct sink_ops {
	const char *name;	/* "jsonl", "csv", "tensorboard" */
	/*
	 * @path: the --jsonl file, or the --csv / --tensorboard directory.
	 * @resume: the state of the last commit, or NULL on a fresh start.
	 */
	int (*open)(struct sink **out, const char *path, const struct sink_state *resume);
	int (*write)(struct sink *s, const struct row *r);
	/* durable now; fills @st with what to record */
	int (*commit)(struct sink *s, struct sink_state *st);
	const char *(*path)(struct sink *s);	/* the file written, for messages */
	void (*close)(struct sink *s);		/* frees; does not commit */
};

extern const struct sink_ops sink_jsonl_ops;
extern const struct sink_ops sink_csv_ops;
extern const struct sink_ops sink_tfevents_ops;

#endif /* MRING_TOOL_SINK_H */
