// SPDX-License-Identifier: MIT
/*
 * json.c - is this text one JSON object (RFC 8259)?  For
 * mring_set_hparams(): readers (the drain's hparams.yaml, TensorBoard's
 * hparams plugin, Python's json.loads) get only what parses.
 *
 * A validator, not a parser: nothing is built.  Strings must be
 * well-formed UTF-8 without raw control characters; nesting is bounded
 * (_MRING_JSON_DEPTH) so a hostile caller cannot exhaust the stack.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "lib.h"

#define _MRING_JSON_DEPTH	64

struct jscan {
	const char *p, *end;
	int depth;
};

static void skip_ws(struct jscan *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' ||
				 *j->p == '\r'))
		j->p++;
}

static bool eat(struct jscan *j, char c)
{
	skip_ws(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool string(struct jscan *j)
{
	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	while (j->p < j->end && *j->p != '"') {
		unsigned char c = (unsigned char)*j->p;
		size_t k;

		if (c < 0x20)
			return false;	/* raw control character */
		if (c == '\\') {
			if (j->end - j->p < 2)
				return false;
			c = (unsigned char)j->p[1];
			if (c == 'u') {
				if (j->end - j->p < 6 || !is_hex(j->p[2]) || !is_hex(j->p[3]) ||
				    !is_hex(j->p[4]) || !is_hex(j->p[5]))
					return false;
				j->p += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", c) || !c)
				return false;
			j->p += 2;
			continue;
		}
		k = _mring_utf8_char(j->p, (size_t)(j->end - j->p));
		if (!k)
			return false;
		j->p += k;
	}
	if (j->p >= j->end)
		return false;
	j->p++;
	return true;
}

static bool digits(struct jscan *j)
{
	const char *start = j->p;

	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > start;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool number(struct jscan *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (!digits(j))
		return false;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!digits(j))
			return false;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!digits(j))
			return false;
	}
	return true;
}

static bool literal(struct jscan *j, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n))
		return false;
	j->p += n;
	return true;
}

static bool value(struct jscan *j);

/* after the opening brace or bracket: members until @close */
static bool members(struct jscan *j, char close, bool keys)
{
	if (++j->depth > _MRING_JSON_DEPTH)
		return false;
	if (eat(j, close)) {
		j->depth--;
		return true;
	}
	do {
		skip_ws(j);
		if (keys && (!string(j) || !eat(j, ':')))
			return false;
		if (!value(j))
			return false;
	} while (eat(j, ','));
	j->depth--;
	return eat(j, close);
}

static bool value(struct jscan *j)
{
	skip_ws(j);
	if (j->p >= j->end)
		return false;
	switch (*j->p) {
	case '{':
		j->p++;
		return members(j, '}', true);
	case '[':
		j->p++;
		return members(j, ']', false);
	case '"':
		return string(j);
	case 't':
		return literal(j, "true");
	case 'f':
		return literal(j, "false");
	case 'n':
		return literal(j, "null");
	default:
		return number(j);
	}
}

/*
 * 0 when @s (@len bytes, no NUL inside) is exactly one JSON object with
 * optional surrounding whitespace; -EINVAL otherwise.
 */
int _mring_json_object_check(const char *s, size_t len)
{
	struct jscan j = { .p = s, .end = s + len };

	if (memchr(s, '\0', len))
		return -EINVAL;
	skip_ws(&j);
	if (j.p >= j.end || *j.p != '{')
		return -EINVAL;
	if (!value(&j))
		return -EINVAL;
	skip_ws(&j);
	return j.p == j.end ? 0 : -EINVAL;
}
