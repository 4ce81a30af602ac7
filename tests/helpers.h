/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - shared by the Criterion tests: unique segment names (each
 * test runs in its own forked process), cleanup, and small readers.
 */
#ifndef MRING_TEST_HELPERS_H
#define MRING_TEST_HELPERS_H

#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mring.h>

/* A name unique to this test process; the file is removed at exit. */
static char seg_path[256];

static void seg_cleanup(void)
{
	if (seg_path[0])
		unlink(seg_path);
}

static inline const char *seg_name(const char *tag)
{
	static char name[128];
	const char *dir = getenv("MRING_DIR");

	snprintf(name, sizeof(name), "mring-test-%s-%d", tag, (int)getpid());
	snprintf(seg_path, sizeof(seg_path), "%s/%s", dir && *dir ? dir : "/dev/shm", name);
	unlink(seg_path);
	atexit(seg_cleanup);
	return name;
}

#define CHECK_OK(expr) do {						\
	int _r = (expr);						\
	cr_assert(_r >= 0, "%s: %s (%d)", #expr, mring_strerror(_r), _r); \
} while (0)

static inline struct mring_writer *open_writer(const char *name, uint64_t cap,
					       int on_full)
{
	struct mring_config cfg = { .capacity = cap, .on_full = on_full };
	struct mring_writer *w = NULL;

	CHECK_OK(mring_writer_open(name, &cfg, &w));
	return w;
}

static inline struct mring_reader *open_reader(const char *name, unsigned flags)
{
	struct mring_reader *r = NULL;

	CHECK_OK(mring_reader_open(name, flags, &r));
	return r;
}

/* Read everything ready now into @ev (at most @max). */
static inline int read_all(struct mring_reader *r, struct mring_event *ev, int max)
{
	int n = 0, k = 0;

	while (n < max && (k = mring_read(r, ev + n, max - n)) > 0)
		n += k;
	cr_assert(k >= 0 || n == max, "mring_read: %s", mring_strerror(k));
	return n;
}

/* Memory a test shares with the processes it forks (zeroed). */
static inline void *test_shared_page(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	return p;
}

/*
 * fork() for a child that runs until the test stops or kills it.  The
 * child dies with the test: a failed assertion ends the test's process at
 * once, and must not leave a producer spinning on a CPU for the tests
 * after it.
 */
static inline pid_t test_fork(void)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)	/* the test died before prctl */
			_exit(1);
	}
	return pid;
}

/*
 * xorshift64 for the randomized tests; MRING_TEST_SEED picks another
 * sequence (tests/long.sh sets a new one every round).  A forked child
 * may stir test_seed to draw its own.
 */
static uint64_t test_seed;

static inline uint64_t test_rnd(void)
{
	if (!test_seed) {
		const char *env = getenv("MRING_TEST_SEED");

		test_seed = env && *env ? strtoull(env, NULL, 0) : 0;
		test_seed = test_seed ? test_seed : 88172645463325252ull;
	}
	test_seed ^= test_seed << 13;
	test_seed ^= test_seed >> 7;
	test_seed ^= test_seed << 17;
	return test_seed;
}

static inline void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
