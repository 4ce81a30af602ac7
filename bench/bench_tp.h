/* SPDX-License-Identifier: MIT */
/*
 * bench_tp.h - LTTng-UST tracepoint provider for the peer benchmark
 * (bench_suite.c): one event carrying the same fields as an mring record
 * (metric id, step, epoch, value, step wall time).
 *
 * Built only with -DMRING_BENCH_PEERS=ON; bench_tp.c instantiates the
 * probes (TRACEPOINT_CREATE_PROBES + TRACEPOINT_DEFINE).
 */
#undef TRACEPOINT_PROVIDER
#define TRACEPOINT_PROVIDER mring_bench

#undef TRACEPOINT_INCLUDE
#define TRACEPOINT_INCLUDE "bench_tp.h"

#if !defined(MRING_BENCH_TP_H) || defined(TRACEPOINT_HEADER_MULTI_READ)
#define MRING_BENCH_TP_H

#include <stdint.h>
#include <lttng/tracepoint.h>

TRACEPOINT_EVENT(
	mring_bench,
	record,
	TP_ARGS(int32_t, metric, uint64_t, step, uint32_t, epoch,
		double, value, int64_t, wall_ns),
	TP_FIELDS(
		ctf_integer(int32_t, metric, metric)
		ctf_integer(uint64_t, step, step)
		ctf_integer(uint32_t, epoch, epoch)
		ctf_float(double, value, value)
		ctf_integer(int64_t, wall_ns, wall_ns)
	)
)

#endif /* MRING_BENCH_TP_H */

#include <lttng/tracepoint-event.h>
