/* util.c -- error strings and the once-per-process platform check. */
#include "he_agg.h"
#include "modarith.h"

const char *heagg_strerror(int code) {
    switch (code) {
    case HEAGG_OK:
        return "success";
    case HEAGG_ERR_RESIDUE:
        return "an input residue is not below its modulus";
    case HEAGG_ERR_ARGUMENT:
        return "invalid kernel argument (size, pointer, modulus or table)";
    case HEAGG_ERR_PLATFORM:
        return "unsupported platform (the native core needs a little-endian host)";
    default:
        return "unknown he_agg native error";
    }
}

int heagg_self_check(void) {
    const uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    if (heagg_load_u64(bytes) != UINT64_C(0x0807060504030201)) return HEAGG_ERR_PLATFORM;
    /* 128-bit multiply sanity: (2^64 - 1)^2 = 2^128 - 2^65 + 1. */
    if (heagg_mulhi(UINT64_MAX, UINT64_MAX) != UINT64_MAX - 1) return HEAGG_ERR_PLATFORM;
    return HEAGG_OK;
}
