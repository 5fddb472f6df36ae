/*
 * ntt.c -- SEAL-compatible negacyclic NTT with Harvey's lazy butterflies.
 *
 * Table block of one prime (HEAGG_NTT_TABLE_WORDS rows of n words, built by
 * he_agg.hazmat.kernels.tables.ntt_tables):
 *   row 0: w[k]  = psi^bitrev(k)        row 1: Shoup companions floor(w[k] 2^64 / q)
 *   row 2: iw[k] = psi^-bitrev(k)       row 3: Shoup companions of iw
 *   row 4: [n^-1, iw[1] * n^-1, 0 ...]  row 5: Shoup companions of row 4
 * Forward (Cooley-Tukey, stage with m groups, gap = n / 2m, group i uses w[m + i]):
 *   X, Y -> X + wY, X - wY, values kept in [0, 4q).
 * Inverse (Gentleman-Sande, stages in reverse, iw[m + i]):
 *   X, Y -> X + Y, (X - Y) iw, values kept in [0, 2q); the last stage folds in n^-1.
 *
 * Three code paths, with the same butterflies and lazy bounds (their lazy intermediate
 * values may differ by multiples of q); each output is the fully reduced residue, so
 * all three (and SEAL) agree word for word:
 *   scalar  portable C, 64x64->128 products through unsigned __int128;
 *   avx2    4 lanes (x86-64), for n >= 16;
 *   avx512  8 lanes (x86-64, AVX-512F + DQ), for n >= 64.
 * The path is picked per call from the CPU (__builtin_cpu_supports, which also checks
 * that the OS saves the vector registers); heagg_ntt_select() forces one (tests,
 * benchmarks). Smaller n fall back to the next narrower path. Elsewhere than x86-64
 * with GCC or Clang (or with -DHEAGG_NO_SIMD) only the scalar path is compiled.
 *
 * Measured on the development machine (Xeon with AVX-512, about 3 GHz), microseconds
 * per (prime, polynomial) at n = 8192 with 60-bit primes, forward / inverse: scalar
 * 69 / 60, avx2 55 / 55, avx512 28 / 29 (n = 16384: 151 / 129, 119 / 117, 60 / 61).
 * All three are bound by arithmetic, not memory (the cost per butterfly is the same at
 * n = 1024, in L1). AVX-512 runs about 22 vector uops per 8 butterflies, mostly the
 * four vpmuludq and two vpmullq (three uops each) of the Shoup product, on two ports.
 */
#include "he_agg.h"
#include "modarith.h"

#define NTT_X86 HEAGG_X86 /* the rule for hand-written vector code lives in modarith.h */
#if NTT_X86
#include <immintrin.h>
#endif

enum { ROW_W, ROW_WP, ROW_IW, ROW_IWP, ROW_S, ROW_SP };

/* ==== scalar ============================================================================ */

/* Forward butterfly on [0, 4q) values: X, Y -> X + wY, X - wY (both in [0, 4q)). */
static inline void ct_butterfly(uint64_t *X, uint64_t *Y, uint64_t W, uint64_t Wp, uint64_t q,
                                uint64_t two_q) {
    const uint64_t tx = heagg_cond_sub(*X, two_q);
    const uint64_t t = heagg_mul_shoup_lazy(*Y, W, Wp, q);
    *X = tx + t;
    *Y = tx - t + two_q;
}

/* Inverse butterfly on [0, 2q) values: X, Y -> X + Y, (X - Y) w (both in [0, 2q)). */
static inline void gs_butterfly(uint64_t *X, uint64_t *Y, uint64_t W, uint64_t Wp, uint64_t q,
                                uint64_t two_q) {
    const uint64_t tx = *X, ty = *Y;
    *X = heagg_cond_sub(tx + ty, two_q);
    *Y = heagg_mul_shoup_lazy(tx - ty + two_q, W, Wp, q);
}

/* Stages with gap >= 4 run 4 butterflies per step; gaps 2 and 1 are special-cased (the
 * generic loop is mostly overhead there), and the last stage also reduces to [0, q). */
static void forward_scalar(uint64_t *x, size_t n, uint64_t q, const uint64_t *tab) {
    const uint64_t two_q = 2 * q;
    const uint64_t *w = tab + ROW_W * n, *wp = tab + ROW_WP * n;
    size_t m = 1, gap = n >> 1;
    for (; gap >= 4; m <<= 1, gap >>= 1) {
        for (size_t i = 0; i < m; i++) {
            const uint64_t W = w[m + i], Wp = wp[m + i];
            uint64_t *X = x + 2 * i * gap, *Y = X + gap;
            for (size_t j = 0; j < gap; j += 4) {
                ct_butterfly(X + j, Y + j, W, Wp, q, two_q);
                ct_butterfly(X + j + 1, Y + j + 1, W, Wp, q, two_q);
                ct_butterfly(X + j + 2, Y + j + 2, W, Wp, q, two_q);
                ct_butterfly(X + j + 3, Y + j + 3, W, Wp, q, two_q);
            }
        }
    }
    if (gap == 2) {
        for (size_t i = 0; i < m; i++) {
            uint64_t *X = x + 4 * i;
            ct_butterfly(X, X + 2, w[m + i], wp[m + i], q, two_q);
            ct_butterfly(X + 1, X + 3, w[m + i], wp[m + i], q, two_q);
        }
        m <<= 1;
    }
    for (size_t i = 0; i < m; i++) { /* gap == 1 */
        uint64_t *X = x + 2 * i;
        ct_butterfly(X, X + 1, w[m + i], wp[m + i], q, two_q);
        X[0] = heagg_cond_sub(heagg_cond_sub(X[0], two_q), q);
        X[1] = heagg_cond_sub(heagg_cond_sub(X[1], two_q), q);
    }
}

static void inverse_scalar(uint64_t *x, size_t n, uint64_t q, const uint64_t *tab) {
    const uint64_t two_q = 2 * q;
    const uint64_t *iw = tab + ROW_IW * n, *iwp = tab + ROW_IWP * n;
    size_t m = n >> 1, gap = 1;
    if (m > 1) { /* gap == 1 */
        for (size_t i = 0; i < m; i++) {
            uint64_t *X = x + 2 * i;
            gs_butterfly(X, X + 1, iw[m + i], iwp[m + i], q, two_q);
        }
        m >>= 1;
        gap = 2;
    }
    if (m > 1) { /* gap == 2 */
        for (size_t i = 0; i < m; i++) {
            uint64_t *X = x + 4 * i;
            gs_butterfly(X, X + 2, iw[m + i], iwp[m + i], q, two_q);
            gs_butterfly(X + 1, X + 3, iw[m + i], iwp[m + i], q, two_q);
        }
        m >>= 1;
        gap = 4;
    }
    for (; m > 1; m >>= 1, gap <<= 1) {
        for (size_t i = 0; i < m; i++) {
            const uint64_t W = iw[m + i], Wp = iwp[m + i];
            uint64_t *X = x + 2 * i * gap, *Y = X + gap;
            for (size_t j = 0; j < gap; j += 4) {
                gs_butterfly(X + j, Y + j, W, Wp, q, two_q);
                gs_butterfly(X + j + 1, Y + j + 1, W, Wp, q, two_q);
                gs_butterfly(X + j + 2, Y + j + 2, W, Wp, q, two_q);
                gs_butterfly(X + j + 3, Y + j + 3, W, Wp, q, two_q);
            }
        }
    }
    /* last stage (m = 1, gap = n/2) with the n^-1 scaling folded in */
    const uint64_t *s = tab + ROW_S * n, *sp = tab + ROW_SP * n;
    uint64_t *X = x, *Y = x + gap;
    for (size_t j = 0; j < gap; j++) {
        const uint64_t tx = X[j], ty = Y[j];
        X[j] = heagg_cond_sub(heagg_mul_shoup_lazy(tx + ty, s[0], sp[0], q), q);
        Y[j] = heagg_cond_sub(heagg_mul_shoup_lazy(tx - ty + two_q, s[1], sp[1], q), q);
    }
}

#if NTT_X86
/* ==== both SIMD paths =====================================================================
 *
 * There is no 64x64->128 lane multiply, so Shoup's quotient is assembled from 32x32->64
 * products (vpmuludq), in the 2^63 form: p = floor(w 2^63 / q) = wp >> 1 (wp the table's
 * 2^64 companion). Every value multiplied is below 4q < 2^63; with y = yh 2^32 + yl and
 * p = ph 2^32 + pl (yh, ph < 2^31)
 *   Q = floor(p y / 2^63) = 2 ph yh + floor((ph yl + pl yh + floor(pl yl / 2^32)) / 2^31),
 * where the inner sum stays below 2^64, and w y - Q q lies in [0, 2q) as in Harvey's
 * lemma (p y / 2^63 is below w y / q by less than y / 2^63 < 1). Four products and
 * six adds or shifts, against nine with the 2^64 form, whose inner sum can overflow.
 * w y and Q q are only needed modulo 2^64.
 *
 * Stages with a gap of at least the vector width use one broadcast twiddle per group.
 * The last stages of the forward transform (the first of the inverse) have smaller gaps;
 * they run fused, a few vectors of consecutive words at a time, with lane permutes
 * between the stages and twiddle vectors permuted from the table rows.
 */

/* ==== AVX-512 (F + DQ) ====================================================================== */

#define AVX512_FN static inline __attribute__((target("avx512f,avx512dq"), always_inline))
#define AVX512_KERNEL static __attribute__((target("avx512f,avx512dq"), noinline))

/* The butterfly helpers work on kk independent vector pairs, every step written for all
 * of them in turn: interleaved in program order, their long dependency chains (vpmullq
 * alone has a latency of 15 cycles) overlap and both vector ports stay busy. Measured
 * best: 2 in the stages, 4 in the fused small-gap stages (16 words each). */
#define K_STAGE 2
#define K_FUSED 4
#define K_MAX 4
#define FOR_K for (int k = 0; k < kk; k++)

/* A twiddle w: the word, pl (in the low halves of p), ph and 2 ph. */
typedef struct {
    __m512i w, p, ph, ph2;
} tw512;

AVX512_FN __m512i load512(const uint64_t *p) { return _mm512_loadu_si512((const void *)p); }
AVX512_FN void store512(uint64_t *p, __m512i v) { _mm512_storeu_si512((void *)p, v); }

/* From twiddles and their 2^64 companions (8 lanes each). */
AVX512_FN tw512 tw512_make(__m512i w, __m512i wp) {
    const __m512i ph = _mm512_srli_epi64(wp, 33);
    const tw512 t = {w, _mm512_srli_epi64(wp, 1), ph, _mm512_add_epi64(ph, ph)};
    return t;
}

/* w[k] in every lane. */
AVX512_FN tw512 tw512_bcast(const uint64_t *w, const uint64_t *wp, size_t k) {
    const uint64_t p = wp[k] >> 1;
    const tw512 t = {_mm512_set1_epi64((long long)w[k]), _mm512_set1_epi64((long long)p),
                     _mm512_set1_epi64((long long)(p >> 32)),
                     _mm512_set1_epi64((long long)((p >> 32) << 1))};
    return t;
}

/* Lane i of the result takes lane idx[i] of the pair a:b (b's lanes are 8 to 15). */
#define IDX512(a, b, c, d, e, f, g, h) _mm512_set_epi64(h, g, f, e, d, c, b, a)

/* w[0], w[1] four times each (the gap-4 twiddles of 16 words). */
AVX512_FN tw512 tw512_gap4(const uint64_t *w, const uint64_t *wp) {
    const __m512i idx = IDX512(0, 0, 0, 0, 1, 1, 1, 1);
    return tw512_make(
        _mm512_permutexvar_epi64(idx, _mm512_castsi128_si512(_mm_loadu_si128((const void *)w))),
        _mm512_permutexvar_epi64(idx, _mm512_castsi128_si512(_mm_loadu_si128((const void *)wp))));
}

/* w[0] to w[3] twice each (the gap-2 twiddles of 16 words). */
AVX512_FN tw512 tw512_gap2(const uint64_t *w, const uint64_t *wp) {
    const __m512i idx = IDX512(0, 0, 1, 1, 2, 2, 3, 3);
    return tw512_make(
        _mm512_permutexvar_epi64(idx,
                                 _mm512_castsi256_si512(_mm256_loadu_si256((const void *)w))),
        _mm512_permutexvar_epi64(idx,
                                 _mm512_castsi256_si512(_mm256_loadu_si256((const void *)wp))));
}

/* x >= c ? x - c : x */
AVX512_FN __m512i csub512(__m512i x, __m512i c) {
    return _mm512_min_epu64(x, _mm512_sub_epi64(x, c));
}

/* Hides v's expression: GCC otherwise rewrites tx - (wy - Qq) + 2q as
 * (tx + 2q) + (Qq - wy), one subtraction more than reusing wy - Qq. */
AVX512_FN void opaque512(__m512i *v) { __asm__("" : "+v"(*v)); }

/* r = w y mod q in [0, 2q), for y < 2^63 (see the top of the SIMD section). */
AVX512_FN void mulshoup512_k(int kk, __m512i *r, const __m512i *y, const tw512 *t, __m512i q) {
    __m512i yh[K_MAX], ll[K_MAX], hl[K_MAX], lh[K_MAX], hh2[K_MAX], mid[K_MAX], quo[K_MAX];
    __m512i wy[K_MAX];
    FOR_K yh[k] = _mm512_srli_epi64(y[k], 32);
    FOR_K ll[k] = _mm512_mul_epu32(y[k], t[k].p);
    FOR_K hl[k] = _mm512_mul_epu32(yh[k], t[k].p);
    FOR_K lh[k] = _mm512_mul_epu32(y[k], t[k].ph);
    FOR_K hh2[k] = _mm512_mul_epu32(yh[k], t[k].ph2);
    FOR_K wy[k] = _mm512_mullo_epi64(t[k].w, y[k]);
    FOR_K mid[k] = _mm512_add_epi64(_mm512_add_epi64(hl[k], lh[k]), _mm512_srli_epi64(ll[k], 32));
    FOR_K quo[k] = _mm512_add_epi64(hh2[k], _mm512_srli_epi64(mid[k], 31));
    FOR_K r[k] = _mm512_sub_epi64(wy[k], _mm512_mullo_epi64(quo[k], q));
}

/* Forward butterflies on [0, 4q) values: X, Y -> X + wY, X - wY. */
AVX512_FN void ct512_k(int kk, __m512i *X, __m512i *Y, const tw512 *t, __m512i q,
                       __m512i two_q) {
    __m512i tx[K_MAX], ty[K_MAX];
    FOR_K tx[k] = csub512(X[k], two_q);
    mulshoup512_k(kk, ty, Y, t, q);
    FOR_K opaque512(&ty[k]);
    FOR_K X[k] = _mm512_add_epi64(tx[k], ty[k]);
    FOR_K Y[k] = _mm512_sub_epi64(_mm512_add_epi64(tx[k], two_q), ty[k]);
}

/* Inverse butterflies on [0, 2q) values: X, Y -> X + Y, (X - Y) w. */
AVX512_FN void gs512_k(int kk, __m512i *X, __m512i *Y, const tw512 *t, __m512i q,
                       __m512i two_q) {
    __m512i d[K_MAX];
    FOR_K d[k] = _mm512_add_epi64(_mm512_sub_epi64(X[k], Y[k]), two_q);
    FOR_K X[k] = csub512(_mm512_add_epi64(X[k], Y[k]), two_q);
    mulshoup512_k(kk, Y, d, t, q);
}

/* One stage with gap >= 8 (m groups), K_STAGE vector pairs at a time: of one group while
 * gap >= 8 K_STAGE, else of K_STAGE 8 / gap consecutive groups. */
AVX512_FN void stage512(int inverse, uint64_t *x, size_t m, size_t gap, const uint64_t *w,
                        const uint64_t *wp, __m512i q, __m512i two_q) {
    const int kk = K_STAGE;
    tw512 t[K_STAGE];
    __m512i a[K_STAGE], b[K_STAGE];
    if (gap >= 8 * K_STAGE) {
        for (size_t i = 0; i < m; i++) {
            uint64_t *X = x + 2 * i * gap;
            t[0] = tw512_bcast(w, wp, m + i);
            FOR_K t[k] = t[0];
            for (size_t j = 0; j < gap; j += 8 * K_STAGE) {
                FOR_K a[k] = load512(X + j + 8 * k);
                FOR_K b[k] = load512(X + j + 8 * k + gap);
                if (inverse) {
                    gs512_k(kk, a, b, t, q, two_q);
                } else {
                    ct512_k(kk, a, b, t, q, two_q);
                }
                FOR_K store512(X + j + 8 * k, a[k]);
                FOR_K store512(X + j + 8 * k + gap, b[k]);
            }
        }
    } else {
        const size_t per = gap / 8; /* vectors per group */
        for (size_t v = 0; v < m * per; v += K_STAGE) {
            uint64_t *X[K_STAGE];
            FOR_K X[k] = x + 2 * gap * ((v + k) / per) + 8 * ((v + k) % per);
            FOR_K t[k] = tw512_bcast(w, wp, m + (v + k) / per);
            FOR_K a[k] = load512(X[k]);
            FOR_K b[k] = load512(X[k] + gap);
            if (inverse) {
                gs512_k(kk, a, b, t, q, two_q);
            } else {
                ct512_k(kk, a, b, t, q, two_q);
            }
            FOR_K store512(X[k], a[k]);
            FOR_K store512(X[k] + gap, b[k]);
        }
    }
}

/* Forward stages gap = 4, 2, 1 on the K_FUSED blocks of 16 words at x + c (c a multiple
 * of 16 K_FUSED) of a size-n transform, with the final reduction into [0, q). In each
 * block the butterflies pair positions
 *   gap 4: (0-3, 8-11) with (4-7, 12-15)   gap 2: (0,1,4,5,8,9,12,13) with (2,3,6,7,...)
 *   gap 1: even with odd,
 * and the block's twiddles are w[n/8 + c'/8 ..], w[n/4 + c'/4 ..], w[n/2 + c'/2 ..] at
 * its first word c'. */
AVX512_FN void forward_last3(uint64_t *x, size_t c, size_t n, const uint64_t *w,
                             const uint64_t *wp, __m512i q, __m512i two_q) {
    const int kk = K_FUSED;
    const size_t g4 = n / 8 + c / 8, g2 = n / 4 + c / 4, g1 = n / 2 + c / 2;
    __m512i a0[K_FUSED], a1[K_FUSED], X[K_FUSED], Y[K_FUSED], X2[K_FUSED], Y2[K_FUSED];
    tw512 t[K_FUSED];
    FOR_K a0[k] = load512(x + c + 16 * k);
    FOR_K a1[k] = load512(x + c + 16 * k + 8);
    FOR_K X[k] = _mm512_shuffle_i64x2(a0[k], a1[k], 0x44);
    FOR_K Y[k] = _mm512_shuffle_i64x2(a0[k], a1[k], 0xEE);
    FOR_K t[k] = tw512_gap4(w + g4 + 2 * k, wp + g4 + 2 * k);
    ct512_k(kk, X, Y, t, q, two_q);
    FOR_K X2[k] = _mm512_permutex2var_epi64(X[k], IDX512(0, 1, 8, 9, 4, 5, 12, 13), Y[k]);
    FOR_K Y2[k] = _mm512_permutex2var_epi64(X[k], IDX512(2, 3, 10, 11, 6, 7, 14, 15), Y[k]);
    FOR_K t[k] = tw512_gap2(w + g2 + 4 * k, wp + g2 + 4 * k);
    ct512_k(kk, X2, Y2, t, q, two_q);
    FOR_K X[k] = _mm512_unpacklo_epi64(X2[k], Y2[k]);
    FOR_K Y[k] = _mm512_unpackhi_epi64(X2[k], Y2[k]);
    FOR_K t[k] = tw512_make(load512(w + g1 + 8 * k), load512(wp + g1 + 8 * k));
    ct512_k(kk, X, Y, t, q, two_q);
    FOR_K X[k] = csub512(csub512(X[k], two_q), q);
    FOR_K Y[k] = csub512(csub512(Y[k], two_q), q);
    FOR_K store512(x + c + 16 * k,
                   _mm512_permutex2var_epi64(X[k], IDX512(0, 8, 1, 9, 2, 10, 3, 11), Y[k]));
    FOR_K store512(x + c + 16 * k + 8,
                   _mm512_permutex2var_epi64(X[k], IDX512(4, 12, 5, 13, 6, 14, 7, 15), Y[k]));
}

/* Inverse stages gap = 1, 2, 4 on the K_FUSED blocks of 16 words at x + c. */
AVX512_FN void inverse_first3(uint64_t *x, size_t c, size_t n, const uint64_t *w,
                              const uint64_t *wp, __m512i q, __m512i two_q) {
    const int kk = K_FUSED;
    const size_t g4 = n / 8 + c / 8, g2 = n / 4 + c / 4, g1 = n / 2 + c / 2;
    __m512i a0[K_FUSED], a1[K_FUSED], X[K_FUSED], Y[K_FUSED], X2[K_FUSED], Y2[K_FUSED];
    tw512 t[K_FUSED];
    FOR_K a0[k] = load512(x + c + 16 * k);
    FOR_K a1[k] = load512(x + c + 16 * k + 8);
    FOR_K X[k] = _mm512_permutex2var_epi64(a0[k], IDX512(0, 2, 4, 6, 8, 10, 12, 14), a1[k]);
    FOR_K Y[k] = _mm512_permutex2var_epi64(a0[k], IDX512(1, 3, 5, 7, 9, 11, 13, 15), a1[k]);
    FOR_K t[k] = tw512_make(load512(w + g1 + 8 * k), load512(wp + g1 + 8 * k));
    gs512_k(kk, X, Y, t, q, two_q);
    FOR_K X2[k] = _mm512_unpacklo_epi64(X[k], Y[k]);
    FOR_K Y2[k] = _mm512_unpackhi_epi64(X[k], Y[k]);
    FOR_K t[k] = tw512_gap2(w + g2 + 4 * k, wp + g2 + 4 * k);
    gs512_k(kk, X2, Y2, t, q, two_q);
    FOR_K X[k] = _mm512_permutex2var_epi64(X2[k], IDX512(0, 1, 8, 9, 4, 5, 12, 13), Y2[k]);
    FOR_K Y[k] = _mm512_permutex2var_epi64(X2[k], IDX512(2, 3, 10, 11, 6, 7, 14, 15), Y2[k]);
    FOR_K t[k] = tw512_gap4(w + g4 + 2 * k, wp + g4 + 2 * k);
    gs512_k(kk, X, Y, t, q, two_q);
    FOR_K store512(x + c + 16 * k, _mm512_shuffle_i64x2(X[k], Y[k], 0x44));
    FOR_K store512(x + c + 16 * k + 8, _mm512_shuffle_i64x2(X[k], Y[k], 0xEE));
}

#define AVX512_MIN_N (16 * K_FUSED)

AVX512_KERNEL void forward_avx512(uint64_t *x, size_t n, uint64_t qs, const uint64_t *tab) {
    const uint64_t *w = tab + ROW_W * n, *wp = tab + ROW_WP * n;
    const __m512i q = _mm512_set1_epi64((long long)qs);
    const __m512i two_q = _mm512_set1_epi64((long long)(2 * qs));
    size_t m = 1, gap = n >> 1;
    for (; gap >= 8; m <<= 1, gap >>= 1) stage512(0, x, m, gap, w, wp, q, two_q);
    for (size_t c = 0; c < n; c += 16 * K_FUSED) forward_last3(x, c, n, w, wp, q, two_q);
}

AVX512_KERNEL void inverse_avx512(uint64_t *x, size_t n, uint64_t qs, const uint64_t *tab) {
    const uint64_t *w = tab + ROW_IW * n, *wp = tab + ROW_IWP * n;
    const __m512i q = _mm512_set1_epi64((long long)qs);
    const __m512i two_q = _mm512_set1_epi64((long long)(2 * qs));
    for (size_t c = 0; c < n; c += 16 * K_FUSED) inverse_first3(x, c, n, w, wp, q, two_q);
    size_t m = n >> 4, gap = 8;
    for (; m > 1; m >>= 1, gap <<= 1) stage512(1, x, m, gap, w, wp, q, two_q);
    /* the last stage (m = 1) with n^-1 folded in, as in inverse_scalar */
    const int kk = K_STAGE;
    const uint64_t *s = tab + ROW_S * n, *sp = tab + ROW_SP * n;
    tw512 ts[K_STAGE], ti[K_STAGE];
    FOR_K ts[k] = tw512_bcast(s, sp, 0);
    FOR_K ti[k] = tw512_bcast(s, sp, 1);
    for (size_t j = 0; j < gap; j += 8 * K_STAGE) {
        __m512i a[K_STAGE], b[K_STAGE], u[K_STAGE], v[K_STAGE];
        FOR_K a[k] = load512(x + j + 8 * k);
        FOR_K b[k] = load512(x + gap + j + 8 * k);
        FOR_K u[k] = _mm512_add_epi64(a[k], b[k]);
        FOR_K v[k] = _mm512_add_epi64(_mm512_sub_epi64(a[k], b[k]), two_q);
        mulshoup512_k(kk, u, u, ts, q);
        mulshoup512_k(kk, v, v, ti, q);
        FOR_K store512(x + j + 8 * k, csub512(u[k], q));
        FOR_K store512(x + gap + j + 8 * k, csub512(v[k], q));
    }
}

/* ==== AVX2 ====================================================================================
 * Four lanes, one vector pair at a time. No 64-bit lane multiply either: w y and Q q mod
 * 2^64 take three vpmuludq each. No unsigned compare: every value is below 2^63, so the
 * signed one serves. */

#define AVX2_FN static inline __attribute__((target("avx2"), always_inline))
#define AVX2_KERNEL static __attribute__((target("avx2"), noinline))

typedef struct {
    __m256i w, wh, p, ph, ph2; /* as tw512, plus the high halves of w */
} tw256;

typedef struct {
    __m256i q, qh, two_q; /* qh: q's high half */
} mod256;

AVX2_FN __m256i load256(const uint64_t *p) { return _mm256_loadu_si256((const void *)p); }
AVX2_FN void store256(uint64_t *p, __m256i v) { _mm256_storeu_si256((void *)p, v); }

AVX2_FN mod256 mod256_make(uint64_t q) {
    const mod256 md = {_mm256_set1_epi64x((long long)q), _mm256_set1_epi64x((long long)(q >> 32)),
                       _mm256_set1_epi64x((long long)(2 * q))};
    return md;
}

AVX2_FN tw256 tw256_make(__m256i w, __m256i wp) {
    const __m256i ph = _mm256_srli_epi64(wp, 33);
    const tw256 t = {w, _mm256_srli_epi64(w, 32), _mm256_srli_epi64(wp, 1), ph,
                     _mm256_add_epi64(ph, ph)};
    return t;
}

AVX2_FN tw256 tw256_bcast(const uint64_t *w, const uint64_t *wp, size_t k) {
    const uint64_t p = wp[k] >> 1;
    const tw256 t = {_mm256_set1_epi64x((long long)w[k]), _mm256_set1_epi64x((long long)(w[k] >> 32)),
                     _mm256_set1_epi64x((long long)p), _mm256_set1_epi64x((long long)(p >> 32)),
                     _mm256_set1_epi64x((long long)((p >> 32) << 1))};
    return t;
}

/* w[0], w[1] twice each (the gap-2 twiddles of 8 words). */
AVX2_FN tw256 tw256_gap2(const uint64_t *w, const uint64_t *wp) {
    return tw256_make(
        _mm256_permute4x64_epi64(_mm256_castsi128_si256(_mm_loadu_si128((const void *)w)), 0x50),
        _mm256_permute4x64_epi64(_mm256_castsi128_si256(_mm_loadu_si128((const void *)wp)), 0x50));
}

/* x >= c ? x - c : x, for x, c < 2^63 */
AVX2_FN __m256i csub256(__m256i x, __m256i c) {
    return _mm256_sub_epi64(x, _mm256_andnot_si256(_mm256_cmpgt_epi64(c, x), c));
}

AVX2_FN __m256i mulshoup256(__m256i y, tw256 t, mod256 md) {
    const __m256i yh = _mm256_srli_epi64(y, 32);
    const __m256i ll = _mm256_mul_epu32(y, t.p);
    const __m256i hl = _mm256_mul_epu32(yh, t.p);
    const __m256i lh = _mm256_mul_epu32(y, t.ph);
    const __m256i hh2 = _mm256_mul_epu32(yh, t.ph2);
    const __m256i mid = _mm256_add_epi64(_mm256_add_epi64(hl, lh), _mm256_srli_epi64(ll, 32));
    const __m256i quo = _mm256_add_epi64(hh2, _mm256_srli_epi64(mid, 31));
    /* w y - quo q mod 2^64: the low halves' products, plus the cross products shifted
     * by 32 (the high halves' products vanish mod 2^64) */
    const __m256i qoh = _mm256_srli_epi64(quo, 32);
    const __m256i low = _mm256_sub_epi64(_mm256_mul_epu32(t.w, y), _mm256_mul_epu32(quo, md.q));
    const __m256i cross = _mm256_sub_epi64(
        _mm256_add_epi64(_mm256_mul_epu32(t.wh, y), _mm256_mul_epu32(t.w, yh)),
        _mm256_add_epi64(_mm256_mul_epu32(qoh, md.q), _mm256_mul_epu32(quo, md.qh)));
    return _mm256_add_epi64(low, _mm256_slli_epi64(cross, 32));
}

AVX2_FN void ct256(__m256i *X, __m256i *Y, tw256 t, mod256 md) {
    const __m256i tx = csub256(*X, md.two_q);
    const __m256i ty = mulshoup256(*Y, t, md);
    *X = _mm256_add_epi64(tx, ty);
    *Y = _mm256_add_epi64(_mm256_sub_epi64(tx, ty), md.two_q);
}

AVX2_FN void gs256(__m256i *X, __m256i *Y, tw256 t, mod256 md) {
    const __m256i tx = *X, ty = *Y;
    *X = csub256(_mm256_add_epi64(tx, ty), md.two_q);
    *Y = mulshoup256(_mm256_add_epi64(_mm256_sub_epi64(tx, ty), md.two_q), t, md);
}

/* One stage with gap >= 4. */
AVX2_FN void stage256(int inverse, uint64_t *x, size_t m, size_t gap, const uint64_t *w,
                      const uint64_t *wp, mod256 md) {
    for (size_t i = 0; i < m; i++) {
        const tw256 t = tw256_bcast(w, wp, m + i);
        uint64_t *X = x + 2 * i * gap, *Y = X + gap;
        for (size_t j = 0; j < gap; j += 4) {
            __m256i a = load256(X + j), b = load256(Y + j);
            if (inverse) {
                gs256(&a, &b, t, md);
            } else {
                ct256(&a, &b, t, md);
            }
            store256(X + j, a);
            store256(Y + j, b);
        }
    }
}

/* Forward stages gap = 2, 1 on the 8 words at x + c, with the final reduction; the
 * butterflies pair positions (0,1,4,5) with (2,3,6,7), then even with odd. */
AVX2_FN void forward_last2(uint64_t *x, size_t c, size_t n, const uint64_t *w,
                           const uint64_t *wp, mod256 md) {
    const size_t g2 = n / 4 + c / 4, g1 = n / 2 + c / 2;
    const __m256i a0 = load256(x + c), a1 = load256(x + c + 4);
    __m256i X = _mm256_permute2x128_si256(a0, a1, 0x20);
    __m256i Y = _mm256_permute2x128_si256(a0, a1, 0x31);
    ct256(&X, &Y, tw256_gap2(w + g2, wp + g2), md);
    __m256i X1 = _mm256_unpacklo_epi64(X, Y), Y1 = _mm256_unpackhi_epi64(X, Y);
    ct256(&X1, &Y1, tw256_make(load256(w + g1), load256(wp + g1)), md);
    X1 = csub256(csub256(X1, md.two_q), md.q);
    Y1 = csub256(csub256(Y1, md.two_q), md.q);
    X = _mm256_unpacklo_epi64(X1, Y1); /* positions 0, 1, 4, 5 */
    Y = _mm256_unpackhi_epi64(X1, Y1); /* positions 2, 3, 6, 7 */
    store256(x + c, _mm256_permute2x128_si256(X, Y, 0x20));
    store256(x + c + 4, _mm256_permute2x128_si256(X, Y, 0x31));
}

/* Inverse stages gap = 1, 2 on the 8 words at x + c. */
AVX2_FN void inverse_first2(uint64_t *x, size_t c, size_t n, const uint64_t *w,
                            const uint64_t *wp, mod256 md) {
    const size_t g2 = n / 4 + c / 4, g1 = n / 2 + c / 2;
    const __m256i a0 = load256(x + c), a1 = load256(x + c + 4);
    const __m256i l = _mm256_permute2x128_si256(a0, a1, 0x20); /* positions 0, 1, 4, 5 */
    const __m256i h = _mm256_permute2x128_si256(a0, a1, 0x31); /* positions 2, 3, 6, 7 */
    __m256i X1 = _mm256_unpacklo_epi64(l, h), Y1 = _mm256_unpackhi_epi64(l, h);
    gs256(&X1, &Y1, tw256_make(load256(w + g1), load256(wp + g1)), md);
    __m256i X = _mm256_unpacklo_epi64(X1, Y1), Y = _mm256_unpackhi_epi64(X1, Y1);
    gs256(&X, &Y, tw256_gap2(w + g2, wp + g2), md);
    store256(x + c, _mm256_permute2x128_si256(X, Y, 0x20));
    store256(x + c + 4, _mm256_permute2x128_si256(X, Y, 0x31));
}

#define AVX2_MIN_N 16

AVX2_KERNEL void forward_avx2(uint64_t *x, size_t n, uint64_t qs, const uint64_t *tab) {
    const uint64_t *w = tab + ROW_W * n, *wp = tab + ROW_WP * n;
    const mod256 md = mod256_make(qs);
    size_t m = 1, gap = n >> 1;
    for (; gap >= 4; m <<= 1, gap >>= 1) stage256(0, x, m, gap, w, wp, md);
    for (size_t c = 0; c < n; c += 8) forward_last2(x, c, n, w, wp, md);
}

AVX2_KERNEL void inverse_avx2(uint64_t *x, size_t n, uint64_t qs, const uint64_t *tab) {
    const uint64_t *w = tab + ROW_IW * n, *wp = tab + ROW_IWP * n;
    const mod256 md = mod256_make(qs);
    for (size_t c = 0; c < n; c += 8) inverse_first2(x, c, n, w, wp, md);
    size_t m = n >> 3, gap = 4;
    for (; m > 1; m >>= 1, gap <<= 1) stage256(1, x, m, gap, w, wp, md);
    const uint64_t *s = tab + ROW_S * n, *sp = tab + ROW_SP * n;
    const tw256 ts = tw256_bcast(s, sp, 0), ti = tw256_bcast(s, sp, 1);
    for (size_t j = 0; j < gap; j += 4) {
        const __m256i a = load256(x + j), b = load256(x + gap + j);
        const __m256i u = mulshoup256(_mm256_add_epi64(a, b), ts, md);
        const __m256i v = mulshoup256(_mm256_add_epi64(_mm256_sub_epi64(a, b), md.two_q), ti, md);
        store256(x + j, csub256(u, md.q));
        store256(x + gap + j, csub256(v, md.q));
    }
}
#endif /* NTT_X86 */

/* ==== dispatch ================================================================================ */

typedef void (*ntt_fn)(uint64_t *x, size_t n, uint64_t q, const uint64_t *tab);

static int forced_path = HEAGG_NTT_AUTO; /* read and written with __atomic builtins */

static int current_path(void) {
    const int path = __atomic_load_n(&forced_path, __ATOMIC_RELAXED);
    if (path != HEAGG_NTT_AUTO) return path;
    if (heagg_path_supported(HEAGG_NTT_AVX512)) return HEAGG_NTT_AVX512;
    if (heagg_path_supported(HEAGG_NTT_AVX2)) return HEAGG_NTT_AVX2;
    return HEAGG_NTT_SCALAR;
}

int heagg_ntt_select(int path) {
    if (path == HEAGG_NTT_AUTO || (path > 0 && heagg_path_supported(path))) {
        __atomic_store_n(&forced_path, path, __ATOMIC_RELAXED);
    } else if (path >= 0) {
        return -1;
    }
    return current_path();
}

/* The kernel for one (prime, polynomial): the selected path, or a narrower one for
 * degrees below its minimum. */
static ntt_fn pick(int inverse, size_t n) {
#if NTT_X86
    const int path = current_path();
    if (path == HEAGG_NTT_AVX512 && n >= AVX512_MIN_N) {
        return inverse ? inverse_avx512 : forward_avx512;
    }
    if (path >= HEAGG_NTT_AVX2 && n >= AVX2_MIN_N && heagg_path_supported(HEAGG_NTT_AVX2)) {
        return inverse ? inverse_avx2 : forward_avx2;
    }
#endif
    (void)n;
    return inverse ? inverse_scalar : forward_scalar;
}

/* Shape, modulus and a cheap table sanity check: w[1]^2 == -1 mod q (psi^n = -1). */
static int ntt_args_ok(const uint64_t *data, size_t rows, size_t nmod, size_t n,
                       const uint64_t *moduli, const uint64_t *tables) {
    size_t words;
    if (!heagg_shape_ok(nmod, n, moduli) || tables == NULL) return 0;
    if (!heagg_mul_size(rows, nmod, &words) || !heagg_mul_size(words, n, &words)) return 0;
    if (rows != 0 && data == NULL) return 0;
    for (size_t l = 0; l < nmod; l++) {
        const uint64_t *tab = tables + l * HEAGG_NTT_TABLE_WORDS * n;
        const heagg_barrett br = heagg_barrett_make(moduli[l]);
        const uint64_t w1 = tab[ROW_W * n + 1];
        if (w1 >= moduli[l] || heagg_mul_mod(w1, w1, &br) != moduli[l] - 1) return 0;
    }
    return 1;
}

static int ntt_run(int inverse, uint64_t *data, size_t rows, size_t nmod, size_t n,
                   const uint64_t *moduli, const uint64_t *tables) {
    if (!ntt_args_ok(data, rows, nmod, n, moduli, tables)) return HEAGG_ERR_ARGUMENT;
    const ntt_fn fn = pick(inverse, n);
    for (size_t r = 0; r < rows; r++) {
        for (size_t l = 0; l < nmod; l++) {
            fn(data + (r * nmod + l) * n, n, moduli[l], tables + l * HEAGG_NTT_TABLE_WORDS * n);
        }
    }
    return HEAGG_OK;
}

int heagg_ntt_forward(uint64_t *data, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli, const uint64_t *tables) {
    return ntt_run(0, data, rows, nmod, n, moduli, tables);
}

int heagg_ntt_inverse(uint64_t *data, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli, const uint64_t *tables) {
    return ntt_run(1, data, rows, nmod, n, moduli, tables);
}
