// SPDX-License-Identifier: MIT
/*
 * watch_act.c - what an alert of `mring watch` does: the line (or JSON
 * object) on stdout, and the actions --exec, --signal and --dump.
 *
 * Children (--exec commands, --dump exports) are started without waiting
 * and reaped at every poll (act_tick()), so a slow command never holds
 * up the watching.  Bounds: one --exec run per rule and segment at a
 * time, a token bucket on how many start per minute, a timeout after
 * which a run's process group is killed; one dump per segment at a time.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "text.h"
#include "util.h"
#include "watch.h"

enum job_kind { JOB_EXEC, JOB_DUMP };

struct job {
	enum job_kind kind;
	pid_t pid;		/* 0: not running (an --exec alert waiting) */
	double start;
	char *key;		/* EXEC: "rule segment"; DUMP: the segment */
	char *tmp, *final;	/* DUMP: the file being written, its name when done */
	struct alert *waiting;	/* EXEC: the latest alert that came while it ran */
	char *wmetric, *wrun;	/* ... and its strings */
};

static struct {
	struct job *jobs;
	int njobs;
	double tokens, refilled;
	uint64_t not_run;	/* --exec alerts over the limit, not yet reported */
	double not_run_said;
	bool fired;
	char self[PATH_MAX];	/* this program, for --dump's `mring drain` */
} act;

bool act_fired(void)
{
	return act.fired;
}

int act_init(const struct watch_opts *o)
{
	ssize_t n;

	act.tokens = o->exec_limit;
	act.refilled = now_mono();
	if (!o->dump_dir)
		return 0;
	n = readlink("/proc/self/exe", act.self, sizeof(act.self) - 1);
	if (n <= 0) {
		fprintf(stderr, "mring watch: --dump: cannot find this program (/proc/self/exe): "
			"%s\n", strerror(errno));
		return -EINVAL;
	}
	act.self[n] = '\0';
	if (mkdir(o->dump_dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "mring watch: --dump %s: %s\n", o->dump_dir, strerror(errno));
		return -errno;
	}
	return 0;
}

/* ---- the line ------------------------------------------------------------ */

static void value_text(char *buf, size_t len, double v)
{
	if (isnan(v))
		snprintf(buf, len, "nan");
	else if (isinf(v))
		snprintf(buf, len, v > 0 ? "inf" : "-inf");
	else
		fmt_shortest(buf, len, v);
}

/* logfmt: bare when safe for grep and awk, else quoted with escapes */
static void put_field(struct buf *b, const char *key, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;
	bool quote = !*p;

	for (; *p && !quote; p++)
		quote = *p <= ' ' || *p >= 0x7f || *p == '"' || *p == '=' || *p == '\\';
	buf_fmt(b, " %s=", key);
	if (!quote) {
		buf_puts(b, v);
		return;
	}
	buf_putc(b, '"');
	for (p = (const unsigned char *)v; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_fmt(b, "\\%c", *p);
		else if (*p < ' ' || *p >= 0x7f)
			buf_fmt(b, "\\x%02x", *p);
		else
			buf_putc(b, (char)*p);
	}
	buf_putc(b, '"');
}

static void time_text(char *buf, size_t len, int64_t ns)
{
	time_t sec = (time_t)(ns / 1000000000);
	char ymdhms[32];
	struct tm tm;

	gmtime_r(&sec, &tm);
	strftime(ymdhms, sizeof(ymdhms), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", ymdhms, (int)(ns / 1000000 % 1000));
}

static void line_text(struct buf *b, const struct alert *a, const char *when)
{
	char num[40], val[40];

	buf_puts(b, a->event);
	put_field(b, "rule", a->rule);
	put_field(b, "segment", a->segment);
	put_field(b, "run", a->run);
	buf_fmt(b, " rank=%d pid=%d", a->rank, a->pid);
	put_field(b, "metric", a->metric ? a->metric : "-");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)a->step);
	buf_fmt(b, " step=%s", num);
	value_text(val, sizeof(val), a->value);
	buf_fmt(b, " value=%s", val);
	buf_fmt(b, " time=%s", when);
	put_field(b, "detail", a->detail);
	buf_putc(b, '\n');
}

static void json_text(struct buf *b, const struct alert *a, const char *when)
{
	char val[40];

	buf_puts(b, "{\"event\":");
	buf_json_str(b, a->event);
	buf_puts(b, ",\"rule\":");
	buf_json_str(b, a->rule);
	buf_puts(b, ",\"segment\":");
	buf_json_str(b, a->segment);
	buf_puts(b, ",\"run\":");
	buf_json_str(b, a->run);
	buf_fmt(b, ",\"rank\":%d,\"pid\":%d,\"metric\":", a->rank, a->pid);
	if (a->metric)
		buf_json_str(b, a->metric);
	else
		buf_puts(b, "null");
	buf_fmt(b, ",\"step\":%llu,\"value\":", (unsigned long long)a->step);
	value_text(val, sizeof(val), a->value);
	if (isfinite(a->value))
		buf_puts(b, val);
	else
		buf_fmt(b, "\"%s\"", val);
	buf_fmt(b, ",\"time\":\"%s\",\"detail\":", when);
	buf_json_str(b, a->detail);
	buf_puts(b, "}\n");
}

static void print_alert(const struct watch_opts *o, const struct alert *a)
{
	struct buf b = { 0 };
	char when[40];

	time_text(when, sizeof(when), now_real_ns());
	if (o->json)
		json_text(&b, a, when);
	else
		line_text(&b, a, when);
	if (!b.oom) {
		fwrite(b.p, 1, b.len, stdout);
		fflush(stdout);
	}
	buf_free(&b);
}

/* ---- children ------------------------------------------------------------ */

static struct job *job_new(enum job_kind kind, const char *key)
{
	struct job *p = realloc(act.jobs, (size_t)(act.njobs + 1) * sizeof(*p));

	if (!p)
		return NULL;
	act.jobs = p;
	p = &act.jobs[act.njobs];
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->key = strdup(key);
	if (!p->key)
		return NULL;
	act.njobs++;
	return p;
}

static void job_drop(int i)
{
	struct job *j = &act.jobs[i];

	free(j->key);
	free(j->tmp);
	free(j->final);
	free(j->waiting);
	free(j->wmetric);
	free(j->wrun);
	memmove(j, j + 1, (size_t)(act.njobs - i - 1) * sizeof(*j));
	act.njobs--;
}

static struct job *job_find(enum job_kind kind, const char *key)
{
	for (int i = 0; i < act.njobs; i++)
		if (act.jobs[i].kind == kind && !strcmp(act.jobs[i].key, key))
			return &act.jobs[i];
	return NULL;
}

/* In the child: stdin from /dev/null, stdout to our stderr, own group. */
static void child_setup(void)
{
	int fd = open("/dev/null", O_RDONLY);

	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		if (fd != STDIN_FILENO)
			close(fd);
	}
	dup2(STDERR_FILENO, STDOUT_FILENO);
	setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
}

/* ---- --exec -------------------------------------------------------------- */

static void refill(const struct watch_opts *o)
{
	double now = now_mono();

	act.tokens += (now - act.refilled) * o->exec_limit / 60.0;
	if (act.tokens > o->exec_limit)
		act.tokens = o->exec_limit;
	act.refilled = now;
}

static void exec_env(const struct alert *a)
{
	char num[40], when[40];

	setenv("MRING_ALERT_RULE", a->rule, 1);
	setenv("MRING_ALERT_SEGMENT", a->segment, 1);
	setenv("MRING_ALERT_RUN", a->run, 1);
	snprintf(num, sizeof(num), "%d", a->rank);
	setenv("MRING_ALERT_RANK", num, 1);
	snprintf(num, sizeof(num), "%d", a->pid);
	setenv("MRING_ALERT_PID", num, 1);
	setenv("MRING_ALERT_METRIC", a->metric ? a->metric : "", 1);
	snprintf(num, sizeof(num), "%llu", (unsigned long long)a->step);
	setenv("MRING_ALERT_STEP", num, 1);
	value_text(num, sizeof(num), a->value);
	setenv("MRING_ALERT_VALUE", num, 1);
	time_text(when, sizeof(when), now_real_ns());
	setenv("MRING_ALERT_TIME", when, 1);
	setenv("MRING_ALERT_DETAIL", a->detail, 1);
}

static void exec_start(const struct watch_opts *o, struct job *j, const struct alert *a)
{
	pid_t pid = fork();

	if (pid < 0) {
		fprintf(stderr, "mring watch: --exec: fork: %s\n", strerror(errno));
		return;
	}
	if (pid == 0) {
		child_setup();
		exec_env(a);
		execl("/bin/sh", "sh", "-c", o->exec, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);	/* also here: no race with a kill before the child's */
	act.tokens -= 1;
	j->pid = pid;
	j->start = now_mono();
}

static void exec_alert(const struct watch_opts *o, const struct alert *a)
{
	char key[PATH_MAX + 16];
	struct job *j;

	snprintf(key, sizeof(key), "%s %s", a->rule, a->segment);
	j = job_find(JOB_EXEC, key);
	if (j) {
		/* one at a time per rule and segment: keep the latest */
		if (j->waiting)
			act.not_run++;
		else
			j->waiting = malloc(sizeof(*j->waiting));
		if (j->waiting) {
			/* the strings do not outlive the call: keep copies */
			free(j->wmetric);
			free(j->wrun);
			*j->waiting = *a;
			j->wmetric = a->metric ? strdup(a->metric) : NULL;
			j->wrun = strdup(a->run);
			j->waiting->metric = j->wmetric;
			j->waiting->run = j->wrun ? j->wrun : "";
			j->waiting->segment = j->key + strlen(a->rule) + 1;
		}
		return;
	}
	refill(o);
	if (act.tokens < 1) {
		act.not_run++;
		return;
	}
	j = job_new(JOB_EXEC, key);
	if (j)
		exec_start(o, j, a);
	if (j && !j->pid)
		job_drop(act.njobs - 1);	/* fork failed: said why */
}

/* ---- --signal ------------------------------------------------------------ */

int parse_signal(const char *s)
{
	static const struct { const char *name; int sig; } sigs[] = {
		{ "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "ABRT", SIGABRT },
		{ "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 },
		{ "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "CONT", SIGCONT },
		{ "STOP", SIGSTOP }, { "TSTP", SIGTSTP }, { "WINCH", SIGWINCH },
	};
	char *end;
	long n;

	if (!strncmp(s, "SIG", 3))
		s += 3;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (!strcasecmp(s, sigs[i].name))
			return sigs[i].sig;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno || end == s || *end || n < 1 || n > SIGRTMAX)
		return -EINVAL;
	return (int)n;
}

/* /proc/@pid/@name into @buf, NUL-terminated: 0, or -errno. */
static int read_proc(pid_t pid, const char *name, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	return 0;
}

/* The real uid of process @pid: 0, or -errno. */
static int proc_uid(pid_t pid, uid_t *uid)
{
	char buf[4096], *p;

	if (read_proc(pid, "status", buf, sizeof(buf)) < 0)
		return -ESRCH;
	p = strstr(buf, "\nUid:");
	if (!p || sscanf(p + 5, "%u", uid) != 1)
		return -EPROTO;
	return 0;
}

/* Whether process @pid has the file @dev/@ino open. */
static bool proc_has_open(pid_t pid, dev_t dev, ino_t ino)
{
	char path[64], fdpath[384];
	struct dirent *e;
	struct stat sb;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(fdpath, sizeof(fdpath), "%s/%s", path, e->d_name);
		found = stat(fdpath, &sb) == 0 && sb.st_dev == dev && sb.st_ino == ino;
	}
	closedir(d);
	return found;
}

/* CLOCK_REALTIME ns @real as ns since boot (CLOCK_BOOTTIME), as of now. */
static int64_t real_to_boot(int64_t real)
{
	struct timespec b;

	clock_gettime(CLOCK_BOOTTIME, &b);
	return real - (now_real_ns() - ((int64_t)b.tv_sec * 1000000000 + b.tv_nsec));
}

/*
 * Why process @pid is not the producer of @a's segment, or NULL when it
 * is.  The creator recorded its start time (clock ticks since boot): a
 * process with that pid and another start time is a recycled pid.  A
 * segment without it (0) gets a bound instead: started no later than the
 * segment was created, with 10 s of slack for NTP moving the wall clock
 * against the boot clock over a long run.  The open-file check backs up
 * both (a recycled pid has not opened the segment).
 */
static const char *not_the_producer(pid_t pid, const struct alert *a)
{
	uint64_t ticks;
	uid_t uid;

	if (!a->alive)
		return "the producer is gone";
	if (pid <= 0)
		return "the segment names no pid";
	if (proc_uid(pid, &uid) < 0 || !(ticks = __mring_proc_start(pid)))
		return "no such process";
	if (uid != getuid())
		return "the process belongs to another user";
	if (a->pid_start ? ticks != a->pid_start :
	    (int64_t)(ticks * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK))) >
	    real_to_boot(a->created_ns) + 10 * INT64_C(1000000000))
		return "the process started at another time than the producer (a "
		       "recycled pid)";
	if (!proc_has_open(pid, a->dev, a->ino))
		return "the process does not have the segment open (a recycled pid, or "
		       "another pid namespace)";
	return NULL;
}

static void signal_alert(const struct watch_opts *o, const struct alert *a)
{
	pid_t pid = a->pid;
	const char *why;
	int pidfd, ret;

	/*
	 * A pidfd pins the process: checked, then signalled through the
	 * same handle, it cannot be swapped for a recycled pid in between.
	 */
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	why = pidfd < 0 && a->alive && pid > 0 && errno != ENOSYS ? "no such process" :
	      not_the_producer(pid, a);
	if (!why) {
		ret = pidfd >= 0 ? (int)syscall(SYS_pidfd_send_signal, pidfd, o->sig, NULL, 0) :
		      kill(pid, o->sig);
		if (ret == 0)
			fprintf(stderr, "mring watch: %s: sent signal %d to producer %d\n",
				a->segment, o->sig, pid);
		else
			fprintf(stderr, "mring watch: %s: signal %d to producer %d: %s\n",
				a->segment, o->sig, pid, strerror(errno));
	} else {
		fprintf(stderr, "mring watch: %s: not signalling pid %d: %s\n", a->segment, pid,
			why);
	}
	if (pidfd >= 0)
		close(pidfd);
}

/* ---- --dump --------------------------------------------------------------- */

/* @path with glob(3)'s special characters escaped: `mring drain` expands globs. */
static char *glob_quote(const char *path)
{
	char *q = malloc(2 * strlen(path) + 1), *p = q;

	for (; q && *path; path++) {
		if (strchr("*?[\\", *path))
			*p++ = '\\';
		*p++ = *path;
	}
	if (q)
		*p = '\0';
	return q;
}

static void dump_alert(const struct watch_opts *o, const struct alert *a)
{
	char stamp[32], steps[32];
	time_t sec = (time_t)(now_real_ns() / 1000000000);
	struct job *j;
	struct tm tm;
	pid_t pid;

	if (job_find(JOB_DUMP, a->segment)) {
		fprintf(stderr, "mring watch: %s: a dump of this segment is being written; "
			"none for this %s alert\n", a->segment, a->rule);
		return;
	}
	j = job_new(JOB_DUMP, a->segment);
	if (!j)
		return;
	gmtime_r(&sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (asprintf(&j->final, "%s/%s.%s.%llu.%s.jsonl", o->dump_dir, a->base, a->rule,
		     (unsigned long long)a->step, stamp) < 0 ||
	    asprintf(&j->tmp, "%s/.%s.%s.%llu.%s.%d.tmp", o->dump_dir, a->base, a->rule,
		     (unsigned long long)a->step, stamp, (int)getpid()) < 0) {
		j->final = j->tmp = NULL;
		job_drop(act.njobs - 1);
		return;
	}
	snprintf(steps, sizeof(steps), "%llu", (unsigned long long)o->dump_steps);
	pid = fork();
	if (pid == 0) {
		char *seg = glob_quote(a->segment);

		child_setup();
		if (seg)
			execl(act.self, "mring", "drain", "--observe", "--last-steps", steps,
			      "--jsonl", j->tmp, seg, (char *)NULL);
		_exit(127);
	}
	if (pid < 0) {
		fprintf(stderr, "mring watch: --dump: fork: %s\n", strerror(errno));
		job_drop(act.njobs - 1);
		return;
	}
	j->pid = pid;
	j->start = now_mono();
}

/* `mring drain` exits 3 when the producer crashed: the export is whole. */
static void dump_done(struct job *j, int status)
{
	bool ok = WIFEXITED(status) && (WEXITSTATUS(status) == 0 ||
					WEXITSTATUS(status) == EXIT_CRASHED);

	if (ok && rename(j->tmp, j->final) == 0) {
		fprintf(stderr, "mring watch: %s: dump written to %s\n", j->key, j->final);
		return;
	}
	fprintf(stderr, "mring watch: %s: dump to %s failed (%s)\n", j->key, j->final,
		ok ? strerror(errno) : "mring drain said why above");
	unlink(j->tmp);
}

/* ---- the alert ------------------------------------------------------------ */

void act_alert(const struct watch_opts *o, const struct alert *a)
{
	bool alert = !strcmp(a->event, "alert");

	if (o->exit_first && act.fired)
		return;		/* the watcher is ending at the first alert */
	print_alert(o, a);
	if (!alert)
		return;
	act.fired = true;
	if (o->exec)
		exec_alert(o, a);
	if (o->sig)
		signal_alert(o, a);
	if (o->dump_dir)
		dump_alert(o, a);
}

static void job_ended(const struct watch_opts *o, int i, int status)
{
	struct job *j = &act.jobs[i];

	if (j->kind == JOB_DUMP) {
		dump_done(j, status);
		job_drop(i);
		return;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "mring watch: --exec for %s: %s %d\n", j->key,
			WIFEXITED(status) ? "exited with status" : "killed by signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	j->pid = 0;
	if (j->waiting) {
		refill(o);
		if (act.tokens >= 1) {
			struct alert *a = j->waiting;

			j->waiting = NULL;
			exec_start(o, j, a);
			free(a);
			if (j->pid)
				return;
		}
		act.not_run++;
	}
	job_drop(i);
}

void act_tick(const struct watch_opts *o)
{
	double now = now_mono();
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		for (int i = 0; i < act.njobs; i++)
			if (act.jobs[i].pid == pid) {
				job_ended(o, i, status);
				break;
			}
	for (int i = 0; i < act.njobs; i++) {
		struct job *j = &act.jobs[i];

		if (j->kind == JOB_EXEC && j->pid > 0 && now - j->start > o->exec_timeout_s) {
			fprintf(stderr, "mring watch: --exec for %s: still running after %g s; "
				"killed\n", j->key, o->exec_timeout_s);
			kill(-j->pid, SIGKILL);
			j->start = now + 1e9;	/* once */
		}
	}
	if (act.not_run && now - act.not_run_said >= 10) {
		fprintf(stderr, "mring watch: --exec: %llu alert(s) not run (at most %g per "
			"minute, one at a time per rule and segment)\n",
			(unsigned long long)act.not_run, o->exec_limit);
		act.not_run = 0;
		act.not_run_said = now;
	}
}

void act_finish(const struct watch_opts *o, double wait_s)
{
	double deadline = now_mono() + wait_s;

	while (act.njobs && now_mono() < deadline) {
		act_tick(o);
		if (act.njobs)
			usleep(10000);
	}
	for (int i = 0; i < act.njobs; i++) {
		struct job *j = &act.jobs[i];

		if (j->pid <= 0)
			continue;
		kill(j->kind == JOB_EXEC ? -j->pid : j->pid, SIGKILL);
		waitpid(j->pid, NULL, 0);
		if (j->kind == JOB_DUMP)
			unlink(j->tmp);		/* an incomplete export */
	}
	while (act.njobs)
		job_drop(act.njobs - 1);
	free(act.jobs);
	act.jobs = NULL;
	act.not_run_said = 0;
	act_tick(o);
}
