// SPDX-License-Identifier: MIT
/*
 * drain_state.c - the drain state file, and the commit.
 *
 * A commit, in this order (docs/drain.md, "Exactly once"):
 *  1. every sink writes what it was handed to its file and reports the
 *     file's size (and, durable, fsyncs it);
 *  2. the state is written to STATE.tmp and renamed over STATE (durable:
 *     the file and the directory are fsynced too).  It holds each
 *     segment's next seq and creation time, the open rows, --every
 *     windows and --reduce-ranks epochs, and each sink's size and extra
 *     (and the hparams it holds: drain_hparams.c, handed over just before
 *     step 1);
 *  3. only then does mring_commit() move each library position.
 * A drainer killed anywhere in between restarts from the last renamed
 * state: sinks cut their files back to the recorded sizes, and events
 * below the recorded next seq are skipped.
 *
 * A process crash loses nothing that reached the page cache, so every
 * commit writes and renames, and only every --flush-ms one also fsyncs
 * (durable): a machine crash takes the shared-memory ring with it anyway.
 *
 * Format: text, one item per line, first line STATE_MAGIC.  Everything in
 * it is checked as untrusted input; a line that does not parse makes the
 * whole file "not a drain state file".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drain.h"
#include "util.h"

#define STATE_MAGIC	"mring-drain-state 3"
#define STATE_MAGIC_V2	"mring-drain-state 2"	/* read: 2 and 1 are subsets of 3 */
#define STATE_MAGIC_V1	"mring-drain-state 1"

struct seg *seg_by_path(struct drain *d, const char *path)
{
	for (int i = 0; i < d->nsegs; i++)
		if (!strcmp(d->segs[i].path, path))
			return &d->segs[i];
	return NULL;
}

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int ret;

	if (!copy)
		return -ENOMEM;
	ret = fsync_dir(dirname(copy));
	free(copy);
	return ret;
}

/* STATE.tmp, created afresh: a planted file or symlink there is not used. */
static FILE *state_tmp_open(const char *tmp)
{
	FILE *f;
	int fd;

	if (unlink(tmp) && errno != ENOENT)
		return NULL;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return NULL;
	f = fdopen(fd, "w");
	if (!f)
		close(fd);
	return f;
}

static void state_print(FILE *f, struct drain *d)
{
	fprintf(f, "%s\n", STATE_MAGIC);
	for (int i = 0; i < d->nsegs; i++)
		fprintf(f, "segment %llu %lld %s\n", (unsigned long long)d->segs[i].next_seq,
			(long long)d->segs[i].created_ns, d->segs[i].path);
	for (int i = 0; i < d->nsegs; i++) {
		rows_save(f, &d->segs[i]);
		window_save(f, &d->segs[i]);
		if (d->segs[i].void_pending)	/* drain_rewind.c */
			fprintf(f, "void %llu %s\n", (unsigned long long)d->segs[i].void_step,
				d->segs[i].path);
	}
	xstate_save(f, d);
	for (int i = 0; i < d->nouts; i++) {
		fprintf(f, "sink %s %llu %s\n", d->outs[i].ops->name,
			(unsigned long long)d->outs[i].st.size, d->outs[i].arg);
		hparams_save(f, &d->outs[i]);
		fprintf(f, "extra %s\n", d->outs[i].st.extra ?: "");
	}
}

static int state_write(struct drain *d, bool durable)
{
	char *tmp;
	FILE *f;
	int ret = 0;

	if (asprintf(&tmp, "%s.tmp", d->state_path) < 0)
		return -ENOMEM;
	f = state_tmp_open(tmp);
	if (!f) {
		ret = -errno;
		free(tmp);
		return ret;
	}
	state_print(f, d);
	if (fflush(f) != 0 || ferror(f) || (durable && fsync(fileno(f)) != 0))
		ret = errno ? -errno : -EIO;
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, d->state_path) != 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	if (!ret && durable)
		ret = fsync_dir_of(d->state_path);
	free(tmp);
	return ret;
}

static void chomp(char *s)
{
	size_t n = strlen(s);

	if (n && s[n - 1] == '\n')
		s[n - 1] = '\0';
}

static int segment_load(struct drain *d, const char *line)
{
	unsigned long long next;
	long long created;
	int pos = 0;
	struct seg *g;

	if (sscanf(line, "segment %llu %lld %n", &next, &created, &pos) != 2 || !pos)
		return -EBADMSG;
	g = seg_by_path(d, line + pos);
	if (!g)
		return 0;	/* not drained now */
	if (g->created_ns != created) {
		fprintf(stderr, "mring drain: %s was replaced by a new run since %s was "
			"written: drain the new run into new outputs (or give another "
			"--state), or remove %s and the outputs to start over\n",
			g->path, d->state_path, d->state_path);
		return -ESTALE;
	}
	g->skip_below = g->next_seq = g->committed_seq = next;
	return 0;
}

/* "void STEP PATH": a rewind's voiding was under way (drain_rewind.c) */
static int void_load(struct drain *d, const char *line)
{
	unsigned long long step;
	struct seg *g;
	int pos = 0;

	if (sscanf(line, "void %llu %n", &step, &pos) != 1 || !pos)
		return -EBADMSG;
	g = seg_by_path(d, line + pos);
	if (g) {
		g->void_step = step;
		g->void_pending = true;
	}
	return 0;
}

static int sink_load(struct drain *d, const char *line, int *out)
{
	unsigned long long size;
	char name[32];
	int pos = 0;

	if (sscanf(line, "sink %31s %llu %n", name, &size, &pos) != 2 || !pos)
		return -EBADMSG;
	*out = -1;
	for (int i = 0; i < d->nouts; i++)
		if (!strcmp(d->outs[i].ops->name, name) && !strcmp(d->outs[i].arg, line + pos))
			*out = i;
	if (*out < 0) {
		fprintf(stderr, "mring drain: %s records an output (%s %s) not given now: use "
			"the same outputs, or another --state\n", d->state_path, name, line + pos);
		return -EINVAL;
	}
	if (d->outs[*out].in_state)
		return -EBADMSG;	/* the same output twice */
	d->outs[*out].st.size = size;
	d->outs[*out].in_state = true;
	return 0;
}

static int state_line(struct drain *d, const char *line, int *out)
{
	if (!strncmp(line, "segment ", 8))
		return segment_load(d, line);
	if (!strncmp(line, "sink ", 5))
		return sink_load(d, line, out);
	if (!strncmp(line, "extra ", 6) && *out >= 0) {
		if (sink_state_set_extra(&d->outs[*out].st, line + 6))
			return -ENOMEM;
		*out = -1;
		return 0;
	}
	if (!strncmp(line, "hparams ", 8))
		return *out >= 0 ? hparams_load(&d->outs[*out], line) : -EBADMSG;
	if (!strncmp(line, "row ", 4))
		return rows_load(d, line);
	if (!strncmp(line, "void ", 5))
		return void_load(d, line);
	if (!strncmp(line, "window ", 7))
		return window_load(d, line);
	if (line[0] == 'x')
		return xstate_load(d, line);
	return -EBADMSG;
}

/*
 * Read the state of a previous drain with the same outputs.  Returns 1
 * when there is one, 0 when there is none (fresh start), -errno (with a
 * message on stderr).
 */
int state_read(struct drain *d)
{
	char *line = NULL;
	size_t cap = 0;
	int out = -1, ret = 1, fd;
	FILE *f;

	fd = open(d->state_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!f) {
		ret = -errno;
		fprintf(stderr, "mring drain: %s: %s\n", d->state_path, strerror(-ret));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	if (getline(&line, &cap, f) < 0 ||
	    (strcmp(line, STATE_MAGIC "\n") && strcmp(line, STATE_MAGIC_V2 "\n") &&
	     strcmp(line, STATE_MAGIC_V1 "\n")))
		ret = -EBADMSG;
	while (ret > 0 && getline(&line, &cap, f) >= 0) {
		int err;

		chomp(line);
		err = state_line(d, line, &out);
		if (err < 0)
			ret = err;
	}
	for (int i = 0; i < d->nsegs && ret > 0; i++) {
		ret = rows_restored(d, &d->segs[i]);
		if (ret == -EBADMSG)
			fprintf(stderr, "mring drain: %s: names a metric %s does not have\n",
				d->state_path, d->segs[i].path);
		ret = ret == -EBADMSG ? -EINVAL : ret < 0 ? ret : 1;
	}
	if (ret == -EBADMSG)
		fprintf(stderr, "mring drain: %s: not a drain state file (or a damaged one)\n",
			d->state_path);
	else if (ret == -ENOMEM)
		fprintf(stderr, "mring drain: %s: %s\n", d->state_path, strerror(ENOMEM));
	free(line);
	fclose(f);
	return ret;
}

static int sinks_commit(struct drain *d, bool durable)
{
	for (int i = 0; i < d->nouts; i++) {
		struct out *o = &d->outs[i];
		int ret = o->ops->commit(o->s, &o->st);

		if (!ret && durable)
			ret = o->ops->sync(o->s);
		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n", o->ops->path(o->s), strerror(-ret));
			d->failed = d->output_failed = true;
			return ret;
		}
	}
	return 0;
}

int drain_checkpoint(struct drain *d)
{
	int ret;

	if (d->failed)
		return -ECANCELED;
	ret = sinks_commit(d, true);
	if (ret < 0 || d->observe)
		return ret;
	ret = state_write(d, true);
	if (ret < 0) {
		fprintf(stderr, "mring drain: %s: %s\n", d->state_path, strerror(-ret));
		d->failed = d->output_failed = true;
	}
	return ret;
}

/*
 * Make everything taken so far part of the outputs (the sinks' files, or
 * the state's open rows), then move the library positions.  Never after
 * a failure: -ECANCELED.
 */
int drain_commit(struct drain *d, bool durable)
{
	int ret;

	if (d->failed)
		return -ECANCELED;
	ret = hparams_update(d);
	if (ret < 0)
		return ret;
	ret = sinks_commit(d, durable);
	if (ret < 0)
		return ret;
	if (!d->observe) {
		ret = state_write(d, durable);
		if (ret < 0) {
			fprintf(stderr, "mring drain: %s: %s\n", d->state_path, strerror(-ret));
			d->failed = d->output_failed = true;
			return ret;
		}
	}
	for (int i = 0; i < d->nsegs; i++) {
		struct seg *g = &d->segs[i];

		if (g->r && !d->observe)
			mring_commit(g->r);
		g->committed_seq = g->next_seq;
		g->events_committed = g->events;
		g->lost_committed = g->lost;
	}
	d->rows_committed = d->rows;
	d->dirty = false;
	d->unsynced = !durable;
	return 0;
}
