// SPDX-License-Identifier: MIT
/*
 * test_watch_act.c - what an alert of `mring watch` does, unit by unit:
 * the identity checks before --signal (a recycled pid is never hit), the
 * signal names, and the alert line's quoting.  The processes and the
 * whole watcher are tests/e2e_watch.py's job.
 *
 * The implementation is included directly: no header or build change.
 */
#include "../src/tool/watch_act.c"

#include <criterion/criterion.h>
#include <sys/wait.h>

static int64_t now_boot_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static char seg_path[128];
static struct mring_writer *seg_w;

static void seg_cleanup(void)
{
	mring_writer_close(seg_w);
	unlink(seg_path);
}

/* A live segment of ours, and the alert that names it. */
static void our_segment(struct alert *a)
{
	struct mring_reader *r;
	struct mring_status st;
	struct stat sb;

	snprintf(seg_path, sizeof(seg_path), "/dev/shm/test_watch_act.%d", getpid());
	cr_assert_eq(mring_writer_open(seg_path, NULL, &seg_w), 0);
	atexit(seg_cleanup);
	cr_assert_eq(mring_reader_open(seg_path, MRING_OBSERVE, &r), 0);
	cr_assert_eq(mring_status_read(r, &st), 0);
	cr_assert_eq(stat(seg_path, &sb), 0);
	memset(a, 0, sizeof(*a));
	a->segment = seg_path;
	a->pid = st.pid;
	a->alive = st.alive;
	a->dev = sb.st_dev;
	a->ino = sb.st_ino;
	a->created_ns = st.created_ns;
	a->pid_start = __mring_producer_start(r);
	mring_reader_close(r);
	cr_assert_eq(a->pid, getpid());
	cr_assert(a->alive);
}

Test(identity, the_start_time_is_field_22_of_proc_stat)
{
	uint64_t ticks = __mring_proc_start(getpid());
	int64_t start = (int64_t)(ticks * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK)));
	int64_t boot = now_boot_ns();
	uid_t uid = (uid_t)-1;
	struct alert a;

	/* Criterion forks each test: this process started moments ago */
	cr_assert(start <= boot && start > boot - 30 * INT64_C(1000000000),
		  "start %lld ns since boot, now %lld", (long long)start, (long long)boot);
	cr_assert_eq(proc_uid(getpid(), &uid), 0);
	cr_assert_eq(uid, getuid());
	our_segment(&a);
	cr_assert_eq(a.pid_start, ticks, "the creator recorded %llu, /proc says %llu",
		     (unsigned long long)a.pid_start, (unsigned long long)ticks);
}

Test(identity, the_producer_itself_passes)
{
	struct alert a;

	our_segment(&a);
	cr_assert_null(not_the_producer(a.pid, &a), "%s", not_the_producer(a.pid, &a));
}

Test(identity, a_process_of_another_start_time_is_refused)
{
	struct alert a;
	const char *why;

	our_segment(&a);
	/* the creator was another process that had this pid */
	a.pid_start -= 1;
	why = not_the_producer(a.pid, &a);
	cr_assert(why && strstr(why, "recycled pid"), "%s", why ? why : "(accepted)");
	/* no start time recorded: a process younger than the segment */
	a.pid_start = 0;
	cr_assert_null(not_the_producer(a.pid, &a));
	a.created_ns -= 3600 * INT64_C(1000000000);
	why = not_the_producer(a.pid, &a);
	cr_assert(why && strstr(why, "recycled pid"), "%s", why ? why : "(accepted)");
}

Test(identity, a_process_without_the_segment_open_is_refused)
{
	struct alert a;
	const char *why;
	pid_t child;
	int status;

	our_segment(&a);
	child = fork();
	if (child == 0) {
		/* the same user, old enough, but without the segment open */
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		pause();
		_exit(0);
	}
	cr_assert_gt(child, 0);
	a.pid_start = 0;	/* the start check passes: no start time recorded, */
	a.created_ns += 3600 * INT64_C(1000000000);	/* a segment "younger" than it */
	/* the child's fds are closed once /proc says so; retry a bounded while */
	for (int i = 0; i < 1000; i++) {
		why = not_the_producer(child, &a);
		if (why && strstr(why, "does not have the segment open"))
			break;
		usleep(1000);
	}
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	cr_assert(why && strstr(why, "does not have the segment open"), "%s",
		  why ? why : "(accepted)");
}

Test(identity, a_gone_producer_and_a_missing_pid_are_refused)
{
	struct alert a = { .alive = false, .pid = getpid() };

	cr_assert_str_eq(not_the_producer(a.pid, &a), "the producer is gone");
	a.alive = true;
	a.pid = 0;
	cr_assert_str_eq(not_the_producer(a.pid, &a), "the segment names no pid");
	a.pid = INT32_MAX;	/* above any pid_max */
	cr_assert_str_eq(not_the_producer(a.pid, &a), "no such process");
}

Test(signals, names_and_numbers)
{
	cr_assert_eq(parse_signal("USR1"), SIGUSR1);
	cr_assert_eq(parse_signal("SIGUSR1"), SIGUSR1);
	cr_assert_eq(parse_signal("usr2"), SIGUSR2);
	cr_assert_eq(parse_signal("15"), SIGTERM);
	cr_assert_eq(parse_signal(""), -EINVAL);
	cr_assert_eq(parse_signal("0"), -EINVAL);
	cr_assert_eq(parse_signal("SIG"), -EINVAL);
	cr_assert_eq(parse_signal("USR1x"), -EINVAL);
	cr_assert_eq(parse_signal("65"), -EINVAL);
}

Test(line, fields_are_quoted_when_grep_or_awk_would_split_them)
{
	struct alert a = {
		.event = "alert", .rule = "nan", .segment = "/dev/shm/a b", .run = "r=1",
		.rank = 3, .pid = 42, .metric = "lo\"ss\\\n", .step = 1234, .value = NAN,
	};
	struct buf b = { 0 };

	snprintf(a.detail, sizeof(a.detail), "caf\xc3\xa9");
	line_text(&b, &a, "T");
	buf_putc(&b, '\0');
	cr_assert_str_eq(b.p, "alert rule=nan segment=\"/dev/shm/a b\" run=\"r=1\" rank=3 "
			 "pid=42 metric=\"lo\\\"ss\\\\\\x0a\" step=1234 value=nan time=T "
			 "detail=\"caf\\xc3\\xa9\"\n");
	buf_free(&b);
	a.metric = NULL;
	a.value = 0.1;
	a.detail[0] = '\0';
	line_text(&b, &a, "T");
	buf_putc(&b, '\0');
	cr_assert_str_eq(b.p, "alert rule=nan segment=\"/dev/shm/a b\" run=\"r=1\" rank=3 "
			 "pid=42 metric=- step=1234 value=0.1 time=T detail=\"\"\n");
	buf_free(&b);
}

Test(line, json_has_numbers_null_and_strings_for_non_finite_values)
{
	struct alert a = {
		.event = "clear", .rule = "stall", .segment = "/s", .run = "r", .rank = -1,
		.pid = 7, .metric = NULL, .step = 5, .value = -INFINITY,
	};
	struct buf b = { 0 };

	json_text(&b, &a, "T");
	buf_putc(&b, '\0');
	cr_assert_str_eq(b.p, "{\"event\":\"clear\",\"rule\":\"stall\",\"segment\":\"/s\","
			 "\"run\":\"r\",\"rank\":-1,\"pid\":7,\"metric\":null,\"step\":5,"
			 "\"value\":\"-inf\",\"time\":\"T\",\"detail\":\"\"}\n");
	buf_free(&b);
}
