// SPDX-License-Identifier: MIT
/*
 * tsan_arena.c - lets Criterion's runner start under ThreadSanitizer.
 *
 * Linked into the Criterion programs of -DMRING_SANITIZE=thread builds
 * only.  Criterion 2.4.1 keeps its inheritable arena at a random address
 * drawn with rand_r() from [0x2000'0000'0000, 0x6000'0000'0000), and gives
 * up after a few draws that land on mapped memory.  Under TSan nearly all
 * of that range is TSan's shadow, metadata or protected gaps, so the
 * runner aborts: "Could not initialize inheritable arena" (upstream
 * Snaipe/Criterion#274).  The one part of the range TSan leaves to the
 * program is [0x5500'0000'0000, 0x5680'0000'0000) (where PIE executables
 * load); this rand_r() makes the draws land in [0x5670'0000'0000,
 * 0x5678'0000'0000), above any executable the kernel places and 32 GiB
 * below the end, room for the arena to grow in place.  The arena still
 * checks every page is free before it maps it.
 *
 * Interposition works because libcriterion.so imports rand_r from libc
 * and the executable's definition comes first in symbol lookup.  Nothing
 * in mring calls rand_r.
 */
#include <stdlib.h>

/* the arena's base is 0x2000'0000'0000 + draw * 16 MiB */
#define ARENA_DRAW_FIRST	0x367000	/* 0x5670'0000'0000 */
#define ARENA_DRAW_SPAN		0x800		/* 32 GiB */

int rand_r(unsigned int *seed)
{
	/* a new 16 MiB slot on each draw, in case one is taken */
	*seed += 0x10;
	return ARENA_DRAW_FIRST + (int)(*seed % ARENA_DRAW_SPAN);
}
