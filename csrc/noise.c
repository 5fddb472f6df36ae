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

/* The acceptance threshold A(x, y): P(accept) = A / 2^96. */
static inline u128 dg_accept(uint64_t x, uint64_t y, unsigned b, uint64_t kappa,
                             const uint64_t *bits, const uint64_t *taylor, u128 ln2) {
    const uint64_t u = (y << 1) << (63 - b);                             /* u * 2^64 */
    const u128 q = (((u128)(2 * x) * u) << 32) + (((u128)u * u) >> 32); /* u(u+2x) 2^96 */
    const u128 h = (u128)kappa * (uint64_t)(q >> 64) + (((u128)kappa * (uint64_t)q) >> 64);
    const unsigned n = (unsigned)(h >> 96);
    const u128 g = h & DG_M96;
    u128 e = DG_Q127_ONE;
    for (int i = 0; i < HEAGG_DG_EXP_BITS; i++) {
        const u128 mask = (u128)0 - (u128)((g >> (95 - i)) & 1);
        e = dg_mul127(e, (dg_word2(bits + 2 * i) & mask) | (DG_Q127_ONE & ~mask));
    }
    const u128 rest = g & (((u128)1 << (96 - HEAGG_DG_EXP_BITS)) - 1);
    const u128 s = dg_mul127(rest << 31, ln2);
    u128 poly = dg_word2(taylor + 2 * HEAGG_DG_TAYLOR);
    for (int k = HEAGG_DG_TAYLOR - 1; k >= 0; k--) poly = dg_word2(taylor + 2 * k) - dg_mul127(s, poly);
    return dg_mul127(e, poly) >> (31 + n);
}

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
    u128 table[HEAGG_DG_ROWS];
    for (int r = 0; r < HEAGG_DG_ROWS; r++) table[r] = ((u128)rows[2 * r] << 32) | rows[2 * r + 1];
    size_t p = 0, i = 0;
    while (p < count && nwords - i >= 4) {
        const uint64_t w0 = words[i], w1 = words[i + 1], w2 = words[i + 2], w3 = words[i + 3];
        i += 4;
        const uint64_t sign = w0 >> 63;
        const uint64_t y = (w0 & (UINT64_MAX >> 1)) >> (63 - b);
        const u128 r1 = ((u128)w1 << 32) | (w3 >> 32);
        const u128 r2 = ((u128)w2 << 32) | (w3 & 0xFFFFFFFFu);
        uint64_t x = 0;
        for (int r = 0; r < HEAGG_DG_ROWS; r++) x += (uint64_t)(r1 < table[r]);
        const u128 z = ((u128)x << b) | y;
        const uint64_t zero = (uint64_t)(z == 0);
        const uint64_t accept = (uint64_t)(r2 < dg_accept(x, y, b, kappa, bits, taylor, ln2)) &
                                ~(zero & sign) & 1;
        const u128 v = (z ^ ((u128)0 - sign)) + sign; /* sign ? -z : z, two's complement */
        high[p] = (int64_t)(uint64_t)(v >> 32); /* floor(v / 2^32): |v| < 2^70 */
        low[p] = (int64_t)(v & 0xFFFFFFFFu);
        p += accept;
    }
    *produced = p;
    *consumed = i;
    return HEAGG_OK;
}
