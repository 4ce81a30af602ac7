// SPDX-License-Identifier: MIT
/*
 * drain_names.c - the output key of every metric of a segment.
 *
 * A metric logged ON_STEP and ON_EPOCH writes name_step and name_epoch,
 * as Lightning does; any other metric writes its plain name.  Every key
 * of a segment is unique, whatever names were registered and in which
 * order, so that no row holds a key twice and no column means two
 * things:
 *  - a key every row has already (step, epoch, rank, mring_lost) becomes
 *    metric/KEY;
 *  - a key that a metric with a lower id holds already (a metric named
 *    loss_step next to loss logged ON_STEP|ON_EPOCH) becomes KEY#ID, ID
 *    being the later metric's id; the earlier metric keeps its key, so
 *    rows already written never change meaning.
 * Bytes that are not UTF-8 become U+FFFD and control characters '?', so
 * every sink gets the same, valid key from an untrusted segment.
 *
 * Each metric also gets the name Hugging Face's tools know it by (--hf,
 * sink_hf.c): its plain name, without _step; train_loss is HF's loss and
 * a val_ prefix is HF's eval_; a name HF's rows use already (the final
 * row's train_runtime, ...) becomes metric/NAME.  These names are unique
 * within the segment by the same rule as the keys.
 *
 * The table grows when an event names a metric it does not have yet;
 * rows hold ids and get their keys when written, so growing it never
 * invalidates a row being built.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"
#include "util.h"

#define KEY_MAX	512	/* 63 name bytes, 3 each as U+FFFD, and the suffixes */

static uint64_t key_hash(const char *k)
{
	uint64_t h = 1469598103934665603ull;	/* FNV-1a */

	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ull;
	return h;
}

static bool keyset_has(const struct keyset *ks, const char *key)
{
	if (!ks->cap)
		return false;
	for (size_t i = key_hash(key) & (ks->cap - 1);; i = (i + 1) & (ks->cap - 1)) {
		if (!ks->slot[i])
			return false;
		if (!strcmp(ks->slot[i], key))
			return true;
	}
}

static int keyset_add(struct keyset *ks, const char *key)
{
	size_t i;

	if (2 * (ks->n + 1) > ks->cap) {
		struct keyset big = { .cap = ks->cap ? 2 * ks->cap : 64 };

		big.slot = calloc(big.cap, sizeof(*big.slot));
		if (!big.slot)
			return -ENOMEM;
		for (size_t k = 0; k < ks->cap; k++)
			if (ks->slot[k])
				keyset_add(&big, ks->slot[k]);
		free(ks->slot);
		*ks = big;
	}
	for (i = key_hash(key) & (ks->cap - 1); ks->slot[i]; i = (i + 1) & (ks->cap - 1))
		;
	ks->slot[i] = key;
	ks->n++;
	return 0;
}

/* @name as a key: valid UTF-8, no control characters. */
static void key_clean(char *out, size_t len, const char *name)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t o = 0;

	while (*s && o + 4 < len) {
		int n = utf8_len(s);

		if (n == 1 && (*s < 0x20 || *s == 0x7f)) {
			out[o++] = '?';
		} else if (n) {
			memcpy(out + o, s, (size_t)n);
			o += (size_t)n;
		} else {
			memcpy(out + o, "\xef\xbf\xbd", 3);	/* U+FFFD */
			o += 3;
			n = 1;
		}
		s += n;
	}
	out[o] = '\0';
}

/* The key for @base (name, name_step or name_epoch) of metric @id. */
static char *key_pick(struct keyset *ks, const char *base, int id)
{
	char key[KEY_MAX];
	size_t len;
	char *k;

	snprintf(key, sizeof(key), "%s%s", sink_key_reserved(base) ? "metric/" : "", base);
	len = strlen(key);
	while (keyset_has(ks, key) && len + 12 < sizeof(key))
		len += (size_t)snprintf(key + len, sizeof(key) - len, "#%d", id);
	if (keyset_has(ks, key))
		return NULL;	/* cannot happen: KEY_MAX leaves room for 30 suffixes */
	k = strdup(key);
	if (k && keyset_add(ks, k) < 0) {
		free(k);
		k = NULL;
	}
	return k;
}

/* The name HF's log_history and model card look for (docs/drain.md). */
static void hf_base(char *out, size_t len, const char *clean)
{
	static const char *const final_keys[] = {
		"train_runtime", "train_samples_per_second", "train_steps_per_second",
		"total_flos",
	};
	bool taken = sink_key_reserved(clean);

	for (size_t i = 0; i < sizeof(final_keys) / sizeof(final_keys[0]); i++)
		taken |= !strcmp(clean, final_keys[i]);
	if (!strcmp(clean, "train_loss"))
		snprintf(out, len, "loss");
	else if (!strncmp(clean, "val_", 4))
		snprintf(out, len, "eval_%s", clean + 4);
	else
		snprintf(out, len, "%s%s", taken ? "metric/" : "", clean);
}

static int name_fill(struct seg *g, int id)
{
	struct names *nm = &g->names[id];
	char name[64], clean[KEY_MAX - 16], base[KEY_MAX];
	unsigned flags;
	bool both;
	int ret = mring_metric_info(g->r, id, name, sizeof(name), &flags);

	if (ret < 0)
		return ret;
	key_clean(clean, sizeof(clean), name);
	both = (flags & MRING_ON_STEP) && (flags & MRING_ON_EPOCH);
	nm->flags = flags;
	hf_base(base, sizeof(base), clean);
	nm->hf = key_pick(&g->hfkeys, base, id);
	if (!nm->hf)
		return -ENOMEM;
	if (flags & MRING_ON_STEP) {
		snprintf(base, sizeof(base), "%s%s", clean, both ? "_step" : "");
		nm->step = key_pick(&g->keys, base, id);
		if (!nm->step)
			return -ENOMEM;
	}
	if (flags & MRING_ON_EPOCH) {
		snprintf(base, sizeof(base), "%s%s", clean, both ? "_epoch" : "");
		nm->epoch = key_pick(&g->keys, base, id);
		if (!nm->epoch)
			return -ENOMEM;
	}
	return 0;
}

/*
 * Make the table hold metric @id (and every id below it).  An event (or
 * a drain state) naming a metric the segment does not have is corrupt:
 * -EBADMSG.  Also -ENOMEM, or mring_metric_info()'s error.
 */
int names_cover(struct seg *g, int id)
{
	struct names *p;
	int n;

	if (id < g->nnames)
		return 0;
	n = mring_metric_count(g->r);
	if (n <= id)
		return -EBADMSG;
	p = realloc(g->names, (size_t)n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	g->names = p;
	memset(p + g->nnames, 0, (size_t)(n - g->nnames) * sizeof(*p));
	while (g->nnames < n) {
		int ret = name_fill(g, g->nnames);

		if (ret < 0) {
			/* the drain stops here: nothing looks at the keys again */
			free(p[g->nnames].step);
			free(p[g->nnames].epoch);
			free(p[g->nnames].hf);
			return ret;
		}
		g->nnames++;
	}
	return 0;
}

void names_free(struct seg *g)
{
	for (int id = 0; id < g->nnames; id++) {
		free(g->names[id].step);
		free(g->names[id].epoch);
		free(g->names[id].hf);
	}
	free(g->names);
	free(g->keys.slot);
	free(g->hfkeys.slot);
}
