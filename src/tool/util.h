/* SPDX-License-Identifier: MIT */
/*
 * util.h - what every sink needs from the file system and from number
 * formatting, in one place (implemented in text.c).
 */
#ifndef MRING_TOOL_UTIL_H
#define MRING_TOOL_UTIL_H

#include <stddef.h>
#include <stdint.h>

/*
 * A finite @v as the shortest of %.15g, %.16g, %.17g that strtod reads
 * back bit-exactly (%.17g always does).  Returns its length; @out gets it
 * as from snprintf(@out, @len, ...).  Implemented in shortest.c.
 */
int fmt_shortest(char *out, size_t len, double v);
/* write all of [@p, @p + @n): 0, or -errno (-EIO for no progress). */
int write_all(int fd, const void *p, size_t n);
/* pwrite all of [@p, @p + @n) at @off: 0, or -errno (-EIO for no progress). */
int pwrite_all(int fd, const void *p, size_t n, uint64_t off);
/* mkdir -p with mode 0755; an existing non-directory component: -ENOTDIR. */
int mkdir_p(const char *dir);
/* mkdir_p() of the directory part of @file, if it has one. */
int mkdir_parent(const char *file);
/* fsync a directory, so a name created or renamed in it survives a crash. */
int fsync_dir(const char *dir);
/*
 * Mark @fd as the output of a live drain: a non-blocking exclusive
 * flock(2), held until the file is closed.  -EBUSY when another open file
 * holds it; 0 when the file system cannot lock (nothing to tell then).
 */
int lock_output(int fd);
/*
 * 0 if the first @size bytes of @fd are empty or end with a newline (as
 * every commit of a line-based output does), -EBADMSG if not, -errno.
 */
int ends_a_line(int fd, uint64_t size);
/* The last occurrence of NUL-terminated @pat in [@p, @p + @len), or NULL. */
const char *mem_last(const char *p, size_t len, const char *pat);
/* The decimal digits at [@p, @end) as *@v (at most 20); their end, NULL for none. */
const char *parse_digits(const char *p, const char *end, uint64_t *v);

/*
 * Length of the well-formed UTF-8 sequence at NUL-terminated @p (RFC
 * 3629), or 0.  Implemented in text.c; used by every place that turns
 * untrusted segment bytes into text.
 */
int utf8_len(const unsigned char *p);

#endif
