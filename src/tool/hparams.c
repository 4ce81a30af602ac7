// SPDX-License-Identifier: MIT
/*
 * hparams.c - the run's hyperparameters (one JSON object, as
 * mring_hparams_read() returns it) in the forms the sinks write:
 *
 *  - hparams_yaml(): DIR/hparams.yaml for --csv, next to metrics.csv as
 *    Lightning's CSVLogger writes it.  PyYAML's yaml.safe_load() must
 *    return exactly what json.loads() returns for the text, and PyYAML
 *    reads YAML 1.1, so:
 *      - numbers: a JSON integer is written as it is (an int of any size
 *        in both); a JSON number with a fraction or an exponent gets a
 *        '.' in its mantissa and a sign in its exponent (1e-3 ->
 *        1.0e-3, 2E5 -> 2.0E+5): PyYAML's float pattern needs both and
 *        reads 1e-3 as a string.  Only characters are added, so both
 *        parsers round the same decimal number to the same double;
 *      - strings and keys are plain only when they are an identifier
 *        ([A-Za-z_][A-Za-z0-9_.-]*) that no YAML 1.1 resolver claims
 *        (yes, no, on, off, y, n, true, false, null, any case); every
 *        other one is double-quoted, with everything outside printable
 *        ASCII escaped (\n, \xXX, \uXXXX, \UXXXXXXXX), as PyYAML's own
 *        yaml.dump does by default: the file is ASCII, whatever locale
 *        open() decodes it with, and no YAML line break (NEL, U+2028)
 *        or BOM is ever raw;
 *      - a key longer than 1000 bytes written uses the explicit "? key"
 *        form (PyYAML refuses implicit keys of over 1024 characters);
 *      - block style (key: value per line, "- " items), nested objects
 *        and arrays indented by two; {} and [] when empty.
 *  - hparams_flatten(): the scalars of TensorBoard's hparams plugin, which
 *    takes no nesting: nested objects become "a/b" keys, arrays their
 *    compact JSON text (a string, as TensorBoard's own writer does with
 *    str(list)), an empty object the string "{}".
 *
 * The text comes from an untrusted segment: the library checked it, and
 * it is parsed again here with bounded nesting; what does not parse is
 * -EBADMSG and nothing is written.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sink.h"
#include "text.h"
#include "util.h"

#define JSON_DEPTH	128	/* the library allows 64 */
#define YAML_KEY_MAX	1000	/* longer written keys: "? key" */

enum jt { J_NULL, J_TRUE, J_FALSE, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
	enum jt t;
	const char *s;		/* its text: a string's is inside the quotes */
	size_t n;
	int kid, next;		/* first child, next sibling: -1 none; an
				 * object's children alternate key, value */
};

struct jdoc {
	struct jnode *v;
	int n, cap;
	const char *p, *end;
	int depth;
};

static void ws(struct jdoc *d)
{
	while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' ||
				 *d->p == '\r'))
		d->p++;
}

static int node_new(struct jdoc *d, enum jt t, const char *s)
{
	if (d->n == d->cap) {
		int cap = d->cap ? d->cap * 2 : 64;
		struct jnode *v = realloc(d->v, (size_t)cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n] = (struct jnode){ .t = t, .s = s, .kid = -1, .next = -1 };
	return d->n++;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int parse_string(struct jdoc *d)
{
	const char *s = ++d->p;
	int i;

	while (d->p < d->end && *d->p != '"') {
		unsigned char c = (unsigned char)*d->p;

		if (c < 0x20)
			return -EBADMSG;
		if (c == '\\') {
			char e = d->p + 1 < d->end ? d->p[1] : 0;

			if (e == 'u') {
				for (int k = 2; k < 6; k++)
					if (d->p + k >= d->end || !is_hex(d->p[k]))
						return -EBADMSG;
				d->p += 6;
			} else if (e && strchr("\"\\/bfnrt", e)) {
				d->p += 2;
			} else {
				return -EBADMSG;
			}
		} else if (c >= 0x80) {
			int n = utf8_len((const unsigned char *)d->p);

			if (!n || d->p + n > d->end)
				return -EBADMSG;
			d->p += n;
		} else {
			d->p++;
		}
	}
	if (d->p >= d->end)
		return -EBADMSG;
	i = node_new(d, J_STR, s);
	if (i >= 0)
		d->v[i].n = (size_t)(d->p - s);
	d->p++;
	return i;
}

static int parse_number(struct jdoc *d)
{
	const char *s = d->p;
	int i;

	if (d->p < d->end && *d->p == '-')
		d->p++;
	if (d->p < d->end && *d->p == '0')
		d->p++;
	else if (d->p < d->end && is_digit(*d->p))
		while (d->p < d->end && is_digit(*d->p))
			d->p++;
	else
		return -EBADMSG;
	if (d->p < d->end && *d->p == '.') {
		if (++d->p >= d->end || !is_digit(*d->p))
			return -EBADMSG;
		while (d->p < d->end && is_digit(*d->p))
			d->p++;
	}
	if (d->p < d->end && (*d->p == 'e' || *d->p == 'E')) {
		d->p++;
		if (d->p < d->end && (*d->p == '+' || *d->p == '-'))
			d->p++;
		if (d->p >= d->end || !is_digit(*d->p))
			return -EBADMSG;
		while (d->p < d->end && is_digit(*d->p))
			d->p++;
	}
	i = node_new(d, J_NUM, s);
	if (i >= 0)
		d->v[i].n = (size_t)(d->p - s);
	return i;
}

static int parse_word(struct jdoc *d, const char *w, enum jt t)
{
	size_t n = strlen(w);
	int i;

	if ((size_t)(d->end - d->p) < n || memcmp(d->p, w, n))
		return -EBADMSG;
	i = node_new(d, t, d->p);
	if (i >= 0)
		d->v[i].n = n;
	d->p += n;
	return i;
}

static int parse_value(struct jdoc *d);

/* An array's items or an object's key/value pairs, as children of @i. */
static int parse_container(struct jdoc *d, enum jt t)
{
	char close = t == J_OBJ ? '}' : ']';
	int i = node_new(d, t, d->p), last = -1;

	if (i < 0)
		return i;
	if (++d->depth > JSON_DEPTH)
		return -EBADMSG;
	d->p++;
	ws(d);
	if (d->p < d->end && *d->p == close) {
		d->p++;
		d->depth--;
		return i;
	}
	for (;;) {
		int k, v;

		ws(d);
		if (t == J_OBJ) {
			if (d->p >= d->end || *d->p != '"')
				return -EBADMSG;
			k = parse_string(d);
			if (k < 0)
				return k;
			ws(d);
			if (d->p >= d->end || *d->p != ':')
				return -EBADMSG;
			d->p++;
			if (last < 0)
				d->v[i].kid = k;
			else
				d->v[last].next = k;
			last = k;
		}
		v = parse_value(d);
		if (v < 0)
			return v;
		if (last < 0)
			d->v[i].kid = v;
		else
			d->v[last].next = v;
		last = v;
		ws(d);
		if (d->p < d->end && *d->p == ',') {
			d->p++;
			continue;
		}
		if (d->p < d->end && *d->p == close) {
			d->p++;
			break;
		}
		return -EBADMSG;
	}
	d->depth--;
	return i;
}

static int parse_value(struct jdoc *d)
{
	ws(d);
	if (d->p >= d->end)
		return -EBADMSG;
	switch (*d->p) {
	case '{': return parse_container(d, J_OBJ);
	case '[': return parse_container(d, J_ARR);
	case '"': return parse_string(d);
	case 't': return parse_word(d, "true", J_TRUE);
	case 'f': return parse_word(d, "false", J_FALSE);
	case 'n': return parse_word(d, "null", J_NULL);
	default: return parse_number(d);
	}
}

/* @text: one JSON object.  0 (the root is node 0), or -EBADMSG, -ENOMEM. */
static int jdoc_parse(struct jdoc *d, const char *text, size_t len)
{
	int root;

	*d = (struct jdoc){ .p = text, .end = text + len };
	ws(d);
	if (d->p >= d->end || *d->p != '{')
		return -EBADMSG;
	root = parse_value(d);
	if (root < 0)
		return root;
	ws(d);
	return d->p == d->end ? 0 : -EBADMSG;
}

static void jdoc_free(struct jdoc *d)
{
	free(d->v);
	d->v = NULL;
}

uint64_t hparams_hash(const char *text, size_t len)
{
	uint64_t h = 0xcbf29ce484222325u;	/* FNV-1a */

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)text[i]) * 0x100000001b3u;
	return h ? h : 1;			/* 0 means "none" */
}

/* ---- string contents: JSON escapes -> code points ---- */

static unsigned hex4(const char *p)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++)
		v = v * 16 + (unsigned)(is_digit(p[i]) ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
	return v;
}

/*
 * The code point at *@p (inside a checked JSON string ending at @end),
 * advancing *@p.  A lone surrogate escape comes back as itself
 * (0xD800..0xDFFF); the caller decides what to make of it.
 */
static unsigned next_cp(const char **p, const char *end)
{
	const unsigned char *u = (const unsigned char *)*p;
	unsigned cp;

	if (*u == '\\') {
		char e = (char)u[1];

		*p += 2;
		switch (e) {
		case 'b': return '\b';
		case 'f': return '\f';
		case 'n': return '\n';
		case 'r': return '\r';
		case 't': return '\t';
		case 'u': break;
		default: return (unsigned char)e;	/* " \ / */
		}
		cp = hex4(*p);
		*p += 4;
		if (cp >= 0xd800 && cp < 0xdc00 && end - *p >= 6 && (*p)[0] == '\\' &&
		    (*p)[1] == 'u') {
			unsigned lo = hex4(*p + 2);

			if (lo >= 0xdc00 && lo < 0xe000) {
				*p += 6;
				return 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
		}
		return cp;
	}
	if (*u < 0x80) {
		(*p)++;
		return *u;
	}
	{
		int n = utf8_len(u);

		cp = n == 2 ? *u & 0x1fu : n == 3 ? *u & 0x0fu : *u & 0x07u;
		for (int i = 1; i < n; i++)
			cp = (cp << 6) | (u[i] & 0x3fu);
		*p += n;
	}
	return cp;
}

static void put_utf8(struct buf *b, unsigned cp)
{
	char c[4];
	int n;

	if (cp >= 0xd800 && cp < 0xe000)
		cp = 0xfffd;	/* a lone surrogate has no UTF-8 */
	if (cp < 0x80) {
		c[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		c[0] = (char)(0xc0 | (cp >> 6));
		c[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		c[0] = (char)(0xe0 | (cp >> 12));
		c[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		c[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		c[0] = (char)(0xf0 | (cp >> 18));
		c[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		c[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		c[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	buf_put(b, c, (size_t)n);
}

/* A JSON string's contents as UTF-8 (lone surrogates: U+FFFD). */
static void str_utf8(struct buf *b, const struct jnode *s)
{
	const char *p = s->s, *end = s->s + s->n;

	while (p < end)
		put_utf8(b, next_cp(&p, end));
}

/* ---- YAML ---- */

static bool yaml_plain_ok(const struct jnode *s)
{
	static const char *const words[] = { "y", "n", "yes", "no", "on", "off", "true",
					     "false", "null" };
	char c = s->n ? s->s[0] : 0;

	if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'))
		return false;
	for (size_t i = 1; i < s->n; i++) {
		c = s->s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strlen(words[i]) == s->n && !strncasecmp(words[i], s->s, s->n))
			return false;
	return true;
}

/* @s as a YAML scalar: plain, or double-quoted and ASCII. */
static void yaml_str(struct buf *b, const struct jnode *s)
{
	const char *p = s->s, *end = s->s + s->n;

	if (yaml_plain_ok(s)) {
		buf_put(b, s->s, s->n);
		return;
	}
	buf_putc(b, '"');
	while (p < end) {
		unsigned cp = next_cp(&p, end);

		switch (cp) {
		case '"': buf_puts(b, "\\\""); continue;
		case '\\': buf_puts(b, "\\\\"); continue;
		case '\n': buf_puts(b, "\\n"); continue;
		case '\t': buf_puts(b, "\\t"); continue;
		case '\r': buf_puts(b, "\\r"); continue;
		default: break;
		}
		if (cp >= 0x20 && cp < 0x7f)
			buf_putc(b, (char)cp);
		else if (cp < 0x100)
			buf_fmt(b, "\\x%02X", cp);
		else if (cp < 0x10000)
			buf_fmt(b, "\\u%04X", cp);
		else
			buf_fmt(b, "\\U%08X", cp);
	}
	buf_putc(b, '"');
}

/* A JSON number as PyYAML reads the same int or float (see the top). */
static void yaml_num(struct buf *b, const struct jnode *v)
{
	const char *s = v->s, *e = s + v->n;
	const char *exp = memchr(s, 'e', v->n) ?: memchr(s, 'E', v->n);
	const char *mant_end = exp ? exp : e;

	if (!exp && !memchr(s, '.', v->n)) {
		buf_put(b, s, v->n);	/* an integer: the same int, any size */
		return;
	}
	buf_put(b, s, (size_t)(mant_end - s));
	if (!memchr(s, '.', (size_t)(mant_end - s)))
		buf_puts(b, ".0");
	if (!exp)
		return;
	buf_putc(b, *exp);
	if (exp[1] != '+' && exp[1] != '-')
		buf_putc(b, '+');
	buf_put(b, exp + 1, (size_t)(e - exp - 1));
}

static void indent(struct buf *b, int n)
{
	for (int i = 0; i < n; i++)
		buf_putc(b, ' ');
}

static void yaml_node(struct buf *b, const struct jdoc *d, int i, int ind);

/* After "key:" or "-": a scalar on the same line, a container below. */
static void yaml_after(struct buf *b, const struct jdoc *d, int i, int ind)
{
	const struct jnode *v = &d->v[i];

	if ((v->t == J_OBJ || v->t == J_ARR) && v->kid >= 0) {
		buf_putc(b, '\n');
		yaml_node(b, d, i, ind + 2);
		return;
	}
	buf_putc(b, ' ');
	switch (v->t) {
	case J_OBJ: buf_puts(b, "{}"); break;
	case J_ARR: buf_puts(b, "[]"); break;
	case J_STR: yaml_str(b, v); break;
	case J_NUM: yaml_num(b, v); break;
	case J_TRUE: buf_puts(b, "true"); break;
	case J_FALSE: buf_puts(b, "false"); break;
	case J_NULL: buf_puts(b, "null"); break;
	}
	buf_putc(b, '\n');
}

/* A non-empty container, in block style at indentation @ind. */
static void yaml_node(struct buf *b, const struct jdoc *d, int i, int ind)
{
	const struct jnode *c = &d->v[i];

	for (int k = c->kid; k >= 0; k = d->v[k].next) {
		indent(b, ind);
		if (c->t == J_ARR) {
			buf_putc(b, '-');
			yaml_after(b, d, k, ind);
			continue;
		}
		{
			struct buf key = { 0 };

			yaml_str(&key, &d->v[k]);
			if (key.len > YAML_KEY_MAX) {
				/* "? key", then ": value" on the next line */
				buf_puts(b, "? ");
				buf_put(b, key.p, key.len);
				buf_putc(b, '\n');
				indent(b, ind);
			} else {
				buf_put(b, key.p, key.len);
			}
			if (key.oom)
				b->oom = true;
			buf_free(&key);
		}
		k = d->v[k].next;	/* the value */
		buf_putc(b, ':');
		yaml_after(b, d, k, ind);
	}
}

int hparams_yaml(struct buf *out, const char *text, size_t len)
{
	struct jdoc d;
	int err = jdoc_parse(&d, text, len);

	if (!err) {
		if (d.v[0].kid < 0)
			buf_puts(out, "{}\n");
		else
			yaml_node(out, &d, 0, 0);
		err = out->oom ? -ENOMEM : 0;
	}
	jdoc_free(&d);
	return err;
}

/* ---- TensorBoard: flat scalars ---- */

/* A value in compact JSON: strings and numbers as they were written. */
static void json_compact(struct buf *b, const struct jdoc *d, int i)
{
	const struct jnode *v = &d->v[i];
	bool obj = v->t == J_OBJ;
	int n = 0;

	switch (v->t) {
	case J_STR:
		buf_putc(b, '"');
		buf_put(b, v->s, v->n);
		buf_putc(b, '"');
		return;
	case J_OBJ:
	case J_ARR:
		buf_putc(b, obj ? '{' : '[');
		for (int k = v->kid; k >= 0; k = d->v[k].next, n++) {
			if (n && !(obj && n % 2))
				buf_putc(b, ',');
			json_compact(b, d, k);
			if (obj && !(n % 2))
				buf_putc(b, ':');
		}
		buf_putc(b, obj ? '}' : ']');
		return;
	default:
		buf_put(b, v->s, v->n);
	}
}

struct flat {
	struct hparam *v;
	int n, cap;
};

static int flat_add(struct flat *f, struct hparam *hp, const struct buf *key,
		    const struct buf *val)
{
	struct hparam *e;

	if (key->oom || val->oom)
		return -ENOMEM;
	if (f->n == f->cap) {
		int cap = f->cap ? f->cap * 2 : 16;
		struct hparam *v = realloc(f->v, (size_t)cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		f->v = v;
		f->cap = cap;
	}
	e = &f->v[f->n];
	*e = *hp;
	e->key = malloc(key->len + 1);
	e->str = malloc(val->len + 1);
	if (!e->key || !e->str) {
		free(e->key);
		free(e->str);
		return -ENOMEM;
	}
	memcpy(e->key, key->p ? key->p : "", key->len);
	e->key[key->len] = '\0';
	e->klen = key->len;
	memcpy(e->str, val->p ? val->p : "", val->len);
	e->str[val->len] = '\0';
	e->slen = val->len;
	f->n++;
	return 0;
}

/*
 * The members of object @obj as struct hparam.  @nest: a non-empty
 * object's members are taken in turn under "key/..." (TensorBoard);
 * otherwise only the top level, and every value also gets its text in
 * ->str: a string's decoded, any other value's compact JSON (mring serve).
 */
static int flatten(const struct jdoc *d, int obj, struct buf *key, struct flat *f, bool nest)
{
	for (int k = d->v[obj].kid; k >= 0; k = d->v[d->v[k].next].next) {
		const struct jnode *v = &d->v[d->v[k].next];
		size_t at = key->len;
		struct hparam hp = { 0 };
		struct buf val = { 0 };
		int err = 0;

		if (at)
			buf_putc(key, '/');
		str_utf8(key, &d->v[k]);
		if (nest && v->t == J_OBJ && v->kid >= 0) {
			err = key->oom ? -ENOMEM : flatten(d, d->v[k].next, key, f, nest);
			key->len = at;
			if (err)
				return err;
			continue;
		}
		switch (v->t) {
		case J_NULL: hp.kind = HP_NULL; break;
		case J_TRUE: hp.kind = HP_BOOL; hp.b = true; break;
		case J_FALSE: hp.kind = HP_BOOL; break;
		case J_NUM:
			hp.kind = HP_NUMBER;
			hp.num = strtod(v->s, NULL);	/* ends at the number */
			break;
		case J_STR:
			hp.kind = HP_STRING;
			str_utf8(&val, v);
			break;
		case J_OBJ:
		case J_ARR:
			hp.kind = HP_STRING;
			json_compact(&val, d, d->v[k].next);
			break;
		}
		if (!nest && v->t != J_STR && v->t != J_OBJ && v->t != J_ARR)
			json_compact(&val, d, d->v[k].next);	/* number, true, false, null */
		err = flat_add(f, &hp, key, &val);
		buf_free(&val);
		key->len = at;
		if (err)
			return err;
	}
	return 0;
}

void hparams_flat_free(struct hparam *flat, int n)
{
	for (int i = 0; i < n; i++) {
		free(flat[i].key);
		free(flat[i].str);
	}
	free(flat);
}

static int members(const char *text, size_t len, bool nest, struct hparam **out, int *n)
{
	struct jdoc d;
	struct buf key = { 0 };
	struct flat f = { 0 };
	int err = jdoc_parse(&d, text, len);

	if (!err)
		err = flatten(&d, 0, &key, &f, nest);
	buf_free(&key);
	jdoc_free(&d);
	if (err) {
		hparams_flat_free(f.v, f.n);
		return err;
	}
	*out = f.v;
	*n = f.n;
	return 0;
}

int hparams_flatten(const char *text, size_t len, struct hparam **out, int *n)
{
	return members(text, len, true, out, n);
}

int hparams_top(const char *text, size_t len, struct hparam **out, int *n)
{
	return members(text, len, false, out, n);
}

/* ---- side files ---- */

/* Does @name in @dirfd hold exactly @len bytes of @data?  1, 0, -errno. */
static int holds(int dirfd, const char *name, const char *data, size_t len)
{
	struct stat st;
	char *have;
	ssize_t n;
	int fd, same;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	if ((uint64_t)st.st_size != len) {
		close(fd);
		return 0;
	}
	have = malloc(len + 1);
	if (!have) {
		close(fd);
		return -ENOMEM;
	}
	n = pread(fd, have, len + 1, 0);
	same = n == (ssize_t)len && !memcmp(have, data, len);
	free(have);
	close(fd);
	return same;
}

int file_replace_by(int dirfd, const char *name, const char *tmp,
		    int (*fill)(int fd, void *ctx), void *ctx)
{
	int fd, err;

	if (unlinkat(dirfd, tmp, 0) && errno != ENOENT)
		return -errno;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	err = fill(fd, ctx);
	if (!err && fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (!err && renameat(dirfd, tmp, dirfd, name))
		err = -errno;
	if (err) {
		unlinkat(dirfd, tmp, 0);
		return err;
	}
	if (fsync(dirfd) && errno != EINVAL)
		return -errno;
	return 0;
}

struct data {
	const char *p;
	size_t len;
};

static int fill_data(int fd, void *ctx)
{
	const struct data *d = ctx;

	return write_all(fd, d->p, d->len);
}

int file_replace(int dirfd, const char *name, const char *tmp, const char *data, size_t len)
{
	struct data d = { data, len };
	int err = holds(dirfd, name, data, len);

	if (err)
		return err < 0 ? err : 0;	/* an error, or no change */
	return file_replace_by(dirfd, name, tmp, fill_data, &d);
}
