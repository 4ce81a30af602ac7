// SPDX-License-Identifier: MIT
/*
 * drain_hparams.c - the run's hyperparameters, from the segments to the
 * sinks that have a place for them (--csv: DIR/hparams.yaml; --jsonl:
 * FILE.hparams.json; --tensorboard: the hparams plugin's session start
 * and end summaries in the sink's own event file).  docs/drain.md,
 * "Hyperparameters".
 *
 *  - Which: those of the lowest rank that has any (ranks normally set the
 *    same); once, stderr says that another rank's differ.
 *  - When: read at each commit (a read copies the text, up to 64 KiB, so
 *    never per ring read), and about once a second while the rings are
 *    idle, so hparams set after the drain started are picked up.  A sink
 *    gets them when they differ from what it holds.
 *  - Session end: once every segment is done (its producer gone and its
 *    ring drained), a sink that holds hparams gets the end: success when
 *    every producer closed, failure when one crashed.
 *  - Exactly once: each output's entry in the drain state records the
 *    hash of the hparams it holds and whether it holds the end
 *    ("hparams HASH ENDED" after its "sink" line).  Both are handed to
 *    the sinks before the sinks commit, and recorded by the same commit:
 *    a drainer killed before the state names them restarts from a state
 *    that does not, and a TensorBoard file cut back to that state's size
 *    does not hold them either, so they are written once more, once.
 *    Side files are replaced whole, and not at all when they hold the
 *    text already.  A fresh drain's first commit, which only makes the
 *    state name the outputs, hands over nothing: a TensorBoard file that
 *    a drain killed before that left holds the version record alone, so
 *    the next fresh drain still removes it as a leftover.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drain.h"
#include "text.h"

#define HP_POLL_MS	1000	/* the check while the rings are idle */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next segment in rank order after rank @rank / index @idx. */
static int next_rank(const struct drain *d, int32_t rank, int idx)
{
	int best = -1;

	for (int i = 0; i < d->nsegs; i++) {
		const struct seg *g = &d->segs[i];

		if (idx >= 0 && (g->rank < rank || (g->rank == rank && i <= idx)))
			continue;
		if (best < 0 || g->rank < d->segs[best].rank)
			best = i;
	}
	return best;
}

static int take(struct hpsel *h, const struct seg *g, size_t n)
{
	char *t = malloc(n + 1);

	if (!t)
		return -ENOMEM;
	memcpy(t, h->buf, n + 1);
	free(h->text);
	free(h->yaml);
	hparams_flat_free(h->flat, h->forms.nflat);
	h->yaml = NULL;
	h->flat = NULL;
	h->forms = (struct hparams){ 0 };
	h->made = h->bad = false;
	h->text = t;
	h->len = n;
	h->hash = hparams_hash(t, n);
	h->start_time = (double)g->created_ns / 1e9;
	return 0;
}

/*
 * Read the hparams to use now into d->hp: those of the lowest rank that
 * has any.  A rank whose read fails for a moment (-EAGAIN: being
 * replaced flat out) keeps what was chosen before; a damaged text is
 * passed over (said once).  The other ranks are each compared once.
 */
static int hp_select(struct drain *d)
{
	struct hpsel *h = &d->hp;
	const struct seg *chosen = NULL;

	if (!h->buf && !(h->buf = malloc(MRING_HPARAMS_MAX + 1)))
		return -ENOMEM;
	for (int i = next_rank(d, 0, -1); i >= 0; i = next_rank(d, d->segs[i].rank, i)) {
		struct seg *g = &d->segs[i];
		int n;

		if (chosen && (h->warned || g->hp_compared))
			continue;
		n = g->r ? mring_hparams_read(g->r, h->buf, MRING_HPARAMS_MAX + 1) : -ENOENT;
		if (n == -EBADMSG && !g->hp_bad) {
			fprintf(stderr, "mring drain: %s: its hparams are damaged: passed over\n",
				g->path);
			g->hp_bad = true;
		}
		if (n == -EAGAIN && !chosen)
			return 0;
		if (n < 0)
			continue;
		if (!chosen) {
			chosen = g;
			if (!h->text || h->len != (size_t)n || memcmp(h->text, h->buf, (size_t)n)) {
				int ret = take(h, g, (size_t)n);

				if (ret < 0)
					return ret;
				for (int k = 0; k < d->nsegs; k++)
					d->segs[k].hp_compared = false;
			}
			g->hp_compared = true;
			continue;
		}
		g->hp_compared = true;
		if ((size_t)n != h->len || memcmp(h->text, h->buf, (size_t)n)) {
			fprintf(stderr, "mring drain: %s (rank %d) has other hparams than %s "
				"(rank %d): the outputs get rank %d's\n", g->path, (int)g->rank,
				chosen->path, (int)chosen->rank, (int)chosen->rank);
			h->warned = true;
		}
	}
	return 0;
}

/* The forms of the chosen text, once per text. */
static int make_forms(struct hpsel *h)
{
	struct buf y = { 0 };
	int n = 0, ret;

	if (h->made)
		return 0;
	ret = hparams_yaml(&y, h->text, h->len);
	if (!ret)
		ret = hparams_flatten(h->text, h->len, &h->flat, &n);
	if (ret < 0) {
		buf_free(&y);
		if (ret != -EBADMSG)
			return ret;
		/* the library let through what we cannot parse: never */
		fprintf(stderr, "mring drain: hparams: not one JSON object: not written\n");
		h->bad = true;
	}
	h->yaml = y.p;
	h->forms = (struct hparams){
		.text = h->text, .len = h->len, .yaml = y.p ? y.p : "", .yaml_len = y.len,
		.flat = h->flat, .nflat = n, .start_time = h->start_time,
		.replace = file_replace,
	};
	h->made = true;
	return 0;
}

static int out_failed(struct drain *d, struct out *o, int err)
{
	fprintf(stderr, "mring drain: --%s %s: hparams: %s\n", o->ops->name, o->arg,
		strerror(-err));
	d->failed = d->output_failed = true;
	return err;
}

/*
 * At each commit, before the sinks commit: hand the hparams to each sink
 * that does not hold them yet, and the session end once every segment
 * is done.
 */
int hparams_update(struct drain *d)
{
	struct hpsel *h = &d->hp;
	bool all_done = d->nsegs > 0, success = true;
	int ret;

	if (h->hold)
		return 0;
	ret = hp_select(d);
	if (ret < 0) {
		fprintf(stderr, "mring drain: hparams: %s\n", strerror(-ret));
		d->failed = d->output_failed = true;
		return ret;
	}
	for (int i = 0; h->text && i < d->nouts; i++) {
		struct out *o = &d->outs[i];

		if (!o->ops->hparams || o->hp_hash == h->hash)
			continue;
		ret = make_forms(h);
		if (ret < 0) {
			fprintf(stderr, "mring drain: hparams: %s\n", strerror(-ret));
			d->failed = d->output_failed = true;
			return ret;
		}
		if (h->bad)
			break;
		ret = o->ops->hparams(o->s, &h->forms);
		if (ret < 0)
			return out_failed(d, o, ret);
		o->hp_hash = h->hash;
	}
	for (int i = 0; i < d->nsegs; i++) {
		all_done &= d->segs[i].done;
		success &= !d->segs[i].crashed;
	}
	for (int i = 0; all_done && i < d->nouts; i++) {
		struct out *o = &d->outs[i];

		if (!o->ops->hparams_end || o->hp_ended ||
		    (!o->hp_hash && !o->ops->end_always))
			continue;
		ret = o->ops->hparams_end(o->s, success, (double)now_real_ns() / 1e9);
		if (ret < 0)
			return out_failed(d, o, ret);
		o->hp_ended = true;
	}
	return 0;
}

/*
 * While the rings are idle: do some hparams wait for an output?  At most
 * every HP_POLL_MS; the commit that follows hands them over.
 */
bool hparams_changed(struct drain *d)
{
	int64_t now = now_ms();

	if (now - d->hp.polled < HP_POLL_MS)
		return false;
	d->hp.polled = now;
	if (hp_select(d) < 0 || !d->hp.text)
		return false;
	for (int i = 0; i < d->nouts; i++)
		if (d->outs[i].ops->hparams && d->outs[i].hp_hash != d->hp.hash)
			return true;
	return false;
}

/* After the output's "sink" line, when it holds any. */
void hparams_save(FILE *f, const struct out *o)
{
	if (o->hp_hash || o->hp_ended)
		fprintf(f, "hparams %016llx %d\n", (unsigned long long)o->hp_hash,
			o->hp_ended ? 1 : 0);
}

int hparams_load(struct out *o, const char *line)
{
	unsigned long long hash;
	int ended, pos = 0;

	if (sscanf(line, "hparams %16llx %d%n", &hash, &ended, &pos) != 2 ||
	    line[pos] || (ended != 0 && ended != 1))
		return -EBADMSG;
	o->hp_hash = hash;
	o->hp_ended = ended;
	return 0;
}

void hparams_free(struct drain *d)
{
	free(d->hp.buf);
	free(d->hp.text);
	free(d->hp.yaml);
	hparams_flat_free(d->hp.flat, d->hp.forms.nflat);
}
