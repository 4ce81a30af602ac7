// SPDX-License-Identifier: MIT
/*
 * sink_hf.c - DIR/trainer_state.json in the layout of Hugging Face's
 * TrainerState (the file `Trainer` writes into each checkpoint, which
 * its model-card code and users' scripts read): the top-level keys of
 * TrainerState, sorted, and log_history with HF's names
 * (drain_names.c: loss, eval_*), a fractional float epoch, and, once
 * every producer closed, HF's final row with train_runtime.
 *
 * What is committed is an append-only file of the rows, DIR/.mring-hf-
 * rows.jsonl, in the JSONL sink's row format (so the drain's commit,
 * restart truncation and rewind voiding work on it as on any JSONL
 * output) with the integer epoch; trainer_state.json is made from it,
 * written to a temporary file and renamed over the old one, at each
 * durable commit (--flush-ms) and when the drain ends.  Rewriting a long
 * history costs time in proportion to it, so a rewrite waits until 9
 * times the last one's cost has passed: it takes at most a tenth of the
 * drainer's time.
 *
 * Which rows: those of rank 0, or of the single segment (HF logs on the
 * world's process zero only).  An epoch row holds the metrics logged
 * ON_EPOCH only (eval_loss ...): HF has no per-epoch mean of what is
 * logged per step.  Each epoch row also leaves a line without values in
 * the rows file, which says the epoch ended: the fractional epoch of a
 * row is e + (step - end of the epoch before) / (the steps of epoch e);
 * the epoch under way is measured by the one before it (at most e + 1),
 * and the first one, before it ends, is e.0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"

#define ROWS_NAME	HF_ROWS_NAME
#define STATE_NAME	"trainer_state.json"
#define STATE_TMP	".trainer_state.json.tmp"
#define CHUNK		(64 * 1024)

/* TrainerState fields taken from the run's hyperparameters (HF's args). */
enum { HP_LOGGING, HP_EVAL, HP_SAVE, HP_MAX_STEPS, HP_EPOCHS, HP_BATCH, HP_N };

static const char *const hp_names[HP_N] = {
	"logging_steps", "eval_steps", "save_steps", "max_steps", "num_train_epochs",
	"train_batch_size",
};

struct ep {
	uint32_t e;
	uint64_t first, last;	/* steps of its first and last rows */
	bool ended;		/* an epoch row, or a later epoch, was seen */
};

struct sink {
	int fd, dirfd;
	char *dir;
	uint64_t written, committed;
	struct buf out;
	/* what the rows say, kept up to date as rows come (and rebuilt by
	 * scanning the file on a restart) */
	struct ep *eps;
	size_t neps, epcap;
	bool any;		/* a row with values */
	uint32_t last_e;	/* ... the last one's epoch and step */
	uint64_t last_s;
	uint64_t min_gap;	/* smallest step gap between rows with a loss */
	bool any_loss;
	uint64_t last_loss_s;
	double loss_sum;	/* finite "loss" values */
	uint64_t loss_n;
	/* kept in the drain state (extra) */
	int64_t first_wall, last_wall;	/* ns; 0: none */
	bool run_ended;
	char hp[HP_N][32];	/* a JSON number, "" if not given */
	/* rewriting trainer_state.json */
	uint64_t rendered;	/* committed size at the last rewrite */
	bool render_due;	/* a change the size does not show */
	bool committed_once;	/* since open: close may write the file */
	int64_t next_render_ns;
};

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the rows file's lines ---- */

/* a line of the rows file: struct jsonl_row (sink.h); no values: an epoch's end */

/* The value of member "loss" in @l, if it has one. */
static bool line_loss(const struct jsonl_row *l, double *v)
{
	const char *p = l->members, *end = l->members + l->mlen;

	while (p < end && *p == '"') {
		const char *k = p++, *val, *stop;

		while (p < end && *p != '"')
			p += *p == '\\' ? 2 : 1;
		if (p + 3 > end || memcmp(p, "\": ", 3))
			return false;
		val = p + 3;
		stop = memchr(val, ',', (size_t)(end - val));
		if (!stop)
			return false;
		if (p - k == 5 && !memcmp(k, "\"loss", 5)) {
			char tmp[48];
			size_t n = (size_t)(stop - val);

			if (n >= sizeof(tmp))
				return false;
			memcpy(tmp, val, n);
			tmp[n] = '\0';
			*v = strtod(tmp, NULL);
			return true;
		}
		p = stop + 2;
	}
	return false;
}

/* ---- what the rows say ---- */

/* Epoch @e's entry (eps is sorted by epoch: note_row() keeps it so). */
static struct ep *ep_find(struct sink *s, uint32_t e, size_t *i)
{
	size_t lo = 0, hi = s->neps;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->eps[mid].e < e)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == s->neps || s->eps[lo].e != e)
		return NULL;
	*i = lo;
	return &s->eps[lo];
}

/* A row (or, @marker, an epoch's end) of epoch @e at step @st. */
static int note_row(struct sink *s, uint32_t e, uint64_t st, bool marker)
{
	struct ep *last = s->neps ? &s->eps[s->neps - 1] : NULL;

	if (!last || last->e != e) {
		/* an earlier epoch again (rows kept over a rewind): from there on */
		while (s->neps && s->eps[s->neps - 1].e > e)
			s->neps--;
		last = s->neps ? &s->eps[s->neps - 1] : NULL;
	}
	if (!last || last->e != e) {
		if (s->neps == s->epcap) {
			size_t cap = s->epcap ? 2 * s->epcap : 16;
			struct ep *p = realloc(s->eps, cap * sizeof(*p));

			if (!p)
				return -ENOMEM;
			s->eps = p;
			s->epcap = cap;
		}
		if (last)
			last->ended = true;
		last = &s->eps[s->neps++];
		*last = (struct ep){ .e = e, .first = st, .last = st };
	}
	if (st > last->last)
		last->last = st;
	if (marker) {
		last->ended = true;
		return 0;
	}
	s->any = true;
	s->last_e = e;
	s->last_s = st;
	return 0;
}

/*
 * A training row's loss: the run's mean, and logging_steps (the smallest
 * step gap between two of them: evaluation and loss rows do not count).
 */
static void note_loss(struct sink *s, uint64_t st, bool present, double v)
{
	if (!present)
		return;
	if (isfinite(v)) {
		s->loss_sum += v;
		s->loss_n++;
	}
	if (s->any_loss && st > s->last_loss_s &&
	    (!s->min_gap || st - s->last_loss_s < s->min_gap))
		s->min_gap = st - s->last_loss_s;
	s->any_loss = true;
	s->last_loss_s = st;
}

static int note_line(struct sink *s, const struct jsonl_row *l)
{
	double v = NAN;
	bool has = l->mlen && line_loss(l, &v);

	note_loss(s, l->step, has, v);
	return note_row(s, l->epoch, l->step, !l->mlen);
}

/* The step before epoch @i's first: the end of the one before it. */
static double ep_before(const struct sink *s, size_t i)
{
	if (i > 0)
		return (double)s->eps[i - 1].last;
	if (s->eps[i].e != 0)
		return (double)s->eps[i].first - 1.0;	/* resumed in a new segment */
	/* epoch 0: steps counted from 0 (a C loop), or from 1 (HF's global_step) */
	return s->eps[i].first == 0 ? -1.0 : 0.0;
}

/* HF's fractional epoch of a row of epoch @e at step @st. */
static double epoch_of(struct sink *s, uint32_t e, uint64_t st)
{
	size_t i;
	struct ep *p = ep_find(s, e, &i);
	double from, len, frac = 0;

	if (!p)
		return e;
	from = ep_before(s, i);
	if (p->ended || (s->run_ended && i == s->neps - 1))
		len = (double)p->last - from;
	else if (i > 0)
		len = (double)s->eps[i - 1].last - ep_before(s, i - 1);
	else
		len = 0;
	if (len > 0)
		frac = ((double)st - from) / len;
	frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
	return e + frac;
}

/* The run's global_step: its last row, or the end of its last epoch if later. */
static uint64_t run_step(const struct sink *s)
{
	uint64_t st = s->any ? s->last_s : 0;

	if (s->neps && s->eps[s->neps - 1].last > st)
		st = s->eps[s->neps - 1].last;
	return st;
}

/* HF's state.epoch: at run_step(); a whole number once an epoch has ended there. */
static double run_epoch(struct sink *s)
{
	const struct ep *l = s->neps ? &s->eps[s->neps - 1] : NULL;

	if (l && l->ended && (!s->any || l->last >= s->last_s))
		return l->e + 1.0;
	return s->any ? epoch_of(s, s->last_e, s->last_s) : 0.0;
}

/* ---- trainer_state.json ---- */

/* A float as Python's json writes one: 1.0, not 1. */
static void put_float(struct buf *b, double v)
{
	size_t at = b->len;

	buf_json_number(b, v);
	if (isfinite(v) && !b->oom && !memchr(b->p + at, '.', b->len - at) &&
	    !memchr(b->p + at, 'e', b->len - at))
		buf_puts(b, ".0");
}

static void put_hp(struct buf *b, const char *key, const char *num, const char *dflt)
{
	buf_fmt(b, "  \"%s\": %s,\n", key, *num ? num : dflt);
}

static void put_head(struct sink *s, struct buf *b)
{
	char gs[24];

	snprintf(gs, sizeof(gs), "%llu", (unsigned long long)run_step(s));
	buf_puts(b, "{\n  \"best_global_step\": null,\n  \"best_metric\": null,\n"
		 "  \"best_model_checkpoint\": null,\n  \"epoch\": ");
	put_float(b, run_epoch(s));
	buf_puts(b, ",\n");
	put_hp(b, "eval_steps", s->hp[HP_EVAL], "null");
	buf_fmt(b, "  \"global_step\": %s,\n", gs);
	buf_puts(b, "  \"is_hyper_param_search\": false,\n  \"is_local_process_zero\": true,\n"
		 "  \"is_world_process_zero\": true,\n  \"log_history\": [");
}

static void put_tail(struct sink *s, struct buf *b, bool any)
{
	char gs[24], ls[24], ep[24];
	bool max_given = *s->hp[HP_MAX_STEPS] && strtod(s->hp[HP_MAX_STEPS], NULL) > 0;

	snprintf(gs, sizeof(gs), "%llu", (unsigned long long)run_step(s));
	snprintf(ls, sizeof(ls), "%llu", (unsigned long long)(s->min_gap ? s->min_gap : 1));
	snprintf(ep, sizeof(ep), "%llu", (unsigned long long)(s->neps ?
		 s->eps[s->neps - 1].e + 1ull : 0));
	buf_puts(b, any ? "\n  ],\n" : "],\n");
	put_hp(b, "logging_steps", s->hp[HP_LOGGING], ls);
	put_hp(b, "max_steps", max_given ? s->hp[HP_MAX_STEPS] : "", gs);
	buf_puts(b, "  \"num_input_tokens_seen\": 0,\n");
	put_hp(b, "num_train_epochs", s->hp[HP_EPOCHS], ep);
	put_hp(b, "save_steps", s->hp[HP_SAVE], "null");
	buf_puts(b, "  \"stateful_callbacks\": {},\n  \"total_flos\": 0.0,\n");
	put_hp(b, "train_batch_size", s->hp[HP_BATCH], "null");
	buf_puts(b, "  \"trial_name\": null,\n  \"trial_params\": null\n}\n");
}

/* One log_history entry: {"epoch": F, MEMBERS"step": S}. */
static void put_entry(struct sink *s, struct buf *b, const struct jsonl_row *l, bool first)
{
	buf_puts(b, first ? "\n    {\"epoch\": " : ",\n    {\"epoch\": ");
	put_float(b, epoch_of(s, l->epoch, l->step));
	buf_puts(b, ", ");
	buf_put(b, l->members, l->mlen);
	buf_puts(b, "\"step\": ");
	buf_u64(b, l->step);
	buf_putc(b, '}');
}

/*
 * Call @fn for each line of the committed rows, read in chunks: 0, or
 * the first error.
 */
static int each_line(struct sink *s, int (*fn)(struct sink *, const struct jsonl_row *, void *),
		     void *ctx)
{
	struct buf part = { 0 };
	char *chunk = malloc(CHUNK);
	uint64_t off = 0;
	int ret = chunk ? 0 : -ENOMEM;

	while (!ret && off < s->committed) {
		uint64_t left = s->committed - off;
		ssize_t n = pread(s->fd, chunk, left < CHUNK ? (size_t)left : CHUNK, (off_t)off);
		size_t from = 0;

		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		off += (uint64_t)n;
		for (size_t i = 0; i < (size_t)n && !ret; i++) {
			const char *p;
			struct jsonl_row l;
			size_t len;

			if (chunk[i] != '\n')
				continue;
			if (part.len) {		/* a line across chunks */
				buf_put(&part, chunk + from, i - from);
				p = part.p;
				len = part.len;
			} else {
				p = chunk + from;
				len = i - from;
			}
			if (part.oom)
				ret = -ENOMEM;
			else if (jsonl_row_parse(p, len, &l))
				ret = fn(s, &l, ctx);
			part.len = 0;
			from = i + 1;
		}
		buf_put(&part, chunk + from, (size_t)n - from);
	}
	free(chunk);
	buf_free(&part);
	return ret;
}

struct render {
	int fd;
	struct buf b;
	bool any;
};

static int render_line(struct sink *s, const struct jsonl_row *l, void *ctx)
{
	struct render *r = ctx;

	if (!l->mlen)
		return 0;	/* an epoch's end */
	put_entry(s, &r->b, l, !r->any);
	r->any = true;
	if (r->b.oom)
		return -ENOMEM;
	return r->b.len >= CHUNK ? buf_write_out(&r->b, r->fd) : 0;
}

static int render_fill(int fd, void *ctx)
{
	struct sink *s = ctx;
	struct render r = { .fd = fd };
	int ret;

	put_head(s, &r.b);
	ret = each_line(s, render_line, &r);
	if (!ret) {
		put_tail(s, &r.b, r.any);
		ret = r.b.oom ? -ENOMEM : buf_write_out(&r.b, fd);
	}
	buf_free(&r.b);
	return ret;
}

static int render(struct sink *s)
{
	int64_t t0 = mono_ns();
	int ret = file_replace_by(s->dirfd, STATE_NAME, STATE_TMP, render_fill, s);

	if (ret)
		return ret;
	s->rendered = s->committed;
	s->render_due = false;
	s->next_render_ns = mono_ns() + 9 * (mono_ns() - t0);
	return 0;
}

static int maybe_render(struct sink *s, bool now)
{
	if (s->rendered == s->committed && !s->render_due)
		return 0;
	if (!now && mono_ns() < s->next_render_ns)
		return 0;
	return render(s);
}

/* ---- the drain state's extra: what the rows do not say ---- */

static void extra_make(const struct sink *s, struct buf *b)
{
	buf_fmt(b, "hf1 %lld %lld %d", (long long)s->first_wall, (long long)s->last_wall,
		s->run_ended ? 1 : 0);
	for (int i = 0; i < HP_N; i++)
		buf_fmt(b, " %s", *s->hp[i] ? s->hp[i] : "-");
}

static int extra_load(struct sink *s, const char *text)
{
	long long fw, lw;
	int ended, pos = 0;
	const char *p;

	if (!text || !*text)
		return 0;	/* nothing recorded yet */
	if (sscanf(text, "hf1 %lld %lld %d%n", &fw, &lw, &ended, &pos) != 3)
		return -EBADMSG;
	s->first_wall = fw;
	s->last_wall = lw;
	s->run_ended = ended;
	p = text + pos;
	for (int i = 0; i < HP_N; i++) {
		char tok[32];
		int n = 0;

		if (sscanf(p, " %31s%n", tok, &n) != 1)
			return -EBADMSG;
		p += n;
		if (strcmp(tok, "-"))
			snprintf(s->hp[i], sizeof(s->hp[i]), "%s", tok);
	}
	return 0;
}

/* ---- sink operations ---- */

static int scan_line(struct sink *s, const struct jsonl_row *l, void *ctx)
{
	(void)ctx;
	return note_line(s, l);
}

/*
 * As the JSONL sink opens its file (sink_jsonl.c), for the rows file;
 * and a fresh start never replaces a trainer_state.json it did not write.
 */
static int open_files(struct sink *s, const struct sink_state *resume)
{
	int ret = mkdir_p(s->dir);

	if (ret)
		return ret;
	s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		return -errno;
	if (!resume) {
		struct stat js;

		/*
		 * Nor a trainer_state.json this drain did not write.  One
		 * next to our (empty) rows file is ours: a drain killed in
		 * its first commit, before its state named the output, made
		 * it.  Without the rows file it is somebody else's, and
		 * nothing is created.
		 */
		if (fstatat(s->dirfd, STATE_NAME, &js, AT_SYMLINK_NOFOLLOW) == 0 &&
		    fstatat(s->dirfd, ROWS_NAME, &js, AT_SYMLINK_NOFOLLOW) < 0)
			return -EEXIST;
	}
	ret = sink_lines_open(s->dirfd, ROWS_NAME, resume, &s->fd);
	if (ret || !resume)
		return ret;
	s->committed = resume->size;
	ret = extra_load(s, resume->extra);
	if (!ret)
		ret = each_line(s, scan_line, NULL);
	/* the rows may have changed (a rewind voided some): always */
	return ret ? ret : render(s);
}

static void hf_close(struct sink *s);

static int hf_open(struct sink **out, const char *path, const struct sink_state *resume)
{
	struct sink *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->fd = s->dirfd = -1;
	s->dir = strdup(path);
	ret = s->dir ? open_files(s, resume) : -ENOMEM;
	if (ret) {
		hf_close(s);		/* not committed_once: writes nothing */
		return ret;
	}
	s->written = s->committed;
	if (!resume)
		s->render_due = true;	/* the first commit writes it */
	*out = s;
	return 0;
}

static void put_suffix(struct buf *b, int32_t rank, uint32_t e, uint64_t st)
{
	if (rank >= 0) {
		buf_puts(b, "\"rank\": ");
		buf_u64(b, (uint64_t)rank);
		buf_puts(b, ", ");
	}
	buf_puts(b, "\"epoch\": ");
	buf_u64(b, e);
	buf_puts(b, ", \"step\": ");
	buf_u64(b, st);
	buf_puts(b, "}\n");
}

static int hf_write(struct sink *s, const struct row *r)
{
	struct buf *b = &s->out;
	size_t start = b->len;
	double loss = NAN;
	bool has_loss = false;
	int ret, n = 0;

	if (r->rank > 0 || (r->kind != ROW_LOST && !r->hf))
		return 0;	/* not process zero's, or a cross-rank row */
	buf_putc(b, '{');
	for (int i = 0; r->kind != ROW_LOST && i < r->n; i++) {
		if (!r->hf[i])
			continue;
		buf_json_str(b, r->hf[i]);
		buf_puts(b, ": ");
		put_float(b, r->vals[i]);	/* HF's values are floats */
		buf_puts(b, ", ");
		if (!strcmp(r->hf[i], "loss")) {
			loss = r->vals[i];
			has_loss = true;
		}
		n++;
	}
	if (r->kind == ROW_LOST) {
		buf_puts(b, "\"mring_lost\": ");
		buf_u64(b, r->lost);
		buf_puts(b, ", ");
		n++;
	}
	if (!n) {
		b->len = start;
		return 0;
	}
	put_suffix(b, r->rank, r->epoch, r->step);
	if (b->oom) {
		b->len = start;
		return -ENOMEM;
	}
	ret = note_row(s, r->epoch, r->step, false);
	if (ret) {
		b->len = start;
		return ret;
	}
	note_loss(s, r->step, has_loss, loss);
	if (r->wall_ns > 0) {
		if (!s->first_wall || r->wall_ns < s->first_wall)
			s->first_wall = r->wall_ns;
		if (r->wall_ns > s->last_wall)
			s->last_wall = r->wall_ns;
	}
	if (b->len >= BUF_FLUSH_AT)
		return buf_drain(b, s->fd, &s->written, s->committed, false);
	return 0;
}

/* A line without values: epoch @epoch ended at @step (sizes the epoch). */
static int hf_epoch_end(struct sink *s, int32_t rank, uint32_t epoch, uint64_t step)
{
	struct buf *b = &s->out;
	size_t start = b->len;
	int ret;

	if (rank > 0)
		return 0;
	buf_putc(b, '{');
	put_suffix(b, rank, epoch, step);
	ret = b->oom ? -ENOMEM : note_row(s, epoch, step, true);
	if (ret) {
		b->len = start;
		return ret;
	}
	return b->len >= BUF_FLUSH_AT ? buf_drain(b, s->fd, &s->written, s->committed, false) : 0;
}

/* A rewrite the throttle put off, once the drain has nothing else to do. */
static void hf_idle(struct sink *s)
{
	if (s->committed_once && maybe_render(s, false) < 0)
		s->render_due = true;	/* tried again at the next chance */
}

static int hf_commit(struct sink *s, struct sink_state *st)
{
	struct buf x = { 0 };
	int ret = buf_drain(&s->out, s->fd, &s->written, s->committed, false);

	if (ret < 0)
		return ret;
	extra_make(s, &x);
	ret = x.oom ? -ENOMEM : 0;
	if (!ret) {
		buf_putc(&x, '\0');
		ret = x.oom ? -ENOMEM : sink_state_set_extra(st, x.p);
	}
	buf_free(&x);
	if (ret)
		return ret;
	s->committed = s->written;
	st->size = s->committed;
	s->committed_once = true;
	return 0;
}

/* Durable: the rows fsynced, then trainer_state.json made from them. */
static int hf_sync(struct sink *s)
{
	if (fsync(s->fd) < 0)
		return -errno;
	return maybe_render(s, s->run_ended);
}

/* The run's TrainingArguments, when the producer stored them (MringCallback). */
static int hf_hparams(struct sink *s, const struct hparams *hp)
{
	struct hparam *top;
	int n, ret = hparams_top(hp->text, hp->len, &top, &n);
	char per_device[32] = "";

	if (ret)
		return ret;
	for (int i = 0; i < HP_N; i++)
		s->hp[i][0] = '\0';
	for (int k = 0; k < n; k++) {
		const struct hparam *h = &top[k];

		if (h->kind != HP_NUMBER || !isfinite(h->num) || !h->str ||
		    h->slen >= sizeof(s->hp[0]))
			continue;
		for (int i = 0; i < HP_N; i++)
			if (!strcmp(h->key, hp_names[i]))
				memcpy(s->hp[i], h->str, h->slen + 1);
		if (!strcmp(h->key, "per_device_train_batch_size"))
			memcpy(per_device, h->str, h->slen + 1);
	}
	if (!*s->hp[HP_BATCH])
		memcpy(s->hp[HP_BATCH], per_device, sizeof(per_device));
	hparams_flat_free(top, n);
	s->render_due = true;
	return 0;
}

/* HF's last log_history row, once every producer closed (not after a crash). */
static int hf_end(struct sink *s, bool success, double end_time)
{
	struct buf *b = &s->out;
	size_t start = b->len;
	double runtime = 0, batch;
	uint64_t gs = run_step(s);
	uint32_t e;
	int ret;

	(void)end_time;
	if (!success || s->run_ended || !s->any)
		return 0;
	e = s->neps ? s->eps[s->neps - 1].e : s->last_e;
	if (s->last_wall > s->first_wall)
		runtime = round((double)(s->last_wall - s->first_wall) / 1e5) / 1e4;
	buf_puts(b, "{\"total_flos\": 0.0, \"train_loss\": ");
	put_float(b, s->loss_n ? s->loss_sum / (double)s->loss_n : 0.0);
	buf_puts(b, ", \"train_runtime\": ");
	put_float(b, runtime);
	batch = *s->hp[HP_BATCH] ? strtod(s->hp[HP_BATCH], NULL) : 0;
	if (batch > 0 && runtime > 0) {
		buf_puts(b, ", \"train_samples_per_second\": ");
		put_float(b, round((double)gs * batch / runtime * 1e3) / 1e3);
	}
	buf_puts(b, ", \"train_steps_per_second\": ");
	put_float(b, runtime > 0 ? round((double)gs / runtime * 1e3) / 1e3 : 0.0);
	buf_puts(b, ", ");
	put_suffix(b, -1, e, gs);
	if (b->oom) {
		b->len = start;
		return -ENOMEM;
	}
	ret = note_row(s, e, gs, false);
	if (ret) {
		b->len = start;
		return ret;
	}
	s->run_ended = true;
	return 0;
}

static const char *hf_path(struct sink *s)
{
	return s->dir;
}

static void hf_close(struct sink *s)
{
	if (!s)
		return;
	if (s->fd >= 0) {
		if (s->committed_once)
			maybe_render(s, true);	/* what was committed, complete */
		close(s->fd);		/* and so releases the lock */
	}
	if (s->dirfd >= 0)
		close(s->dirfd);
	buf_free(&s->out);
	free(s->eps);
	free(s->dir);
	free(s);
}

const struct sink_ops sink_hf_ops = {
	.name = "hf",
	.open = hf_open,
	.write = hf_write,
	.commit = hf_commit,
	.sync = hf_sync,
	.path = hf_path,
	.hparams = hf_hparams,
	.hparams_end = hf_end,
	.end_always = true,
	.epoch_end = hf_epoch_end,
	.idle = hf_idle,
	.close = hf_close,
};
