/* SPDX-License-Identifier: MIT */
/*
 * mring/atomic.h - the memory-ordering vocabulary of mring.
 *
 * Every access to a word that another process reads or writes goes
 * through these wrappers, so the order of each one is spelled out and
 * greppable.  They are C11 <stdatomic.h> underneath: liburcu 0.13 (Debian
 * 12) has no acquire/release API.  On x86-64 every one of them compiles
 * to a plain mov; only the compiler is constrained.
 *
 * Internal header: included by <mring.h>, not meant to be included alone.
 */
#ifndef MRING_ATOMIC_H
#define MRING_ATOMIC_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
/*
 * C++ (C++11 on; <stdatomic.h> is C++23): the shared words are plain
 * integers of the same size and alignment, accessed through the
 * GCC/Clang __atomic builtins, which C11's atomic_*_explicit compile to
 * as well.  Same orders, same instructions; only the spelling differs.
 */
#if !defined(__GNUC__)
#error "mring.h in C++ needs GCC or Clang (__atomic builtins)"
#endif
#if !__GCC_ATOMIC_LLONG_LOCK_FREE || __GCC_ATOMIC_LLONG_LOCK_FREE != 2
#error "mring needs lock-free (hence address-free) 64-bit atomics to share memory between processes"
#endif

typedef uint64_t _mring_u64;
typedef uint32_t _mring_u32;

#define _MRING_STATIC_ASSERT(e, m)	static_assert(e, m)
#define _MRING_ALIGNOF(t)		alignof(t)
#define _mring_load_relaxed(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
#define _mring_load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define _mring_store_relaxed(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define _mring_store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define _mring_fence_acquire()		__atomic_thread_fence(__ATOMIC_ACQUIRE)
#define _mring_fence_release()		__atomic_thread_fence(__ATOMIC_RELEASE)
#define _mring_signal_fence()		__atomic_signal_fence(__ATOMIC_SEQ_CST)

#else /* C11 */
#include <stdatomic.h>

#if ATOMIC_LLONG_LOCK_FREE != 2
#error "mring needs lock-free (hence address-free) 64-bit atomics to share memory between processes"
#endif

typedef _Atomic uint64_t _mring_u64;
typedef _Atomic uint32_t _mring_u32;

#define _MRING_STATIC_ASSERT(e, m)	_Static_assert(e, m)
#define _MRING_ALIGNOF(t)		_Alignof(t)
#define _mring_load_relaxed(p)      atomic_load_explicit((p), memory_order_relaxed)
#define _mring_load_acquire(p)      atomic_load_explicit((p), memory_order_acquire)
#ifdef MRING_TESTPOINTS
/*
 * Test builds only (tests/test_testpoints.c): every store to shared
 * memory is followed by a call that may SIGKILL the process there, so a
 * test can kill a producer at each distinct point of its protocol.
 */
void __mring_testpoint(void);
#define _mring_store_relaxed(p, v) \
	(atomic_store_explicit((p), (v), memory_order_relaxed), __mring_testpoint())
#define _mring_store_release(p, v) \
	(atomic_store_explicit((p), (v), memory_order_release), __mring_testpoint())
#else
#define _mring_store_relaxed(p, v)  atomic_store_explicit((p), (v), memory_order_relaxed)
#define _mring_store_release(p, v)  atomic_store_explicit((p), (v), memory_order_release)
#endif
#define _mring_fence_acquire()      atomic_thread_fence(memory_order_acquire)
#define _mring_fence_release()      atomic_thread_fence(memory_order_release)
#define _mring_signal_fence()       atomic_signal_fence(memory_order_seq_cst)
#endif /* __cplusplus */

/* The C++ branch relies on this: the same bytes whichever language. */
_MRING_STATIC_ASSERT(sizeof(_mring_u64) == 8 && _MRING_ALIGNOF(_mring_u64) == 8, "u64 word");
_MRING_STATIC_ASSERT(sizeof(_mring_u32) == 4 && _MRING_ALIGNOF(_mring_u32) == 4, "u32 word");

static inline uint64_t _mring_dbits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static inline double _mring_bitsd(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

#if defined(__x86_64__) || defined(__i386__)
#define _mring_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define _mring_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define _mring_cpu_relax() _mring_signal_fence()
#endif

#endif /* MRING_ATOMIC_H */
