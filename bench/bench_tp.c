/* SPDX-License-Identifier: MIT */
/* bench_tp.c - instantiates the mring_bench LTTng-UST tracepoint provider. */
#define TRACEPOINT_CREATE_PROBES
#define TRACEPOINT_DEFINE
#include "bench_tp.h"
