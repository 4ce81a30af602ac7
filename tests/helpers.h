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
#include <sched.h>
#include <stdatomic.h>
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

/*
 * In a forked child, Criterion's assertions hang the test: the child
 * reports the failure to the runner, which refuses a message from a pid
 * it did not start ("Received message identified by a PID ... that is
 * not a child process"), and the child then blocks in poll() forever
 * while its parent blocks in waitpid() or spins on a flag the child
 * never sets, until ctest's timeout; the child outlives even that.  So a child never uses cr_assert, CHECK_OK,
 * open_writer() or open_reader(): it says what failed on stderr and
 * _exit()s with CHILD_FAILED, and the parent asserts the child's status
 * (wait_child_exit(), wait_child_signal()).  _exit, not exit: the atexit
 * handler of seg_name() would remove the parent's segment.
 */
#define CHILD_FAILED 120	/* no test child exits with this otherwise */

#define CHILD_FAIL_AT(file, line, fmt, ...) do {			\
	fprintf(stderr, "%s:%d: child %d: " fmt "\n", file, line,	\
		(int)getpid(), ##__VA_ARGS__);				\
	_exit(CHILD_FAILED);						\
} while (0)

#define CHILD_FAIL(fmt, ...) CHILD_FAIL_AT(__FILE__, __LINE__, fmt, ##__VA_ARGS__)

/* CHECK_OK for a forked child: @expr returns 0, a count or -errno. */
#define CHILD_CHECK_AT(file, line, expr) do {				\
	int _r = (expr);						\
	if (_r < 0)							\
		CHILD_FAIL_AT(file, line, "%s: %s (%d)", #expr,	\
			      mring_strerror(_r), _r);			\
} while (0)

#define CHILD_CHECK(expr) CHILD_CHECK_AT(__FILE__, __LINE__, expr)

/* cr_assert for a forked child. */
#define CHILD_ASSERT(cond) do {						\
	if (!(cond))							\
		CHILD_FAIL("assertion failed: %s", #cond);		\
} while (0)

/* open_writer() and open_reader() for a forked child: a failure names
 * the caller's line, not this file's. */
#define child_open_writer(name, cap, on_full)				\
	child_open_writer_at(name, cap, on_full, __FILE__, __LINE__)
#define child_open_reader(name, flags)					\
	child_open_reader_at(name, flags, __FILE__, __LINE__)

static inline struct mring_writer *child_open_writer_at(const char *name, uint64_t cap,
						      int on_full, const char *file,
						      int line)
{
	struct mring_config cfg = { .capacity = cap, .on_full = on_full };
	struct mring_writer *w = NULL;

	CHILD_CHECK_AT(file, line, mring_writer_open(name, &cfg, &w));
	return w;
}

static inline struct mring_reader *child_open_reader_at(const char *name, unsigned flags,
						      const char *file, int line)
{
	struct mring_reader *r = NULL;

	CHILD_CHECK_AT(file, line, mring_reader_open(name, flags, &r));
	return r;
}

/* A child that dies on purpose must never run on into the test's code. */
static inline _Noreturn void child_kill_self(void)
{
	raise(SIGKILL);
	CHILD_FAIL("still alive after raise(SIGKILL)");
}

/* What a wait status means, for the parent's assertion messages. */
static inline const char *child_status(int status)
{
	static char buf[128];

	if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_FAILED)
		snprintf(buf, sizeof(buf), "exited with %d: one of its checks "
			 "failed (its stderr says which)", CHILD_FAILED);
	else if (WIFEXITED(status))
		snprintf(buf, sizeof(buf), "exited with %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, sizeof(buf), "was killed by signal %d (%s)",
			 WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, sizeof(buf), "has wait status %#x", status);
	return buf;
}

static inline int wait_child(pid_t pid)
{
	int status;

	cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
	return status;
}

/* Reap @pid, which must have exited with @code; @what: what it did. */
static inline void wait_child_exit(pid_t pid, int code, const char *what)
{
	int status = wait_child(pid);

	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == code,
		  "the child that %s %s, expected exit %d", what,
		  child_status(status), code);
}

/* Reap @pid, which must have been killed by @sig (it killed itself). */
static inline void wait_child_signal(pid_t pid, int sig, const char *what)
{
	int status = wait_child(pid);

	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == sig,
		  "the child that %s %s, expected it killed by signal %d (%s)",
		  what, child_status(status), sig, strsignal(sig));
}

/*
 * Wait for a forked child to set *@flag.  A child that ends first (a
 * failed check) fails the test here, instead of leaving its parent
 * spinning until ctest's timeout.
 */
static inline void wait_child_flag(_Atomic uint64_t *flag, pid_t pid, const char *what)
{
	int status = 0;
	pid_t ret;

	while (!atomic_load(flag)) {
		ret = waitpid(pid, &status, WNOHANG);
		cr_assert_geq(ret, 0, "waitpid: %s", strerror(errno));
		cr_assert_eq(ret, 0, "the child that %s %s before it was ready",
			     what, child_status(status));
		sched_yield();
	}
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
