/* SPDX-License-Identifier: MIT */
/*
 * sink.h - the interface between `mring drain` and its output formats.
 *
 * The drain loop turns ring events into rows and hands them to every
 * sink.  A sink buffers; sink_commit() writes everything handed so far
 * to the file and reports the file's committed size, which the drain
 * state records; sink_sync() makes it durable (fsync), which the drain
 * does before a durable state write, at most every --flush-ms.  On
 * restart, sink_open() gets that state back and must make the file
 * exactly what it was at that commit (truncate what a killed drainer
 * wrote after it), so nothing appears twice.
 *
 * Output directories may be shared with other users, so every file a
 * sink creates or writes is opened with O_NOFOLLOW: a symlink planted at
 * an output path is refused (-ELOOP), never followed.  A sink holds an
 * flock(2) on its file while open, so a second drain on the same output
 * is refused (-EBUSY) instead of interleaving its writes.
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
	/*
	 * Hugging Face names (--hf): per key, the name HF's tools know, or
	 * NULL for a value HF has no place for; the array NULL for a row
	 * HF does not take (a --reduce-ranks row).  See sink_hf.c.
	 */
	const char *const *hf;
	const double *vals;
};

/*
 * What a sink persists in the drain state between commits.  Zero it
 * before first use; sink_state_clear() frees it.
 */
struct sink_state {
	uint64_t size;		/* committed file size in bytes */
	/*
	 * Sink-specific text, owned, NULL for none (CSV: the header, of any
	 * length; TensorBoard: the file's name).  The drain state stores it
	 * as one line, so it never holds a '\n': CSV keys refuse control
	 * characters, and a TensorBoard name is built from safe bytes.
	 */
	char *extra;
};

/* Replace @st->extra by a copy of @text (NULL: none): 0, or -ENOMEM (unchanged). */
int sink_state_set_extra(struct sink_state *st, const char *text);
/* Free @st->extra and zero @st. */
void sink_state_clear(struct sink_state *st);

/*
 * Keys every row has already.  A sink refuses a metric key of one of
 * these names; the drain renames such a metric to metric/NAME first.
 */
static inline bool sink_key_reserved(const char *key)
{
	static const char *const keys[] = { "epoch", "step", "rank", "mring_lost",
					    "mring_rewind" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(key, keys[i]))
			return true;
	return false;
}

struct sink;

/*
 * The run's hyperparameters, as mring_hparams_read() returns them: one
 * JSON object.  The drain hands them to every sink that has a place for
 * them when they are first seen and again when they change
 * (drain_hparams.c); hparams.c turns them into each format.
 */
/* One TensorBoard hparam: a google.protobuf.Value. */
enum hparam_kind { HP_NULL, HP_NUMBER, HP_STRING, HP_BOOL };

struct hparam {
	char *key;		/* UTF-8, nested keys joined by '/' */
	size_t klen;
	enum hparam_kind kind;
	double num;
	char *str;		/* UTF-8 */
	size_t slen;
	bool b;
};

/*
 * The run's hyperparameters, in every form a sink writes, made once by
 * the drain (hparams.c), so that a sink needs nothing but itself.
 */
struct hparams {
	const char *text;	/* the JSON object, NUL-terminated */
	size_t len;
	const char *yaml;	/* hparams.yaml's text (hparams_yaml()) */
	size_t yaml_len;
	const struct hparam *flat;	/* TensorBoard's scalars (hparams_flatten()) */
	int nflat;
	double start_time;	/* the producer's segment creation, s since the epoch */
	/*
	 * file_replace(): make @name in @dirfd hold exactly @len bytes of
	 * @data: nothing when it does already, else write @tmp (created
	 * anew, O_EXCL | O_NOFOLLOW), fsync, rename over @name and fsync
	 * the directory.  A symlink at @name is -ELOOP, anything but a
	 * regular file -EINVAL or -EISDIR.
	 */
	int (*replace)(int dirfd, const char *name, const char *tmp, const char *data,
		       size_t len);
};

/* hparams.c.  Each returns 0 or -errno (-EBADMSG: not one JSON object). */
struct buf;
/* @text as DIR/hparams.yaml (appended to @out); see hparams.c for the rules. */
int hparams_yaml(struct buf *out, const char *text, size_t len);
/* The scalars: nested objects flattened to "a/b", arrays as JSON text. */
int hparams_flatten(const char *text, size_t len, struct hparam **out, int *n);
/* The top-level members only, each with its value's text in ->str (mring serve). */
int hparams_top(const char *text, size_t len, struct hparam **out, int *n);
void hparams_flat_free(struct hparam *flat, int n);
/* FNV-1a of @text, never 0 (0: none). */
uint64_t hparams_hash(const char *text, size_t len);
int file_replace(int dirfd, const char *name, const char *tmp, const char *data, size_t len);
/* The same for any content: @fill writes it to the temporary file's fd
 * (0 or -errno); no "holds it already" check. */
int file_replace_by(int dirfd, const char *name, const char *tmp,
		    int (*fill)(int fd, void *ctx), void *ctx);

/*
 * Open (creating it) the file of a line-based sink, @name relative to
 * @dirfd (AT_FDCWD: a path), into *@fd (also set on failure if opened:
 * the caller closes it): never through a symlink (-ELOOP), never a FIFO
 * or device (-EINVAL; O_NONBLOCK keeps a FIFO from hanging the open),
 * not a file another drain has open (-EBUSY).  A fresh start (@resume
 * NULL) accepts an existing file only if it is empty and ours (a drain
 * killed right after creating it, before any state named it, left it;
 * reusing an empty file loses nothing), else -EEXIST.  A resume needs
 * the file to be at least the committed size (-EIO: committed rows are
 * gone) and that size to end a line (-EBADMSG: the state does not
 * describe this file), and cuts it back to that size: what a killed
 * drainer wrote after its last commit goes.
 */
int sink_lines_open(int dirfd, const char *name, const struct sink_state *resume, int *fd);

/*
 * A JSONL row as the drain writes it (sink_jsonl.c, and --hf's rows
 * file): {MEMBERS["rank": R, ]"epoch": E, "step": S}.  jsonl_row_parse()
 * fills this from a line without its newline, or returns false for a
 * line that does not end so.
 */
struct jsonl_row {
	const char *members;	/* after '{': "k": v, ... each with its ", " */
	size_t mlen;
	int32_t rank;		/* -1: no "rank" */
	uint32_t epoch;
	uint64_t step;
};
bool jsonl_row_parse(const char *line, size_t len, struct jsonl_row *r);

struct sink_ops {
	const char *name;	/* "jsonl", "csv", "tensorboard" */
	/*
	 * @path: the --jsonl file, or the --csv / --tensorboard directory.
	 * @resume: the state of the last commit, or NULL on a fresh start.
	 */
	int (*open)(struct sink **out, const char *path, const struct sink_state *resume);
	int (*write)(struct sink *s, const struct row *r);
	/*
	 * Everything handed so far is in the file (the page cache: a
	 * killed drainer loses none of it); fills @st with what to record.
	 */
	int (*commit)(struct sink *s, struct sink_state *st);
	/* What the last commit reported is on disk (fsync). */
	int (*sync)(struct sink *s);
	const char *(*path)(struct sink *s);	/* the file written, for messages */
	/*
	 * Optional (NULL: the format has no place for them).  @hparams: the
	 * run's hyperparameters, new or changed; a side file is replaced
	 * now, an event goes out with the next commit like a row.
	 * @hparams_end: the run ended (@success: every producer closed).
	 */
	int (*hparams)(struct sink *s, const struct hparams *hp);
	int (*hparams_end)(struct sink *s, bool success, double end_time);
	bool end_always;	/* hparams_end also for a run without hparams */
	/*
	 * Optional.  @epoch_end: a segment ended an epoch at @step (also
	 * when it had no epoch values, so no epoch row); goes out with the
	 * next commit like a row.  @idle: the drain has nothing to read
	 * (about every millisecond while it follows idle producers).
	 */
	int (*epoch_end)(struct sink *s, int32_t rank, uint32_t epoch, uint64_t step);
	void (*idle)(struct sink *s);
	void (*close)(struct sink *s);		/* frees; does not commit */
};

extern const struct sink_ops sink_jsonl_ops;
extern const struct sink_ops sink_csv_ops;
extern const struct sink_ops sink_tfevents_ops;
extern const struct sink_ops sink_hf_ops;

/* --hf: the rows trainer_state.json is made from (sink_hf.c), in DIR */
#define HF_ROWS_NAME	".mring-hf-rows.jsonl"

#endif /* MRING_TOOL_SINK_H */
