// SPDX-License-Identifier: MIT
/*
 * test_security.c - another local user can neither read nor change a
 * run's segment; observers cannot write to what they map.
 */
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>

#include "helpers.h"

/*
 * Run @fn as another user, made for the call with useradd and removed
 * after it, in a child; its exit status, or -1 when this process cannot
 * make users (not root, or no useradd).  @fn runs in the child: it must
 * not use cr_assert (helpers.h) and returns 0..99.  Plain fork(), not
 * test_fork(): setuid() clears the parent-death signal anyway, and no
 * assertion may end the test before the user is removed.
 */
#define AS_USER_FAILED 100	/* the child could not become the user */

static int as_other_user(int (*fn)(const char *), const char *name)
{
	char user[32], cmd[160];
	struct passwd *pw;
	int status = -1, wait_errno = 0;
	pid_t pid = -1, reaped = -1;
	uid_t uid;
	gid_t gid;

	if (geteuid() != 0)
		return -1;
	snprintf(user, sizeof(user), "mring-t%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "useradd --system --no-create-home "
		 "--shell /usr/sbin/nologin %s 2>/dev/null", user);
	if (system(cmd) != 0)
		return -1;
	pw = getpwnam(user);
	uid = pw ? pw->pw_uid : 0;
	gid = pw ? pw->pw_gid : 0;
	if (uid != 0) {
		pid = fork();
		if (pid == 0) {
			if (setgroups(0, NULL) || setgid(gid) || setuid(uid))
				_exit(AS_USER_FAILED);
			_exit(fn(name));
		}
		if (pid > 0)
			reaped = waitpid(pid, &status, 0);
		wait_errno = errno;
	}
	/* remove the user before any assert can end the test */
	snprintf(cmd, sizeof(cmd), "userdel %s", user);
	cr_expect_eq(system(cmd), 0, "%s", cmd);
	cr_assert_neq(uid, 0, "useradd made no usable user %s", user);
	cr_assert_gt(pid, 0, "fork: %s", strerror(wait_errno));
	cr_assert_eq(reaped, pid, "waitpid: %s", strerror(wait_errno));
	/* an exit of 100 or more is not a bit set of @fn's results */
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) < AS_USER_FAILED,
		  "the child running as %s %s (%d: it could not become the user)",
		  user, child_status(status), AS_USER_FAILED);
	return WEXITSTATUS(status);
}

/* What the other user's drain, observe and replace must return. */
static struct {
	int drain, observe, replace;
} want;

/* Run as the other user: each wrong result sets a bit (drain, observe,
 * replace).  A drainer or observer that opens is closed again. */
static int try_everything(const char *name)
{
	struct mring_config rep = { .flags = MRING_CFG_REPLACE };
	struct mring_reader *r = NULL;
	struct mring_writer *w = NULL;
	int bad = 0, ret;

	ret = mring_reader_open(name, MRING_DRAIN, &r);
	bad |= (ret != want.drain) << 0;
	if (ret == 0)
		mring_reader_close(r);
	ret = mring_reader_open(name, MRING_OBSERVE, &r);
	bad |= (ret != want.observe) << 1;
	if (ret == 0)
		mring_reader_close(r);
	ret = mring_writer_open(name, &rep, &w);
	bad |= (ret != want.replace) << 2;
	if (ret == 0)
		mring_writer_close(w);
	return bad;
}

Test(security, another_user_cannot_open_a_0600_segment)
{
	const char *name = seg_name("otheruser");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	int ret;

	want.drain = want.observe = want.replace = -EACCES;
	ret = as_other_user(try_everything, name);

	if (ret < 0)
		cr_skip_test("needs root and useradd to make another user");
	cr_expect_eq(ret, 0, "failures (bits: drain, observe, replace): %#x", ret);
	cr_expect_eq(access(seg_path, F_OK), 0, "still there");
	mring_writer_close(w);
}

Test(security, a_shared_0644_segment_can_be_watched_but_not_drained)
{
	const char *name = seg_name("shared");
	struct mring_config cfg = { .capacity = 64, .mode = 0644 };
	struct mring_writer *w;
	int ret;

	CHECK_OK(mring_writer_open(name, &cfg, &w));
	want.drain = want.replace = -EACCES;
	want.observe = 0;
	ret = as_other_user(try_everything, name);
	if (ret < 0)
		cr_skip_test("needs root and useradd to make another user");
	cr_expect_eq(ret, 0, "failures (bits: drain, observe, replace): %#x", ret);
	mring_writer_close(w);
}

/* Mode 0666 shares reading and writing, but the run stays its owner's. */
Test(security, a_0666_segment_is_drained_and_replaced_only_by_its_owner)
{
	const char *name = seg_name("world");
	struct mring_config cfg = { .capacity = 64, .mode = 0666 };
	struct mring_reader *r;
	struct mring_writer *w;
	struct stat st;
	int ret;

	CHECK_OK(mring_writer_open(name, &cfg, &w));
	mring_step(w, 7);
	CHECK_OK(mring_writer_close(w));	/* gone: REPLACE would apply */
	cr_assert_eq(stat(seg_path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0666);
	want.drain = want.replace = -EACCES;
	want.observe = 0;
	ret = as_other_user(try_everything, name);
	if (ret < 0)
		cr_skip_test("needs root and useradd to make another user");
	cr_expect_eq(ret, 0, "failures (bits: drain, observe, replace): %#x", ret);
	/* the owner still drains what was written */
	r = open_reader(name, MRING_DRAIN);
	{
		struct mring_event ev[4];

		cr_expect_eq(read_all(r, ev, 4), 1);
		cr_expect_eq(ev[0].kind, MRING_EV_STEP);
		cr_expect_eq(ev[0].step, 7);
	}
	mring_reader_close(r);
}

/* The permissions of our mapping of the segment, from /proc/self/maps. */
static bool mapping_perms(const char *path, char perms[5])
{
	char line[1024];
	FILE *f = fopen("/proc/self/maps", "r");
	bool found = false;

	/* only ever called in a forked child: no cr_assert (helpers.h) */
	if (!f)
		CHILD_FAIL("/proc/self/maps: %s", strerror(errno));
	while (!found && fgets(line, sizeof(line), f)) {
		if (strstr(line, path) && sscanf(line, "%*s %4s", perms) == 1)
			found = true;
	}
	fclose(f);
	return found;
}

Test(security, observers_map_read_only_and_drainers_read_write)
{
	const char *name = seg_name("maps");
	struct mring_writer *w = open_writer(name, 64, MRING_FULL_DROP);
	struct mring_reader *r;
	char perms[5] = "";
	int status;
	pid_t pid = test_fork();

	if (pid == 0) {
		/* a child without the writer's mapping: only the reader's */
		int bad = 0;

		r = child_open_reader(name, MRING_OBSERVE);
		bad |= !mapping_perms(seg_path, perms) || strcmp(perms, "r--s");
		mring_reader_close(r);
		r = child_open_reader(name, MRING_DRAIN);
		bad |= (!mapping_perms(seg_path, perms) || strcmp(perms, "rw-s")) << 1;
		mring_reader_close(r);
		_exit(bad);
	}
	status = wait_child(pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child that maps an observer, then a drainer, %s (bits: 1 the "
		  "observer's mapping is not r--s, 2 the drainer's is not rw-s)",
		  child_status(status));
	mring_writer_close(w);
}
