/*
 * noise.c -- the exact discrete Gaussian flooding sampler (docs/SAMPLER.md; he_agg.h
 * states the definition; he_agg.hazmat.kernels has a numba mirror and a plain-Python
 * reference that must give the same integers).
 */
#include "he_agg.h"
#include "modarith.h"

#if HEAGG_X86
#include <immintrin.h>
#endif

/* ---- exact discrete Gaussian (docs/SAMPLER.md) -------------------------------------------------
 * Integer-only: the same bits on every machine. No branch and no memory index depends on
 * a word or a value: the base table is scanned in full, the exponent's bits select their
 * factor by masks, shifts by a variable amount are constant time on x86-64 and AArch64
 * (the compiler turns the 128-bit shift into shrd/cmov or their AArch64 counterparts), and
 * the output index advances by the accept bit. Only the number of trials a call runs is
 * visible, and it is independent of the values accepted. */

typedef unsigned __int128 u128;

#define DG_Q127_ONE ((u128)1 << 127)
#define DG_M96 (((u128)1 << 96) - 1)

static inline u128 dg_word2(const uint64_t *p) { return ((u128)p[0] << 64) | p[1]; }

/* floor(a * b / 2^127) for a, b <= 2^127 (a 256-bit product, four 64x64 multiplies). */
static inline u128 dg_mul127(u128 a, u128 b) {
    const uint64_t a0 = (uint64_t)a, a1 = (uint64_t)(a >> 64);
    const uint64_t b0 = (uint64_t)b, b1 = (uint64_t)(b >> 64);
    const u128 p00 = (u128)a0 * b0, p01 = (u128)a0 * b1, p10 = (u128)a1 * b0, p11 = (u128)a1 * b1;
    const u128 mid = (p00 >> 64) + (uint64_t)p01 + (uint64_t)p10;
    const u128 hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    return (hi << 1) | ((uint64_t)mid >> 63);
}

/* One trial's values before the acceptance test. */
typedef struct {
    u128 z, r2, g, s, e, poly;
    uint64_t sign, n;
} dg_trial;

/* Step 1 of a trial: x, z, the uniforms, and h = kappa u (u + 2x) split into its
 * integer part n and its 96-bit fraction g; s = (the low bits of g) * ln 2 (Q127). */
static inline void dg_start(dg_trial *t, const uint64_t *w, uint64_t x, unsigned b,
                            uint64_t kappa, u128 ln2) {
    const uint64_t w0 = w[0], w2 = w[2], w3 = w[3];
    t->sign = w0 >> 63;
    const uint64_t y = (w0 & (UINT64_MAX >> 1)) >> (63 - b);
    t->r2 = ((u128)w2 << 32) | (w3 & 0xFFFFFFFFu);
    t->z = ((u128)x << b) | y;
    const uint64_t u = (y << 1) << (63 - b);                             /* u * 2^64 */
    const u128 q = (((u128)(2 * x) * u) << 32) + (((u128)u * u) >> 32); /* u(u+2x) 2^96 */
    const u128 h = (u128)kappa * (uint64_t)(q >> 64) + (((u128)kappa * (uint64_t)q) >> 64);
    t->n = (uint64_t)(h >> 96);
    t->g = h & DG_M96;
    t->s = dg_mul127((t->g & (((u128)1 << (96 - HEAGG_DG_EXP_BITS)) - 1)) << 31, ln2);
    t->e = DG_Q127_ONE;
}

/* The base value x = #{r < nrows : r1 < row_r}, r1 = w1 * 2^32 + (w3 >> 32), of ntrials
 * trials: every row is compared (rows past the table's end hold 0 and count nothing;
 * nrows, a multiple of 4, depends only on the public plan). */
static void dg_ranks_scalar(uint64_t *x, const uint64_t *w, size_t ntrials, const uint64_t *th,
                            const uint64_t *tl, int nrows) {
    for (size_t j = 0; j < ntrials; j++) {
        const uint64_t hi = w[4 * j + 1], lo = w[4 * j + 3] >> 32;
        uint64_t c = 0;
        for (int r = 0; r < nrows; r++) c += (uint64_t)(hi < th[r]) | ((uint64_t)(hi == th[r]) & (uint64_t)(lo < tl[r]));
        x[j] = c;
    }
}

#if HEAGG_X86
__attribute__((target("avx2"), noinline)) static void dg_ranks_avx2(uint64_t *x, const uint64_t *w,
                                                                     size_t ntrials, const uint64_t *th,
                                                                     const uint64_t *tl, int nrows) {
    const __m256i bias = _mm256_set1_epi64x((long long)(UINT64_C(1) << 63));
    for (size_t j = 0; j < ntrials; j++) {
        const __m256i hi = _mm256_set1_epi64x((long long)w[4 * j + 1]);
        const __m256i hib = _mm256_xor_si256(hi, bias);
        const __m256i lo = _mm256_set1_epi64x((long long)(w[4 * j + 3] >> 32));
        __m256i acc = _mm256_setzero_si256();
        for (int r = 0; r < nrows; r += 4) {
            const __m256i t_hi = _mm256_loadu_si256((const __m256i *)(th + r));
            const __m256i t_lo = _mm256_loadu_si256((const __m256i *)(tl + r));
            const __m256i lt_hi = _mm256_cmpgt_epi64(_mm256_xor_si256(t_hi, bias), hib);
            const __m256i eq_hi = _mm256_cmpeq_epi64(t_hi, hi);
            const __m256i lt_lo = _mm256_cmpgt_epi64(t_lo, lo); /* both below 2^32 */
            acc = _mm256_sub_epi64(acc, _mm256_or_si256(lt_hi, _mm256_and_si256(eq_hi, lt_lo)));
        }
        const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        x[j] = (uint64_t)_mm_cvtsi128_si64(_mm_add_epi64(s2, _mm_unpackhi_epi64(s2, s2)));
    }
}
#endif

static void dg_ranks(uint64_t *x, const uint64_t *w, size_t ntrials, const uint64_t *th,
                     const uint64_t *tl, int nrows) {
#if HEAGG_X86
    if (heagg_simd_path() != HEAGG_NTT_SCALAR) {
        dg_ranks_avx2(x, w, ntrials, th, tl, nrows);
        return;
    }
#endif
    dg_ranks_scalar(x, w, ntrials, th, tl, nrows);
}

/* Step 2, factor i: e *= 2^(-2^-(i+1)) if that bit of g is set. */
static inline void dg_bit(dg_trial *t, int i, u128 c) {
    const u128 mask = (u128)0 - (u128)((t->g >> (95 - i)) & 1);
    t->e = dg_mul127(t->e, (c & mask) | (DG_Q127_ONE & ~mask));
}

/* Step 4: the accept bit, and the value written at out[p] (always written). */
static inline uint64_t dg_finish(const dg_trial *t, int64_t *high, int64_t *low, size_t p) {
    const u128 a = dg_mul127(t->e, t->poly) >> (31 + t->n);
    const uint64_t zero = (uint64_t)(t->z == 0);
    const uint64_t accept = (uint64_t)(t->r2 < a) & ~(zero & t->sign) & 1;
    const u128 v = (t->z ^ ((u128)0 - t->sign)) + t->sign; /* sign ? -z : z */
    high[p] = (int64_t)(uint64_t)(v >> 32);                 /* floor(v / 2^32): |v| < 2^70 */
    low[p] = (int64_t)(v & 0xFFFFFFFFu);
    return accept;
}

#define DG_BLOCK 32 /* trials per block: independent multiply chains the CPU overlaps */

int heagg_discrete_gaussian(int64_t *high, int64_t *low, size_t count, const uint64_t *words,
                            size_t nwords, const uint64_t *plan, size_t *produced,
                            size_t *consumed) {
    if (produced == NULL || consumed == NULL || plan == NULL) return HEAGG_ERR_ARGUMENT;
    if ((count != 0 && (high == NULL || low == NULL)) || (nwords != 0 && words == NULL))
        return HEAGG_ERR_ARGUMENT;
    if (plan[0] > 63) return HEAGG_ERR_ARGUMENT;
    const unsigned b = (unsigned)plan[0];
    const uint64_t kappa = plan[1];
    const uint64_t *rows = plan + 2;
    const uint64_t *bits = rows + 2 * HEAGG_DG_ROWS;
    const uint64_t *taylor = bits + 2 * HEAGG_DG_EXP_BITS;
    const u128 ln2 = dg_word2(taylor + 2 * (HEAGG_DG_TAYLOR + 1));
    uint64_t th[HEAGG_DG_ROWS], tl[HEAGG_DG_ROWS], xs[DG_BLOCK];
    int nrows = 0;
    for (int r = 0; r < HEAGG_DG_ROWS; r++) {
        th[r] = rows[2 * r];
        tl[r] = rows[2 * r + 1] & 0xFFFFFFFFu;
        if (th[r] | tl[r]) nrows = r + 1; /* the public table's length, not a secret */
    }
    nrows = (nrows + 3) & ~3;
    u128 c_bits[HEAGG_DG_EXP_BITS], c_taylor[HEAGG_DG_TAYLOR + 1];
    for (int k = 0; k < HEAGG_DG_EXP_BITS; k++) c_bits[k] = dg_word2(bits + 2 * k);
    for (int k = 0; k <= HEAGG_DG_TAYLOR; k++) c_taylor[k] = dg_word2(taylor + 2 * k);
    dg_trial t[DG_BLOCK];
    size_t p = 0, i = 0;
    /* Whole blocks while they cannot overshoot count (a trial gives at most one value). */
    while (count - p >= DG_BLOCK && nwords - i >= 4 * DG_BLOCK) {
        dg_ranks(xs, words + i, DG_BLOCK, th, tl, nrows);
        for (int j = 0; j < DG_BLOCK; j++) dg_start(&t[j], words + i + 4 * j, xs[j], b, kappa, ln2);
        for (int k = 0; k < HEAGG_DG_EXP_BITS; k++)
            for (int j = 0; j < DG_BLOCK; j++) dg_bit(&t[j], k, c_bits[k]);
        for (int j = 0; j < DG_BLOCK; j++) t[j].poly = c_taylor[HEAGG_DG_TAYLOR];
        for (int k = HEAGG_DG_TAYLOR - 1; k >= 0; k--)
            for (int j = 0; j < DG_BLOCK; j++) t[j].poly = c_taylor[k] - dg_mul127(t[j].s, t[j].poly);
        for (int j = 0; j < DG_BLOCK; j++) p += dg_finish(&t[j], high, low, p);
        i += 4 * DG_BLOCK;
    }
    /* Then trial by trial, stopping exactly. */
    while (p < count && nwords - i >= 4) {
        dg_ranks(xs, words + i, 1, th, tl, nrows);
        dg_start(&t[0], words + i, xs[0], b, kappa, ln2);
        for (int k = 0; k < HEAGG_DG_EXP_BITS; k++) dg_bit(&t[0], k, c_bits[k]);
        t[0].poly = c_taylor[HEAGG_DG_TAYLOR];
        for (int k = HEAGG_DG_TAYLOR - 1; k >= 0; k--) t[0].poly = c_taylor[k] - dg_mul127(t[0].s, t[0].poly);
        p += dg_finish(&t[0], high, low, p);
        i += 4;
    }
    *produced = p;
    *consumed = i;
    return HEAGG_OK;
}
