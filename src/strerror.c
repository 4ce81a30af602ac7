// SPDX-License-Identifier: MIT
/*
 * strerror.c - what mring means by each errno it returns.
 */
#include <errno.h>
#include <string.h>

#include "lib.h"

MRING_API const char *mring_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return "success";
	case EBUSY:
		return "segment in use (a live producer, or another drainer)";
	case EEXIST:
		return "a file is at the segment's path: a segment whose producer is "
		       "gone (MRING_CFG_REPLACE replaces it) or a file that is not a "
		       "segment (never replaced); or a metric of that name has other flags";
	case ENOBUFS:
		return "ring full: record dropped and counted";
	case EAGAIN:
		return "not ready: segment being created, or no stable snapshot yet";
	case EPROTO:
		return "not an mring segment (bad magic)";
	case EPROTONOSUPPORT:
		return "mring segment of an incompatible format version";
	case EBADMSG:
		return "corrupt or truncated mring segment";
	case ENOSPC:
		return "no space: shm directory full, or max_metrics reached";
	case ENAMETOOLONG:
		return "name too long (metric and run names: 63 bytes; paths: PATH_MAX)";
	case EPERM:
		return "writer used in a forked child (open a new segment there)";
	case ENOENT:
		return "no such segment, or no completed epoch yet";
	case EINVAL:
		return "invalid argument";
	case ELIBBAD:
		return "program built against another mring.h than the loaded libmring "
		       "(inline hot path layout differs): rebuild it";
	default:
		return strerror(err);
	}
}
