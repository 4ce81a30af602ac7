// SPDX-License-Identifier: MIT
/*
 * shortest.c - a double as the shortest of %.15g, %.16g and %.17g that
 * reads back bit-exactly: the text every sink writes for a value.
 *
 * printf and strtod cost 200 to 800 ns a value, most of a drain's time.
 * For the values training logs are made of, 2^-19 <= |v| < 2^52 (about
 * 1.9e-6 to 4.5e15), the same text comes from exact integer arithmetic:
 * v = m / 2^t is scaled by 10^s into 128 bits with nothing lost, so the
 * rounding to 15, 16 or 17 digits and the test "does strtod read this
 * back as v" are exact comparisons, not floating point.  Everything
 * else (smaller, larger, subnormal) goes to printf and strtod as before.
 * tests/test_shortest.c checks the two paths give the same bytes.  Like
 * the tool as a whole, this assumes the default rounding mode (printf and
 * strtod follow fesetround(); the exact path always rounds to nearest,
 * ties to even).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef unsigned __int128 u128;

#define SCALE_MAX 22		/* m < 2^53 and 10^22 < 2^74: m * 10^s < 2^127 */

#define P10_19 UINT64_C(10000000000000000000)

/* 10^0 .. 10^SCALE_MAX */
static const u128 pow10_tab[SCALE_MAX + 1] = {
	UINT64_C(1), UINT64_C(10), UINT64_C(100), UINT64_C(1000),
	UINT64_C(10000), UINT64_C(100000), UINT64_C(1000000),
	UINT64_C(10000000), UINT64_C(100000000), UINT64_C(1000000000),
	UINT64_C(10000000000), UINT64_C(100000000000),
	UINT64_C(1000000000000), UINT64_C(10000000000000),
	UINT64_C(100000000000000), UINT64_C(1000000000000000),
	UINT64_C(10000000000000000), UINT64_C(100000000000000000),
	UINT64_C(1000000000000000000), P10_19, (u128)P10_19 * 10,
	(u128)P10_19 * 100, (u128)P10_19 * 1000,
};

/* printf's rendering, strtod's check: for what the fast path declines. */
static int shortest_libc(char *out, size_t len, double v)
{
	double back;
	int prec, n = 0;

	for (prec = 15; prec < 17; prec++) {
		n = snprintf(out, len, "%.*g", prec, v);
		back = strtod(out, NULL);
		if (!memcmp(&back, &v, sizeof(v)))
			return n;
	}
	return snprintf(out, len, "%.17g", v);
}

/*
 * v = m * 2^-t scaled by 10^s to x = n / 2^t with 10^16 <= x < 10^17:
 * 17 integer digits, and the exact fraction left over.
 */
struct scaled {
	u128 n;			/* m * 10^s, exact */
	unsigned t;		/* binary digits after the point */
	int s;			/* decimal scale */
	uint64_t x;		/* n >> t: the 17 leading digits, truncated */
	uint64_t m;
	int lower_closer;	/* m is 2^52: the double below is half as far */
};

/* Find s for @sc's m and t, starting from the estimate @s. */
static int scale(struct scaled *sc, int s)
{
	for (int tries = 0; tries < 3; tries++) {
		if (s < 0 || s > SCALE_MAX)
			return -1;
		sc->n = (u128)sc->m * pow10_tab[s];
		sc->x = (uint64_t)(sc->n >> sc->t);
		if (sc->x < UINT64_C(10000000000000000))
			s++;
		else if (sc->x >= UINT64_C(100000000000000000))
			s--;
		else {
			sc->s = s;
			return 0;
		}
	}
	return -1;
}

/*
 * @sc's value correctly rounded to @p significant digits (ties to even, as
 * printf in the default rounding mode).  May return 10^p (a carry).
 */
static uint64_t round_to(const struct scaled *sc, int p)
{
	uint64_t q = (uint64_t)pow10_tab[17 - p];
	uint64_t d = sc->x / q;
	u128 frac = sc->n & (((u128)1 << sc->t) - 1);
	/* what is left after d, times 2, against one unit of the p-th digit */
	u128 rest2 = 2 * (((u128)(sc->x % q) << sc->t) + frac);
	u128 unit = (u128)q << sc->t;

	if (rest2 > unit || (rest2 == unit && (d & 1)))
		d++;
	return d;
}

/*
 * Does strtod read d * 10^(17 - p - s) back as v?  It does when that
 * decimal lies within half the gap to each neighbouring double, the
 * boundary included when m is even (strtod's ties go to even).
 *
 * Within this file's range neither refinement changes an answer: a
 * midpoint between two doubles there has 18 or more significant digits,
 * and every power of two has an exact decimal of at most 16.  They are
 * kept so that the test stays exact if the range grows.
 */
static int reads_back(const struct scaled *sc, uint64_t d, int p)
{
	u128 c = ((u128)d * (uint64_t)pow10_tab[17 - p]) << sc->t;
	u128 half_gap = pow10_tab[sc->s];	/* 2^(-t-1) * 10^s * 2^(t+1) */
	u128 diff2;

	if (c >= sc->n) {
		diff2 = 2 * (c - sc->n);
	} else {
		diff2 = 2 * (sc->n - c);
		if (sc->lower_closer)
			diff2 *= 2;
	}
	return diff2 < half_gap || (diff2 == half_gap && !(sc->m & 1));
}

/* %g's layout of @d (@p digits, first digit at 10^@x10), zeros trimmed. */
static int layout_g(char *out, uint64_t d, int p, int x10, int neg)
{
	char dig[20];
	int nd = p, i, o = 0;

	for (i = p - 1; i >= 0; i--, d /= 10)
		dig[i] = (char)('0' + d % 10);
	while (nd > 1 && dig[nd - 1] == '0')
		nd--;
	if (neg)
		out[o++] = '-';
	if (x10 < -4 || x10 >= p) {
		out[o++] = dig[0];
		if (nd > 1) {
			out[o++] = '.';
			memcpy(out + o, dig + 1, (size_t)nd - 1);
			o += nd - 1;
		}
		o += sprintf(out + o, "e%c%02d", x10 < 0 ? '-' : '+', abs(x10));
	} else if (x10 >= 0) {
		for (i = 0; i <= x10; i++)
			out[o++] = i < nd ? dig[i] : '0';
		if (nd > x10 + 1) {
			out[o++] = '.';
			memcpy(out + o, dig + x10 + 1, (size_t)(nd - x10 - 1));
			o += nd - x10 - 1;
		}
	} else {
		out[o++] = '0';
		out[o++] = '.';
		for (i = -1; i > x10; i--)
			out[o++] = '0';
		memcpy(out + o, dig, (size_t)nd);
		o += nd;
	}
	out[o] = '\0';
	return o;
}

/* The exact path; -1 when @v is outside its range. */
static int shortest_exact(char *out, double v)
{
	uint64_t bits, m, d;
	struct scaled sc;
	int bexp, p;

	memcpy(&bits, &v, sizeof(bits));
	bexp = (int)(bits >> 52 & 0x7ff);
	if (bexp == 0 || bexp == 0x7ff)
		return -1;	/* zero, subnormal, Inf, NaN */
	m = (bits & ((UINT64_C(1) << 52) - 1)) | UINT64_C(1) << 52;
	/* v = m * 2^(bexp - 1075): t = 1075 - bexp in 1..72, so 2^-20 <= v
	 * < 2^52; scale() also declines s > 22, i.e. v < 2^-19 */
	if (bexp - 1075 >= 0 || 1075 - bexp > 72)
		return -1;
	sc.t = (unsigned)(1075 - bexp);
	sc.m = m;
	sc.lower_closer = !(bits & ((UINT64_C(1) << 52) - 1)) && bexp > 1;
	/* 16 - floor(log10 v), give or take one; scale() corrects it */
	if (scale(&sc, 16 - (int)floor((bexp - 1023) * 0.30102999566398120)))
		return -1;
	for (p = 15; p <= 17; p++) {
		int x10 = 16 - sc.s;

		d = round_to(&sc, p);
		/* 17 correctly rounded digits always read back */
		if (p < 17 && !reads_back(&sc, d, p))
			continue;
		/* 9.99.. rounded up; no double in this range does that, but
		 * the layout would be wrong if one did */
		if (d == (uint64_t)pow10_tab[p]) {
			d /= 10;
			x10++;
		}
		return layout_g(out, d, p, x10, (int)(bits >> 63));
	}
	return -1;	/* not reached: p = 17 returns */
}

static int shortest(char *out, size_t len, double v)
{
	int n;

	if (v == 0)		/* what %g prints for either zero */
		return snprintf(out, len, signbit(v) ? "-0" : "0");
	n = shortest_exact(out, v);
	return n >= 0 ? n : shortest_libc(out, len, v);
}

/*
 * Into a buffer of our own first: the choice between 15, 16 and 17 digits
 * is made on the whole text, then @out gets it as snprintf would (cut to
 * @len - 1 bytes and terminated; nothing written when @len is 0).
 */
int fmt_shortest(char *out, size_t len, double v)
{
	char text[40];
	int n = shortest(text, sizeof(text), v);
	size_t keep;

	if (len) {
		keep = (size_t)n < len ? (size_t)n : len - 1;
		memcpy(out, text, keep);
		out[keep] = '\0';
	}
	return n;
}
