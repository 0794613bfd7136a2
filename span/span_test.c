/* SPDX-License-Identifier: MIT */
/*
 * span_test.c - every branch of portal_span_check and portal_span_resolve,
 * table-driven, with the overflow cases near UINT64_MAX.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "portal/span.h"

/* The span is ABI: pin its layout here too. */
_Static_assert(sizeof(struct portal_span) == 24, "span size");
_Static_assert(offsetof(struct portal_span, offset) == 0, "span offset");
_Static_assert(offsetof(struct portal_span, length) == 8, "span length");
_Static_assert(offsetof(struct portal_span, generation) == 12, "span generation");
_Static_assert(offsetof(struct portal_span, region_id) == 16, "span region_id");
_Static_assert(offsetof(struct portal_span, flags) == 20, "span flags");

#define RID 0x5eedu
#define M64 UINT64_MAX
#define M32 UINT32_MAX

struct check_case {
	const char *what;
	uint64_t offset;
	uint32_t length;
	uint32_t region_id;
	uint32_t flags;
	uint64_t lo, hi;
	int want;
};

static const struct check_case check_cases[] = {
	/* accepted */
	{ "inside",                     100, 10, RID, 0, 0, 1000, 0 },
	{ "bump flag is known",         100, 10, RID, PORTAL_SPAN_F_BUMP, 0, 1000, 0 },
	{ "starts at lo",               64, 10, RID, 0, 64, 1000, 0 },
	{ "ends exactly at hi",         990, 10, RID, 0, 0, 1000, 0 },
	{ "empty at hi",                1000, 0, RID, 0, 0, 1000, 0 },
	{ "empty range, empty span",    7, 0, RID, 0, 7, 7, 0 },
	{ "whole 4 GiB - 1 span",       0, M32, RID, 0, 0, M32, 0 },
	{ "top of address space",       M64 - 10, 10, RID, 0, 0, M64, 0 },
	{ "hi = max, empty at max",     M64, 0, RID, 0, 0, M64, 0 },
	/* unknown flags come first */
	{ "flag bit 1",                 100, 10, RID, 0x2u, 0, 1000, -EINVAL },
	{ "flag bit 31",                100, 10, RID, 0x80000000u, 0, 1000, -EINVAL },
	{ "all flags",                  100, 10, RID, M32, 0, 1000, -EINVAL },
	{ "bad flags beat bad region",  100, 10, RID + 1, 0x4u, 0, 1000, -EINVAL },
	/* region */
	{ "other region",               100, 10, RID + 1, 0, 0, 1000, PORTAL_EXDEV },
	{ "region 0",                   100, 10, 0, 0, 0, 1000, PORTAL_EXDEV },
	{ "bad region beats range",     M64, M32, RID ^ 0x80000000u, 0, 0, 1000, PORTAL_EXDEV },
	/* range */
	{ "lo > hi",                    100, 0, RID, 0, 200, 100, PORTAL_ERANGE },
	{ "below lo",                   63, 1, RID, 0, 64, 1000, PORTAL_ERANGE },
	{ "past hi",                    1001, 0, RID, 0, 0, 1000, PORTAL_ERANGE },
	{ "one byte too long",          990, 11, RID, 0, 0, 1000, PORTAL_ERANGE },
	{ "length > whole range",       0, 1001, RID, 0, 0, 1000, PORTAL_ERANGE },
	{ "offset + length wraps",      M64 - 5, 10, RID, 0, 0, M64, PORTAL_ERANGE },
	{ "wrap to small end",          M64 - 1, M32, RID, 0, 0, 1000, PORTAL_ERANGE },
	{ "huge offset, hi = max",      M64, 1, RID, 0, 0, M64, PORTAL_ERANGE },
	{ "empty span past hi",         1000, 0, RID, 0, 0, 999, PORTAL_ERANGE },
};

static void span_check_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		const struct check_case *c = &check_cases[i];
		struct portal_span s = {
			.offset = c->offset, .length = c->length, .generation = 7,
			.region_id = c->region_id, .flags = c->flags,
		};
		struct portal_span copy = s;
		int rc = portal_span_check(&s, RID, c->lo, c->hi);

		if (rc != c->want)
			fail_msg("case %zu (%s): got %d, want %d", i, c->what, rc, c->want);
		/* The span is read only. */
		assert_memory_equal(&s, &copy, sizeof(s));
	}
}

struct resolve_case {
	const char *what;
	uint64_t offset;
	uint32_t length;
	uint32_t region_id;
	uint32_t flags;
	uint64_t size;
	int want;
};

static const struct resolve_case resolve_cases[] = {
	{ "first byte",           0, 1, RID, 0, 4096, 0 },
	{ "middle",               100, 200, RID, 0, 4096, 0 },
	{ "last byte",            4095, 1, RID, 0, 4096, 0 },
	{ "empty at end",         4096, 0, RID, 0, 4096, 0 },
	{ "bump flag",            128, 64, RID, PORTAL_SPAN_F_BUMP, 4096, 0 },
	{ "unknown flag",         128, 64, RID, 0x10u, 4096, -EINVAL },
	{ "other region",         128, 64, RID + 7, 0, 4096, PORTAL_EXDEV },
	{ "past the end",         4096, 1, RID, 0, 4096, PORTAL_ERANGE },
	{ "straddles the end",    4000, 97, RID, 0, 4096, PORTAL_ERANGE },
	{ "offset beyond size",   5000, 0, RID, 0, 4096, PORTAL_ERANGE },
	{ "wrapping offset",      M64 - 2, 16, RID, 0, 4096, PORTAL_ERANGE },
	{ "max offset, max len",  M64, M32, RID, 0, 4096, PORTAL_ERANGE },
	{ "size 0, empty span",   0, 0, RID, 0, 0, 0 },
	{ "size 0, one byte",     0, 1, RID, 0, 0, PORTAL_ERANGE },
};

static void span_resolve_table(void **state)
{
	static char region[4096];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(resolve_cases) / sizeof(resolve_cases[0]); i++) {
		const struct resolve_case *c = &resolve_cases[i];
		struct portal_span s = {
			.offset = c->offset, .length = c->length, .generation = 0,
			.region_id = c->region_id, .flags = c->flags,
		};
		void *sentinel = (void *)&s;
		void *addr = sentinel;
		int rc = portal_span_resolve(&s, region, c->size, RID, &addr);

		if (rc != c->want)
			fail_msg("case %zu (%s): got %d, want %d", i, c->what, rc, c->want);
		if (rc == 0) {
			if (addr != region + c->offset)
				fail_msg("case %zu (%s): wrong address", i, c->what);
		} else if (addr != sentinel) {
			fail_msg("case %zu (%s): address written on failure", i, c->what);
		}
	}
}

/* check and resolve agree with a brute-force reference on a small grid,
 * including ranges that do not start at 0. */
static int reference(uint64_t off, uint32_t len, uint64_t lo, uint64_t hi)
{
	/* Unsigned __int128 cannot wrap here. */
	unsigned __int128 end = (unsigned __int128)off + len;

	if (lo > hi || off < lo || end > hi)
		return PORTAL_ERANGE;
	return 0;
}

static void span_check_grid(void **state)
{
	static const uint64_t offs[] = { 0, 1, 63, 64, 65, 127, 128, M64 - 64, M64 - 1, M64 };
	static const uint32_t lens[] = { 0, 1, 63, 64, 65, M32 - 1, M32 };
	static const uint64_t bounds[] = { 0, 1, 64, 128, M64 - 64, M64 };
	size_t a, b, c, d;
	unsigned checked = 0;

	(void)state;
	for (a = 0; a < sizeof(offs) / sizeof(offs[0]); a++)
		for (b = 0; b < sizeof(lens) / sizeof(lens[0]); b++)
			for (c = 0; c < sizeof(bounds) / sizeof(bounds[0]); c++)
				for (d = 0; d < sizeof(bounds) / sizeof(bounds[0]); d++) {
					struct portal_span s = {
						.offset = offs[a], .length = lens[b],
						.region_id = RID,
					};
					int want = reference(offs[a], lens[b], bounds[c], bounds[d]);
					int rc = portal_span_check(&s, RID, bounds[c], bounds[d]);

					if (rc != want)
						fail_msg("off %llu len %u lo %llu hi %llu: got %d want %d",
							 (unsigned long long)offs[a], lens[b],
							 (unsigned long long)bounds[c],
							 (unsigned long long)bounds[d], rc, want);
					checked++;
				}
	assert_int_equal(checked, 10 * 7 * 6 * 6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(span_check_table),
		cmocka_unit_test(span_resolve_table),
		cmocka_unit_test(span_check_grid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
