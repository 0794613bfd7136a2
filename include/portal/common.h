/* SPDX-License-Identifier: MIT */
/*
 * portal/common.h - what every Portal module shares: the export macro, the
 * error codes, the version, and the log callback.
 *
 * Errors. Every Portal call returns an int: 0 (or a count) on success, a
 * negative errno on failure. Burst calls return the number of elements moved.
 * The codes a caller meets most often:
 *
 *   -EINVAL    bad argument or unknown flag bit (caller bug)
 *   -EAGAIN    ring full (enqueue) or empty (dequeue); try again
 *   -ENOSPC    no room left (region directory, arena)
 *   -ENOENT    no object of that name in the region
 *   -ETIMEDOUT a wait ran out of time
 *   -EPROTO    the peer broke the ring protocol; the ring is now quarantined
 *   -EPIPE     the peer is gone
 *
 * and the attach and span errors, each with its own name below.
 *
 * The library never prints, exits or aborts. Diagnostics go to the callback
 * set with portal_set_log(); by default they are dropped.
 */
#ifndef PORTAL_COMMON_H
#define PORTAL_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PORTAL_BUILDING)
#define PORTAL_API __attribute__((visibility("default")))
#else
#define PORTAL_API
#endif

#define PORTAL_VERSION_MAJOR 0
#define PORTAL_VERSION_MINOR 1

/* Region attach errors (portal_region_attach and friends). */
#define PORTAL_EMAGIC    (-EMEDIUMTYPE)     /* not a Portal region: wrong magic */
#define PORTAL_EVERSION  (-EPROTONOSUPPORT) /* region's major version unsupported */
#define PORTAL_ESIZE     (-ENODATA)         /* size mismatch, or file truncated */
#define PORTAL_ECHECKSUM (-EBADMSG)         /* header or directory checksum wrong */
#define PORTAL_EDIR      (-EUCLEAN)         /* directory entry out of bounds or overlapping */

/* Span errors (portal_span_check, arena returns). */
#define PORTAL_ERANGE    (-ERANGE)          /* span leaves the region or the object */
#define PORTAL_EXDEV     (-EXDEV)           /* span names another region */
#define PORTAL_EFORGED   (-EFAULT)          /* not a block this arena handed out */
#define PORTAL_ESTALE    (-ESTALE)          /* block generation is not current */

/* Protocol errors. */
#define PORTAL_EPROTO    (-EPROTO)          /* peer corrupted the ring; quarantined */
#define PORTAL_EPEERDEAD (-EPIPE)           /* the peer is gone */

/* One line: what the error means in Portal's terms. Never NULL. */
PORTAL_API const char *portal_strerror(int err);

enum portal_log_level {
	PORTAL_LOG_ERROR = 0,
	PORTAL_LOG_WARN  = 1,
	PORTAL_LOG_INFO  = 2,
	PORTAL_LOG_DEBUG = 3,
};

typedef void (*portal_log_fn)(enum portal_log_level level, const char *msg, void *arg);

/*
 * Set the process-wide log callback (NULL drops everything) and the most
 * verbose level passed to it. Not thread-safe against concurrent logging:
 * set it once at start-up.
 */
PORTAL_API void portal_set_log(portal_log_fn fn, void *arg, enum portal_log_level max_level);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_COMMON_H */
