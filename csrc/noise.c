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
