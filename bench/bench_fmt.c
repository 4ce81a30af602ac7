// SPDX-License-Identifier: MIT
/*
 * bench_fmt.c - what the sinks pay to write one value as text:
 * fmt_shortest() (src/tool/shortest.c) against the printf + strtod loop
 * it replaces, on the same values in the same run.
 *
 * Usage: bench_fmt [--rows] [N]   (N values per kind, default 2,000,000)
 * --rows prints ROW lines for bench/run.sh's table.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* The formatter before shortest.c: printf, then strtod to check. */
static int printf_strtod(char *out, size_t len, double v)
{
	for (int prec = 15; prec <= 17; prec++) {
		int n = snprintf(out, len, "%.*g", prec, v);
		double back = strtod(out, NULL);

		if (prec == 17 || !memcmp(&back, &v, sizeof(v)))
			return n;
	}
	return -1;
}

static double time_it(int (*fn)(char *, size_t, double), const double *v, size_t n)
{
	char buf[40];
	unsigned sink = 0;
	double t0 = now_ns();

	for (size_t i = 0; i < n; i++)
		sink += (unsigned)fn(buf, sizeof(buf), v[i]);
	if (sink == 1)
		puts("");
	return (now_ns() - t0) / (double)n;
}

static void fill(double *v, size_t n, int kind)
{
	uint64_t x = 88172645463325252ull;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		switch (kind) {
		case 0:		/* a loss: 17 significant digits */
			v[i] = (double)(x >> 11) / 0x1p53 * 3.0;
			break;
		case 1:		/* an accuracy of a batch of 1000: short */
			v[i] = (double)(x % 1001) / 1000.0;
			break;
		default:	/* a counter */
			v[i] = (double)(x % 100000000);
		}
	}
}

int main(int argc, char **argv)
{
	static const char *const kinds[] = { "loss-like (17 digits)",
					     "accuracy-like (short)", "counter (integer)" };
	int rows = argc > 1 && !strcmp(argv[1], "--rows");
	size_t n = argc > 1 + rows ? strtoull(argv[1 + rows], NULL, 10) : 2000000;
	double *v = malloc(n * sizeof(*v));

	if (!v || !n)
		return 1;
	if (!rows)
		printf("%-24s %14s %14s %7s\n", "values", "fmt_shortest", "printf+strtod", "ratio");
	for (int k = 0; k < 3; k++) {
		double fast, libc;

		fill(v, n, k);
		time_it(fmt_shortest, v, n / 10);	/* warm up */
		fast = time_it(fmt_shortest, v, n);
		libc = time_it(printf_strtod, v, n);
		if (rows)
			printf("ROW\t3.09%c\tsink number text, %s\t%.1f\t%.1f\t%.1f\tns\t%.1fx\t-\t-\t"
			       "printf+strtod %.0f ns, same values, same run\n",
			       'a' + k, kinds[k], fast, fast, fast, libc / fast, libc);
		else
			printf("%-24s %11.1f ns %11.1f ns %6.1fx\n", kinds[k], fast, libc, libc / fast);
	}
	free(v);
	return 0;
}
