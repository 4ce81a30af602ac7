// SPDX-License-Identifier: MIT
/*
 * utf8.c - names are UTF-8: checking a name a caller gives us, and
 * turning a file name (any bytes) into a run name that is UTF-8 and cut
 * only between characters.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib.h"

/*
 * Length of the well-formed UTF-8 character at @s, which has @n bytes
 * left, or 0.  Well-formed as in Unicode 15, table 3-7: no overlong
 * forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no
 * truncated sequence.
 */
size_t _mring_utf8_char(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (!n)
		return 0;
	if (p[0] < 0x80)
		return 1;
	if (p[0] < 0xc2)		/* continuation byte, or overlong 2-byte */
		return 0;
	if (p[0] < 0xe0) {
		len = 2;
	} else if (p[0] < 0xf0) {
		len = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;	/* overlong */
		else if (p[0] == 0xed)
			hi = 0x9f;	/* surrogates */
	} else if (p[0] < 0xf5) {
		len = 4;
		if (p[0] == 0xf0)
			lo = 0x90;	/* overlong */
		else if (p[0] == 0xf4)
			hi = 0x8f;	/* above U+10FFFF */
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* Is the NUL-terminated @s well-formed UTF-8 throughout? */
bool _mring_utf8_valid(const char *s)
{
	size_t n = strlen(s), i = 0, k;

	while (i < n) {
		k = _mring_utf8_char(s + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

/*
 * Copy @src into @dst (@size bytes, NUL included) as a name readers can
 * take as text: every byte that is not part of a well-formed UTF-8
 * character, and every control character (< 0x20, 0x7f), becomes '?',
 * and the copy ends before the first character that does not fit whole.
 * Returns the length copied.
 */
size_t _mring_name_copy(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src), i = 0, o = 0, k;

	if (!size)
		return 0;
	while (i < n) {
		k = _mring_utf8_char(src + i, n - i);
		if (k == 1 && ((unsigned char)src[i] < 0x20 || src[i] == 0x7f))
			k = 0;
		if (o + (k ? k : 1) >= size)
			break;
		if (k) {
			memcpy(dst + o, src + i, k);
			o += k;
			i += k;
		} else {
			dst[o++] = '?';
			i++;
		}
	}
	dst[o] = '\0';
	return o;
}
