/* SPDX-License-Identifier: MIT */
/*
 * The one thin layer over <stdatomic.h>. Call sites spell out their memory
 * order; this file only adds the CPU pause hint and branch hints.
 */
#ifndef PORTAL_ATOMIC_INTERNAL_H
#define PORTAL_ATOMIC_INTERNAL_H

#include <stdatomic.h>

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Tell the core we are spinning (frees the sibling hyperthread, saves power). */
static inline void portal_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* "Cannot happen" checks that stay in release builds (SQLite's NEVER()). */
#define PORTAL_NEVER(x) unlikely(x)

#endif
