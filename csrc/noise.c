/*
 * noise.c -- Marsaglia's polar method on a supply of uniform words (he_agg.h states
 * the definition; he_agg.hazmat.kernels has a numba mirror and a plain-Python
 * reference that must give the same bits).
 *
 * Bit-exactness across backends rests on three things:
 *   - every step is one IEEE double operation, in the order written (-ffp-contract=off
 *     in csrc/build_ffi.py: no FMA; x86-64 and AArch64 evaluate doubles in double);
 *   - log is the C library's `log`, the function numba's math.log and Python's math.log
 *     call in the same process; it is never vectorised (a vector log gives other bits;
 *     so never build this file with -ffast-math, which could call libmvec's);
 *   - sqrt, division and rounding to an integer are correctly rounded everywhere, in
 *     scalar and vector form alike.
 *
 * The work runs in blocks of BLOCK pairs: (1) the coordinates and s of every pair, the
 * kept ones packed into arrays; (2) log(s) of the kept ones, one libm call each;
 * (3) f and the outputs. Splitting the loop this way removes the unpredictable branch
 * from the loop with the calls, and lets steps (1) and (3) use AVX-512 (compress, vector
 * division, square root and conversion); AVX2 runs the scalar code. A block is only
 * started while it cannot overshoot count; the last outputs come from a pair-by-pair
 * loop that stops exactly.
 *
 * Measured on the development machine (Xeon with AVX-512), 2^21 int64 outputs from
 * 2.7M words: scalar 12.3 ms, avx512 6.9 ms, of which the 1.05M calls to log take about
 * 5.3 ms (one loop doing everything pair by pair, branching on s: 21 ms).
 */
#include <math.h>

#include "he_agg.h"
#include "modarith.h"

#if HEAGG_X86
#include <immintrin.h>
#endif

#define BLOCK 256 /* pairs per block; a multiple of 8 */

/* The kept pairs of one block. 8 spare entries: the vector code stores whole vectors. */
typedef struct {
    double x[BLOCK + 8], y[BLOCK + 8], s[BLOCK + 8], l[BLOCK + 8];
} polar_block;

static inline double coordinate(uint64_t w) {
    return (double)(w >> 11) * 0x1p-52 - 1.0;
}

static inline double polar_factor(double logs, double s) {
    return sqrt(-2.0 * logs / s);
}

/* One output: x f (double) or rint(x f scale) (int64; the current rounding mode, by
 * default to nearest, ties to even). */
static inline void emit(int64_t *iout, double *dout, size_t p, double xf, double scale) {
    if (iout != NULL) {
        iout[p] = (int64_t)rint(xf * scale);
    } else {
        dout[p] = xf;
    }
}

/* ---- scalar ------------------------------------------------------------------------------ */

/* Step (1) for npairs pairs of w; returns the number kept. */
static size_t accept_scalar(polar_block *b, const uint64_t *w, size_t npairs) {
    size_t k = 0;
    for (size_t j = 0; j < npairs; j++) {
        const double x = coordinate(w[2 * j]), y = coordinate(w[2 * j + 1]);
        const double s = x * x + y * y;
        b->x[k] = x;
        b->y[k] = y;
        b->s[k] = s;
        k += (s < 1.0) & (s > 0.0);
    }
    return k;
}

/* Step (3) for the kept pairs [from, k): outputs 2j and 2j + 1 of out. */
static void finish_scalar(int64_t *iout, double *dout, const polar_block *b, size_t from,
                          size_t k, double scale) {
    for (size_t j = from; j < k; j++) {
        const double f = polar_factor(b->l[j], b->s[j]);
        emit(iout, dout, 2 * j, b->x[j] * f, scale);
        emit(iout, dout, 2 * j + 1, b->y[j] * f, scale);
    }
}

#if HEAGG_X86
/* ---- AVX-512 (F + DQ) ---------------------------------------------------------------------- */

#define AVX512_KERNEL static __attribute__((target("avx512f,avx512dq"), noinline))
#define IDX512(a, b, c, d, e, f, g, h) _mm512_set_epi64(h, g, f, e, d, c, b, a)

AVX512_KERNEL size_t accept_avx512(polar_block *b, const uint64_t *w, size_t npairs) {
    const __m512i even = IDX512(0, 2, 4, 6, 8, 10, 12, 14), odd = IDX512(1, 3, 5, 7, 9, 11, 13, 15);
    const __m512d grid = _mm512_set1_pd(0x1p-52), one = _mm512_set1_pd(1.0);
    const __m512d zero = _mm512_setzero_pd();
    size_t k = 0;
    for (size_t j = 0; j < npairs; j += 8) {
        const __m512i w0 = _mm512_loadu_si512((const void *)(w + 2 * j));
        const __m512i w1 = _mm512_loadu_si512((const void *)(w + 2 * j + 8));
        const __m512i wx = _mm512_srli_epi64(_mm512_permutex2var_epi64(w0, even, w1), 11);
        const __m512i wy = _mm512_srli_epi64(_mm512_permutex2var_epi64(w0, odd, w1), 11);
        const __m512d x = _mm512_sub_pd(_mm512_mul_pd(_mm512_cvtepu64_pd(wx), grid), one);
        const __m512d y = _mm512_sub_pd(_mm512_mul_pd(_mm512_cvtepu64_pd(wy), grid), one);
        const __m512d s = _mm512_add_pd(_mm512_mul_pd(x, x), _mm512_mul_pd(y, y));
        const __mmask8 keep = _mm512_cmp_pd_mask(s, one, _CMP_LT_OQ) &
                              _mm512_cmp_pd_mask(s, zero, _CMP_GT_OQ);
        _mm512_storeu_pd(b->x + k, _mm512_maskz_compress_pd(keep, x));
        _mm512_storeu_pd(b->y + k, _mm512_maskz_compress_pd(keep, y));
        _mm512_storeu_pd(b->s + k, _mm512_maskz_compress_pd(keep, s));
        k += (size_t)__builtin_popcount(keep);
    }
    return k;
}

AVX512_KERNEL void finish_avx512(int64_t *iout, double *dout, const polar_block *b, size_t k,
                                 double scale_s) {
    const __m512i lo = IDX512(0, 8, 1, 9, 2, 10, 3, 11), hi = IDX512(4, 12, 5, 13, 6, 14, 7, 15);
    const __m512d minus2 = _mm512_set1_pd(-2.0), scale = _mm512_set1_pd(scale_s);
    const size_t vk = k & ~(size_t)7;
    for (size_t j = 0; j < vk; j += 8) {
        const __m512d f = _mm512_sqrt_pd(
            _mm512_div_pd(_mm512_mul_pd(minus2, _mm512_loadu_pd(b->l + j)), _mm512_loadu_pd(b->s + j)));
        const __m512d xf = _mm512_mul_pd(_mm512_loadu_pd(b->x + j), f);
        const __m512d yf = _mm512_mul_pd(_mm512_loadu_pd(b->y + j), f);
        if (iout != NULL) { /* cvtpd2qq rounds in the current mode, as rint */
            const __m512i xi = _mm512_cvtpd_epi64(_mm512_mul_pd(xf, scale));
            const __m512i yi = _mm512_cvtpd_epi64(_mm512_mul_pd(yf, scale));
            _mm512_storeu_si512((void *)(iout + 2 * j), _mm512_permutex2var_epi64(xi, lo, yi));
            _mm512_storeu_si512((void *)(iout + 2 * j + 8), _mm512_permutex2var_epi64(xi, hi, yi));
        } else {
            _mm512_storeu_pd(dout + 2 * j, _mm512_permutex2var_pd(xf, lo, yf));
            _mm512_storeu_pd(dout + 2 * j + 8, _mm512_permutex2var_pd(xf, hi, yf));
        }
    }
    finish_scalar(iout, dout, b, vk, k, scale_s);
}
#endif /* HEAGG_X86 */

/* ---- the kernels ------------------------------------------------------------------------------ */

/* iout != NULL: heagg_gaussian, else heagg_normal into dout (scale 1, unused). */
static int polar(int64_t *iout, double *dout, size_t count, const uint64_t *words,
                 size_t nwords, double scale, size_t *produced, size_t *consumed) {
    if (produced == NULL || consumed == NULL) return HEAGG_ERR_ARGUMENT;
    if ((count != 0 && iout == NULL && dout == NULL) || (nwords != 0 && words == NULL))
        return HEAGG_ERR_ARGUMENT;
    if (!(scale > 0.0 && scale <= (double)(UINT64_C(1) << HEAGG_GAUSSIAN_SCALE_BITS)))
        return HEAGG_ERR_ARGUMENT; /* also NaN */
#if HEAGG_X86
    const int wide = heagg_simd_path() == HEAGG_NTT_AVX512;
#endif
    polar_block b;
    size_t p = 0, i = 0;
    while (count - p >= 2 * BLOCK && nwords - i >= 2 * BLOCK) {
        int64_t *io = iout != NULL ? iout + p : NULL;
        double *dp = dout != NULL ? dout + p : NULL;
        size_t k;
#if HEAGG_X86
        k = wide ? accept_avx512(&b, words + i, BLOCK) : accept_scalar(&b, words + i, BLOCK);
#else
        k = accept_scalar(&b, words + i, BLOCK);
#endif
        for (size_t j = 0; j < k; j++) b.l[j] = log(b.s[j]);
#if HEAGG_X86
        if (wide) {
            finish_avx512(io, dp, &b, k, scale);
        } else {
            finish_scalar(io, dp, &b, 0, k, scale);
        }
#else
        finish_scalar(io, dp, &b, 0, k, scale);
#endif
        p += 2 * k;
        i += 2 * BLOCK;
    }
    while (p < count && nwords - i >= 2) { /* pair by pair, stopping exactly */
        const double x = coordinate(words[i]), y = coordinate(words[i + 1]);
        const double s = x * x + y * y;
        i += 2;
        if (!(s < 1.0 && s > 0.0)) continue;
        const double f = polar_factor(log(s), s);
        emit(iout, dout, p++, x * f, scale);
        if (p < count) emit(iout, dout, p++, y * f, scale);
    }
    *produced = p;
    *consumed = i;
    return HEAGG_OK;
}

int heagg_gaussian(int64_t *out, size_t count, const uint64_t *words, size_t nwords,
                   double scale, size_t *produced, size_t *consumed) {
    if (count != 0 && out == NULL) return HEAGG_ERR_ARGUMENT;
    return polar(out, NULL, count, words, nwords, scale, produced, consumed);
}

int heagg_normal(double *out, size_t count, const uint64_t *words, size_t nwords,
                 size_t *produced, size_t *consumed) {
    if (count != 0 && out == NULL) return HEAGG_ERR_ARGUMENT;
    return polar(NULL, out, count, words, nwords, 1.0, produced, consumed);
}

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
