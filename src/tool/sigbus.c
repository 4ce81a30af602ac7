// SPDX-License-Identifier: MIT
/*
 * sigbus.c - a truncated segment must not kill a monitor.
 *
 * A reader maps a segment MAP_SHARED.  If the file is then truncated (its
 * producer's user can always do that, and another user can do it to a
 * segment in a shared directory), touching a page past the new end raises
 * SIGBUS, whose default action kills the tool: `mring serve` running as
 * root could be stopped by any user so.  Checking the size before every
 * read cannot close the race; this handler does.  On SIGBUS for an
 * address past a file's end (BUS_ADRERR) it maps an anonymous zero page
 * over the faulting page and returns, so the read is retried and sees
 * zeros.  The library treats every byte of a segment as untrusted, and
 * zeros read as "nothing committed here": the tool carries on, and its
 * next look at the file (a smaller size) drops or reports the segment.
 *
 * Only the tool installs this, never the library: an application's
 * signal handlers are its own.  Every other SIGBUS keeps its default
 * action.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tool.h"

static _Atomic unsigned long zero_pages;
static uintptr_t page_mask;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t page = (uintptr_t)si->si_addr & page_mask;

	(void)uc;
	if (si->si_code == BUS_ADRERR && page &&
	    mmap((void *)page, ~page_mask + 1, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
		atomic_fetch_add_explicit(&zero_pages, 1, memory_order_relaxed);
		return;
	}
	signal(sig, SIG_DFL);	/* not ours to mend: die as we would have */
	raise(sig);
}

void sigbus_guard(void)
{
	struct sigaction sa;

	page_mask = ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

unsigned long sigbus_zero_pages(void)
{
	return atomic_load_explicit(&zero_pages, memory_order_relaxed);
}
