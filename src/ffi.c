// SPDX-License-Identifier: MIT
/*
 * ffi.c - a real, exported symbol for every inline function of mring.h,
 * for FFI bindings and dlopen users that cannot inline C.
 */
#define MRING_INLINE __attribute__((visibility("default")))
#include "mring.h"
