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
 * a word or a value: the base table is scanned in full, the exponent's table entries are
 * picked by register permutes (AVX2) or masks (scalar), shifts by a variable amount are
 * constant time on x86-64 and AArch64 (the compiler turns the 128-bit shift into
 * shrd/cmov or their AArch64 counterparts), and the output index advances by the accept
 * bit. Only the number of trials a call runs is visible, and it is independent of the
 * values accepted.
 *
 * A block of DG_BLOCK trials runs in stages, each a loop over the block: (1) the base
 * values x (the table scan), (2) the exponent h = n + g, (3) the three table entries of
 * g's top 12 bits, (4) the polynomial for the rest, the products, the accept bit and the
 * store. Stages (1) and (3) have AVX2 forms; the loops of (2) and (4) are independent
 * multiply chains the CPU overlaps. */

typedef unsigned __int128 u128;

#define DG_RADIX (1 << HEAGG_DG_TABLE_BITS)
#define DG_BLOCK 32 /* trials per block, a multiple of 8 */

static inline u128 dg_word2(const uint64_t *p) { return ((u128)p[0] << 64) | p[1]; }

static inline uint64_t dg_mulhi(uint64_t a, uint64_t b) { return (uint64_t)(((u128)a * b) >> 64); }

/* ~ a b / 2^128 for a, b <= 2^127 without the low x low product:
 * a1 b1 + ((a1 b0 + a0 b1) >> 64); the sum is below 2^128 since a1, b1 <= 2^63. */
static inline u128 dg_mul_hi(uint64_t a1, uint64_t a0, uint64_t b1, uint64_t b0) {
    return (u128)a1 * b1 + (uint64_t)((((u128)a1 * b0) + (u128)a0 * b1) >> 64);
}

static inline u128 dg_mul_hi128(u128 a, u128 b) {
    return dg_mul_hi((uint64_t)(a >> 64), (uint64_t)a, (uint64_t)(b >> 64), (uint64_t)b);
}

/* The plan unpacked for the kernel. */
typedef struct {
    unsigned b;
    uint64_t kappa;
    int nrows;                                      /* a multiple of 4 */
    uint64_t th[HEAGG_DG_ROWS], tl[HEAGG_DG_ROWS];  /* rows: high 64 and low 32 bits */
    uint64_t tab_hi[HEAGG_DG_TABLES][DG_RADIX], tab_lo[HEAGG_DG_TABLES][DG_RADIX];
    uint32_t tab32[HEAGG_DG_TABLES][4][DG_RADIX];   /* the same, as 32-bit limbs (AVX2) */
    u128 wide[HEAGG_DG_POLY_WIDE];
    uint64_t narrow[HEAGG_DG_POLY + 1 - HEAGG_DG_POLY_WIDE];
} dg_plan;

static void dg_unpack(dg_plan *pl, const uint64_t *plan) {
    pl->b = (unsigned)plan[0];
    pl->kappa = plan[1];
    const uint64_t *rows = plan + 2;
    const uint64_t *tabs = rows + 2 * HEAGG_DG_ROWS;
    const uint64_t *wide = tabs + 2 * HEAGG_DG_TABLES * DG_RADIX;
    const uint64_t *narrow = wide + 2 * HEAGG_DG_POLY_WIDE;
    int nrows = 0;
    for (int r = 0; r < HEAGG_DG_ROWS; r++) {
        pl->th[r] = rows[2 * r];
        pl->tl[r] = rows[2 * r + 1] & 0xFFFFFFFFu;
        if (pl->th[r] | pl->tl[r]) nrows = r + 1; /* the public table's length, not a secret */
    }
    pl->nrows = (nrows + 3) & ~3;
    for (int j = 0; j < HEAGG_DG_TABLES; j++)
        for (int i = 0; i < DG_RADIX; i++) {
            const uint64_t hi = tabs[2 * (j * DG_RADIX + i)], lo = tabs[2 * (j * DG_RADIX + i) + 1];
            pl->tab_hi[j][i] = hi;
            pl->tab_lo[j][i] = lo;
            pl->tab32[j][0][i] = (uint32_t)lo;
            pl->tab32[j][1][i] = (uint32_t)(lo >> 32);
            pl->tab32[j][2][i] = (uint32_t)hi;
            pl->tab32[j][3][i] = (uint32_t)(hi >> 32);
        }
    for (int k = 0; k < HEAGG_DG_POLY_WIDE; k++) pl->wide[k] = dg_word2(wide + 2 * k);
    for (int k = 0; k <= HEAGG_DG_POLY - HEAGG_DG_POLY_WIDE; k++) pl->narrow[k] = narrow[k];
}

/* One block's trials between the stages (structure of arrays). */
typedef struct {
    uint64_t x[DG_BLOCK], n[DG_BLOCK], g_hi[DG_BLOCK], g_lo[DG_BLOCK];
    uint32_t idx[HEAGG_DG_TABLES][DG_BLOCK];    /* g's table indices */
    uint64_t t_hi[HEAGG_DG_TABLES][DG_BLOCK], t_lo[HEAGG_DG_TABLES][DG_BLOCK];
} dg_block;

/* Stage 1: x = #{r < nrows : r1 < row_r}, r1 = w1 * 2^32 + (w3 >> 32): every row is
 * compared (rows past the table's end hold 0 and count nothing). With hi, lo the high 64
 * and low 32 bits of r1 and th, tl those of a row: r1 < row <=> hi < th + [lo < tl]
 * (th + 1 does not wrap: th < 2^64 - 1 since P(x > 0) < 1). */
static void dg_ranks_scalar(uint64_t *x, const uint64_t *w, size_t ntrials, const dg_plan *pl) {
    for (size_t j = 0; j < ntrials; j++) {
        const uint64_t hi = w[4 * j + 1], lo = w[4 * j + 3] >> 32;
        uint64_t c = 0;
        for (int r = 0; r < pl->nrows; r++) /* r1 < row <=> hi < th + [lo < tl], see below */
            c += (uint64_t)(hi < pl->th[r] + (uint64_t)(lo < pl->tl[r]));
        x[j] = c;
    }
}

/* Stage 3, scalar: entry idx of each table, selected by masks over all its entries. */
static void dg_lookup_scalar(dg_block *blk, size_t ntrials, const dg_plan *pl) {
    for (int t = 0; t < HEAGG_DG_TABLES; t++)
        for (size_t j = 0; j < ntrials; j++) {
            const uint32_t v = blk->idx[t][j];
            uint64_t hi = 0, lo = 0;
            for (uint32_t i = 0; i < DG_RADIX; i++) {
                const uint64_t m = (uint64_t)0 - (uint64_t)(v == i);
                hi |= pl->tab_hi[t][i] & m;
                lo |= pl->tab_lo[t][i] & m;
            }
            blk->t_hi[t][j] = hi;
            blk->t_lo[t][j] = lo;
        }
}

#if HEAGG_X86
#define DG_AVX2 static __attribute__((target("avx2"), noinline))

/* The same compare with the sign bias (AVX2 compares signed): four operations per 4
 * rows; two trials per pass share the table loads. */
DG_AVX2 void dg_ranks_avx2(uint64_t *x, const uint64_t *w, size_t ntrials, const dg_plan *pl) {
    const __m256i bias = _mm256_set1_epi64x((long long)(UINT64_C(1) << 63));
    const int nv = pl->nrows / 4;
    size_t j = 0;
    for (; j + 2 <= ntrials; j += 2) {
        const __m256i hib0 = _mm256_set1_epi64x((long long)(w[4 * j + 1] ^ (UINT64_C(1) << 63)));
        const __m256i lo0 = _mm256_set1_epi64x((long long)(w[4 * j + 3] >> 32));
        const __m256i hib1 = _mm256_set1_epi64x((long long)(w[4 * j + 5] ^ (UINT64_C(1) << 63)));
        const __m256i lo1 = _mm256_set1_epi64x((long long)(w[4 * j + 7] >> 32));
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        for (int v = 0; v < nv; v++) {
            const __m256i thb = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(pl->th + 4 * v)), bias);
            const __m256i tl = _mm256_loadu_si256((const __m256i *)(pl->tl + 4 * v));
            /* thb - (lo < tl ? -1 : 0): the row's high word, plus one when lo is below */
            const __m256i t0 = _mm256_sub_epi64(thb, _mm256_cmpgt_epi64(tl, lo0)); /* below 2^32 */
            const __m256i t1 = _mm256_sub_epi64(thb, _mm256_cmpgt_epi64(tl, lo1));
            acc0 = _mm256_sub_epi64(acc0, _mm256_cmpgt_epi64(t0, hib0));
            acc1 = _mm256_sub_epi64(acc1, _mm256_cmpgt_epi64(t1, hib1));
        }
        const __m256i s = _mm256_add_epi64(_mm256_unpacklo_epi64(acc0, acc1), _mm256_unpackhi_epi64(acc0, acc1));
        const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        x[j] = (uint64_t)_mm_cvtsi128_si64(s2);
        x[j + 1] = (uint64_t)_mm_extract_epi64(s2, 1);
    }
    if (j < ntrials) dg_ranks_scalar(x + j, w + 4 * j, ntrials - j, pl);
}

/* Stage 3, AVX2: eight trials at a time, each 32-bit limb of the entries picked by vpermd
 * from the limbs of entries 0-7 and 8-15 (vpermd reads the index's low 3 bits), then
 * blended on the index's bit 3. */
DG_AVX2 void dg_lookup_avx2(dg_block *blk, size_t ntrials, const dg_plan *pl) {
    const __m256i seven = _mm256_set1_epi32(7);
    for (int t = 0; t < HEAGG_DG_TABLES; t++) {
        __m256i low8[4], high8[4];
        for (int k = 0; k < 4; k++) {
            low8[k] = _mm256_loadu_si256((const __m256i *)pl->tab32[t][k]);
            high8[k] = _mm256_loadu_si256((const __m256i *)(pl->tab32[t][k] + 8));
        }
        for (size_t j = 0; j < ntrials; j += 8) {
            const __m256i idx = _mm256_loadu_si256((const __m256i *)(blk->idx[t] + j));
            const __m256i upper = _mm256_cmpgt_epi32(idx, seven);
            __m256i limb[4];
            for (int k = 0; k < 4; k++)
                limb[k] = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(low8[k], idx),
                                             _mm256_permutevar8x32_epi32(high8[k], idx), upper);
            /* limbs (k = 0..3) of 8 trials -> lo = l1:l0 and hi = l3:l2 of each trial */
            const __m256i lo_a = _mm256_unpacklo_epi32(limb[0], limb[1]); /* trials 0,1,4,5 */
            const __m256i lo_b = _mm256_unpackhi_epi32(limb[0], limb[1]); /* trials 2,3,6,7 */
            const __m256i hi_a = _mm256_unpacklo_epi32(limb[2], limb[3]);
            const __m256i hi_b = _mm256_unpackhi_epi32(limb[2], limb[3]);
            _mm256_storeu_si256((__m256i *)(blk->t_lo[t] + j), _mm256_permute2x128_si256(lo_a, lo_b, 0x20));
            _mm256_storeu_si256((__m256i *)(blk->t_lo[t] + j + 4), _mm256_permute2x128_si256(lo_a, lo_b, 0x31));
            _mm256_storeu_si256((__m256i *)(blk->t_hi[t] + j), _mm256_permute2x128_si256(hi_a, hi_b, 0x20));
            _mm256_storeu_si256((__m256i *)(blk->t_hi[t] + j + 4), _mm256_permute2x128_si256(hi_a, hi_b, 0x31));
        }
    }
}
#endif

/* Stage 2: the exponent h = kappa u (u + 2x) (u = y / 2^b) in 2^-96 units, split into
 * its integer part n and fraction g (g_hi < 2^32); g's top 12 bits become the table
 * indices. */
static inline void dg_exponent(dg_block *blk, size_t j, uint64_t w0, const dg_plan *pl) {
    const unsigned b = pl->b;
    const uint64_t x = blk->x[j];
    const uint64_t y = (w0 & (UINT64_MAX >> 1)) >> (63 - b);
    const uint64_t u = (y << 1) << (63 - b);                             /* u * 2^64 */
    const u128 q = (((u128)(2 * x) * u) << 32) + (((u128)u * u) >> 32); /* u(u+2x) 2^96 */
    const u128 h = (u128)pl->kappa * (uint64_t)(q >> 64) + dg_mulhi(pl->kappa, (uint64_t)q);
    const uint64_t h_hi = (uint64_t)(h >> 64);
    blk->n[j] = h_hi >> 32;
    blk->g_hi[j] = h_hi & 0xFFFFFFFFu;
    blk->g_lo[j] = (uint64_t)h;
    for (int t = 0; t < HEAGG_DG_TABLES; t++)
        blk->idx[t][j] = (uint32_t)(h_hi >> (32 - HEAGG_DG_TABLE_BITS * (t + 1))) & (DG_RADIX - 1);
}

/* 2^-r in Q127 for r = rest / 2^96 < 2^-12 (rest = g mod 2^84): the Taylor polynomial
 * sum (-1)^k c_k r^k by Horner, the inner steps in Q64 with r64 = floor(r 2^76), the
 * rest in Q127 with r exact as s = r 2^128 (the reference's _exp2_poly). */
static inline u128 dg_exp2_poly(uint64_t g_hi, uint64_t g_lo, const dg_plan *pl) {
    const uint64_t rest_hi = g_hi & ((UINT64_C(1) << 20) - 1);
    const uint64_t r64 = (rest_hi << 44) | (g_lo >> 20);
    uint64_t q = pl->narrow[HEAGG_DG_POLY - HEAGG_DG_POLY_WIDE];
    for (int k = HEAGG_DG_POLY - HEAGG_DG_POLY_WIDE - 1; k >= 0; k--)
        q = pl->narrow[k] - (dg_mulhi(r64, q) >> 12);
    const uint64_t s1 = (rest_hi << 32) | (g_lo >> 32), s0 = g_lo << 32;
    u128 poly = pl->wide[HEAGG_DG_POLY_WIDE - 1] - (((u128)s1 * q + dg_mulhi(s0, q)) >> 1);
    for (int k = HEAGG_DG_POLY_WIDE - 2; k >= 0; k--)
        poly = pl->wide[k] - dg_mul_hi(s1, s0, (uint64_t)(poly >> 64), (uint64_t)poly);
    return poly;
}

/* Stage 4 for one trial: A, the accept bit, and the value written at out[p] (always
 * written; the next trial overwrites a rejected one). The products lose one bit of
 * scale each: T1 T2 in Q126, then Q125, then Q124. */
static inline uint64_t dg_finish(const dg_block *blk, size_t j, const uint64_t *w, const dg_plan *pl,
                                 int64_t *high, int64_t *low, size_t p) {
    const uint64_t w0 = w[0], w2 = w[2], w3 = w[3];
    u128 e = dg_mul_hi(blk->t_hi[0][j], blk->t_lo[0][j], blk->t_hi[1][j], blk->t_lo[1][j]);
    for (int t = 2; t < HEAGG_DG_TABLES; t++)
        e = dg_mul_hi((uint64_t)(e >> 64), (uint64_t)e, blk->t_hi[t][j], blk->t_lo[t][j]);
    e = dg_mul_hi128(e, dg_exp2_poly(blk->g_hi[j], blk->g_lo[j], pl));
    const u128 a = e >> (28 + blk->n[j]);
    const uint64_t sign = w0 >> 63;
    const uint64_t y = (w0 & (UINT64_MAX >> 1)) >> (63 - pl->b);
    const u128 z = ((u128)blk->x[j] << pl->b) | y;
    const u128 r2 = ((u128)w2 << 32) | (w3 & 0xFFFFFFFFu);
    const uint64_t zero = (uint64_t)(z == 0);
    const uint64_t accept = (uint64_t)(r2 < a) & ~(zero & sign) & 1;
    const u128 v = (z ^ ((u128)0 - sign)) + sign; /* sign ? -z : z */
    high[p] = (int64_t)(uint64_t)(v >> 32);        /* floor(v / 2^32): |v| < 2^70 */
    low[p] = (int64_t)(v & 0xFFFFFFFFu);
    return accept;
}

/* ntrials (<= DG_BLOCK) trials from w into high/low at p; returns the number accepted.
 * Instantiated twice: plain, and for AVX2 + BMI2 (mulx frees the multiplies from rdx:rax). */
__attribute__((always_inline)) static inline size_t dg_run(dg_block *blk, const uint64_t *w, size_t ntrials,
                                                           const dg_plan *pl, int avx2, int64_t *high,
                                                           int64_t *low, size_t p) {
#if HEAGG_X86
    if (avx2) {
        dg_ranks_avx2(blk->x, w, ntrials, pl);
    } else {
        dg_ranks_scalar(blk->x, w, ntrials, pl);
    }
#else
    (void)avx2;
    dg_ranks_scalar(blk->x, w, ntrials, pl);
#endif
    for (size_t j = 0; j < ntrials; j++) dg_exponent(blk, j, w[4 * j], pl);
#if HEAGG_X86
    if (avx2 && ntrials % 8 == 0) {
        dg_lookup_avx2(blk, ntrials, pl);
    } else {
        dg_lookup_scalar(blk, ntrials, pl);
    }
#else
    dg_lookup_scalar(blk, ntrials, pl);
#endif
    const size_t start = p;
    for (size_t j = 0; j < ntrials; j++) p += dg_finish(blk, j, w + 4 * j, pl, high, low, p);
    return p - start;
}

/* All trials a call runs: whole blocks while they cannot overshoot count (a trial gives
 * at most one value), then trial by trial, stopping exactly. */
__attribute__((always_inline)) static inline void dg_all(const uint64_t *words, size_t nwords, size_t count,
                                                          const dg_plan *pl, int avx2, int64_t *high,
                                                          int64_t *low, size_t *produced, size_t *consumed) {
    dg_block blk;
    size_t p = 0, i = 0;
    while (count - p >= DG_BLOCK && nwords - i >= 4 * DG_BLOCK) {
        p += dg_run(&blk, words + i, DG_BLOCK, pl, avx2, high, low, p);
        i += 4 * DG_BLOCK;
    }
    while (p < count && nwords - i >= 4) {
        p += dg_run(&blk, words + i, 1, pl, avx2, high, low, p);
        i += 4;
    }
    *produced = p;
    *consumed = i;
}

static __attribute__((noinline)) void dg_all_scalar(const uint64_t *words, size_t nwords, size_t count,
                                                    const dg_plan *pl, int64_t *high, int64_t *low,
                                                    size_t *produced, size_t *consumed) {
    dg_all(words, nwords, count, pl, 0, high, low, produced, consumed);
}

#if HEAGG_X86
static __attribute__((target("avx2,bmi2"), noinline)) void dg_all_avx2(
    const uint64_t *words, size_t nwords, size_t count, const dg_plan *pl, int64_t *high,
    int64_t *low, size_t *produced, size_t *consumed) {
    dg_all(words, nwords, count, pl, 1, high, low, produced, consumed);
}
#endif

int heagg_discrete_gaussian(int64_t *high, int64_t *low, size_t count, const uint64_t *words,
                            size_t nwords, const uint64_t *plan, size_t *produced,
                            size_t *consumed) {
    if (produced == NULL || consumed == NULL || plan == NULL) return HEAGG_ERR_ARGUMENT;
    if ((count != 0 && (high == NULL || low == NULL)) || (nwords != 0 && words == NULL))
        return HEAGG_ERR_ARGUMENT;
    if (plan[0] > 63) return HEAGG_ERR_ARGUMENT;
    dg_plan pl;
    dg_unpack(&pl, plan);
#if HEAGG_X86
    if (heagg_simd_path() != HEAGG_NTT_SCALAR && __builtin_cpu_supports("bmi2")) {
        dg_all_avx2(words, nwords, count, &pl, high, low, produced, consumed);
        return HEAGG_OK;
    }
#endif
    dg_all_scalar(words, nwords, count, &pl, high, low, produced, consumed);
    return HEAGG_OK;
}
