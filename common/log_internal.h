/* SPDX-License-Identifier: MIT */
#ifndef PORTAL_LOG_INTERNAL_H
#define PORTAL_LOG_INTERNAL_H

#include "portal/common.h"

/* Format a message and hand it to the application's callback, if any. */
void portal_log(enum portal_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
