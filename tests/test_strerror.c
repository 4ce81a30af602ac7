// SPDX-License-Identifier: MIT
/*
 * test_strerror.c - every code mring returns has a message that says
 * what mring means by it.
 */
#include "helpers.h"

Test(strerror, mring_codes_have_specific_messages)
{
	struct { int err; const char *word; } cases[] = {
		{ -EBUSY, "in use" }, { -EEXIST, "REPLACE" }, { -ENOBUFS, "dropped" },
		{ -EAGAIN, "not ready" }, { -EPROTO, "not an mring" },
		{ -EPROTONOSUPPORT, "version" }, { -EBADMSG, "corrupt" },
		{ -ENOSPC, "full" }, { -ENAMETOOLONG, "63" }, { -EPERM, "fork" },
		{ -ENOENT, "no such segment" }, { -EINVAL, "invalid" }, { 0, "success" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *m = mring_strerror(cases[i].err);

		cr_assert_not_null(m);
		cr_expect_not_null(strstr(m, cases[i].word), "%d: \"%s\"", cases[i].err, m);
		cr_expect_str_eq(mring_strerror(-cases[i].err), m, "sign does not matter");
	}
	cr_expect_str_eq(mring_strerror(-EIO), strerror(EIO), "others: the system's text");
}
