// SPDX-License-Identifier: MIT
/*
 * test_shortest.c - fmt_shortest() (src/tool/shortest.c) against glibc:
 * for every value tried, the bytes must be those of the first of %.15g,
 * %.16g, %.17g that glibc's strtod reads back bit-exactly, and strtod
 * must read them back as the value.  MRING_TEST_SHORTEST_N sets how many
 * values of each kind (default 200,000); tests/long.sh runs 10^6 a round,
 * each round with a new MRING_TEST_SEED.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "helpers.h"
#include "util.h"

/*
 * The contract, spelled with glibc's printf and strtod: the choice is
 * made on the whole text, then @out gets it as from snprintf.
 */
static int oracle(char *out, size_t len, double v)
{
	char text[64];

	for (int prec = 15; prec <= 17; prec++) {
		double back;

		snprintf(text, sizeof(text), "%.*g", prec, v);
		back = strtod(text, NULL);

		if (prec == 17 || !memcmp(&back, &v, sizeof(v)))
			return snprintf(out, len, "%s", text);
	}
	return -1;
}

static uint64_t count_per_kind(void)
{
	const char *env = getenv("MRING_TEST_SHORTEST_N");

	return env && *env ? strtoull(env, NULL, 0) : 200000;
}

static uint64_t checked;

static void check(double v)
{
	char got[64], want[64];
	int n, wn;
	double back;

	if (!isfinite(v))
		return;
	n = fmt_shortest(got, sizeof(got), v);
	wn = oracle(want, sizeof(want), v);
	cr_assert_eq(n, wn, "%a: length %d, want %d (%s vs %s)", v, n, wn, got, want);
	cr_assert_str_eq(got, want, "%a", v);
	back = strtod(got, NULL);
	cr_assert(!memcmp(&back, &v, sizeof(v)), "%a: %s reads back as %a", v, got, back);
	checked++;
}

/* Each value, its neighbours, and its negation. */
static void check_around(double v)
{
	check(v);
	check(-v);
	check(nextafter(v, INFINITY));
	check(nextafter(v, -INFINITY));
}

Test(shortest, edges_of_the_exact_range_and_of_its_scales)
{
	/* the exact path covers 2^-19 <= |v| < 2^52 */
	static const double edges[] = {
		0x1p-21, 0x1p-20, 0x1p-19, 1e-6, 1e-7, 9.5367431640625e-7,
		0x1p52, 0x1p53, 0x1p54, 9007199254740991.0, 9007199254740993.0,
		1e15, 1e16, 1e17, 999999999999999.9, 99999999999999.99,
		0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 0.30000000000000004, 1.0, 2.0,
		1e-5, 1e-4, 1e-3, 1.5e-5, 0.0001, 0.00009999999999999999,
		DBL_MIN, DBL_MAX, DBL_TRUE_MIN, DBL_EPSILON, M_PI, M_E,
		0.6931471805599453, 2.302585092994046, 123456789012345.67,
	};

	check(0.0);
	check(-0.0);
	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
		check_around(edges[i]);
	for (int e = -1074; e <= 1023; e++)
		check_around(ldexp(1.0, e));
	for (int k = -30; k <= 30; k++) {
		check_around(pow(10.0, k));
		check_around(5.0 * pow(10.0, k));
		check_around(9.999999999999999 * pow(10.0, k));
	}
	cr_log_info("%llu values", (unsigned long long)checked);
}

Test(shortest, random_bit_patterns)
{
	uint64_t n = count_per_kind();

	for (uint64_t i = 0; i < n; i++) {
		uint64_t bits = test_rnd();
		double v;

		memcpy(&v, &bits, sizeof(v));
		check(v);
	}
	cr_log_info("%llu values", (unsigned long long)checked);
}

/* Uniform in log scale over 1e-8 .. 1e17: all of the exact range. */
Test(shortest, random_magnitudes_across_the_exact_range)
{
	uint64_t n = count_per_kind();

	for (uint64_t i = 0; i < n; i++) {
		double u = (double)(test_rnd() >> 11) / 0x1p53;

		check(pow(10.0, -8.0 + 25.0 * u));
	}
	cr_log_info("%llu values", (unsigned long long)checked);
}

/*
 * Decimals of 1 to 17 digits as strtod reads them: the shortest text is
 * often the one typed, and 16-17 digit ones end in ...5 near ties.
 */
Test(shortest, short_and_tie_decimals)
{
	uint64_t n = count_per_kind();
	char text[64];

	for (uint64_t i = 0; i < n; i++) {
		int digits = 1 + (int)(test_rnd() % 17);
		int exp10 = (int)(test_rnd() % 30) - 12;
		uint64_t mant = test_rnd() % (uint64_t)pow(10.0, digits);

		if (i & 1)	/* a 5 last: a tie at one digit fewer */
			mant = mant / 10 * 10 + 5;
		snprintf(text, sizeof(text), "%llue%d", (unsigned long long)mant, exp10);
		check_around(strtod(text, NULL));
	}
	cr_log_info("%llu values", (unsigned long long)checked);
}

/* Integers, and integers plus simple fractions, as counters and steps are. */
Test(shortest, integers_and_halves)
{
	uint64_t n = count_per_kind();

	for (uint64_t i = 0; i < n; i++) {
		uint64_t k = test_rnd() >> (11 + test_rnd() % 53);

		check((double)k);
		check((double)k + 0.5);
		check((double)k + 0.25);
		check((double)k / 1000.0);
	}
	cr_log_info("%llu values", (unsigned long long)checked);
}

/* Every length from 0 up: snprintf's truncation, never a byte past @len. */
Test(shortest, short_buffers_get_snprintfs_truncation)
{
	static const double values[] = { 0.6931471805599453, 1e23, 1e-5, 0.1, -2.5,
					 123456.789, 0x1p52, 1e-300 };

	cr_assert_eq(fmt_shortest(NULL, 0, 0.1), 3);
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		for (size_t len = 0; len <= 40; len++) {
			char got[48], want[48];
			int n;

			memset(got, 'x', sizeof(got));
			memset(want, 'x', sizeof(want));
			n = fmt_shortest(got, len, values[i]);
			cr_assert_eq(n, oracle(want, len, values[i]), "%a len %zu", values[i], len);
			cr_assert(!memcmp(got, want, sizeof(got)), "%a len %zu: %.48s vs %.48s",
				  values[i], len, got, want);
		}
	}
}
