/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log_internal.h"

static portal_log_fn log_fn;
static void *log_arg;
static enum portal_log_level log_max = PORTAL_LOG_WARN;

void portal_set_log(portal_log_fn fn, void *arg, enum portal_log_level max_level)
{
	log_fn = fn;
	log_arg = arg;
	log_max = max_level;
}

void portal_log(enum portal_log_level level, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	if (!log_fn || level > log_max)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_fn(level, buf, log_arg);
}

const char *portal_strerror(int err)
{
	switch (err) {
	case 0:                return "success";
	case PORTAL_EMAGIC:    return "not a Portal region (wrong magic)";
	case PORTAL_EVERSION:  return "unsupported region major version";
	case PORTAL_ESIZE:     return "region size mismatch or truncated file";
	case PORTAL_ECHECKSUM: return "region header or directory checksum mismatch";
	case PORTAL_EDIR:      return "directory entry out of bounds or overlapping";
	case PORTAL_ERANGE:    return "span out of bounds";
	case PORTAL_EXDEV:     return "span names another region";
	case PORTAL_EFORGED:   return "span is not a block this arena handed out";
	case PORTAL_ESTALE:    return "stale: span generation not current, or our slot was taken over";
	case PORTAL_EPROTO:    return "peer broke the ring protocol; ring quarantined";
	case PORTAL_EPEERDEAD: return "peer is gone";
	case -EAGAIN:          return "ring full or empty; try again";
	case -ETIMEDOUT:       return "timed out";
	case -EINVAL:          return "invalid argument";
	case -ENOSPC:          return "no space left";
	case -ENOENT:          return "no such object";
	case -EEXIST:          return "object exists";
	case -EBUSY:           return "participant slot in use";
	default:
		return err < 0 && err != INT32_MIN ? strerror(-err) : "not an error code";
	}
}
