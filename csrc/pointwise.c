/*
 * pointwise.c -- elementwise modular arithmetic on (rows, nmod, n) residue arrays, and
 * the conversion of signed integers into residues.
 * b (and c) hold either `rows` rows or one row broadcast to all rows. Every element is
 * read before its output is written, so out may be the very same array as an input.
 *
 * The multiplications (mul, muladd, mul_scalar) have three code paths, chosen per call
 * like the NTT's (heagg_simd_select forces one; see he_agg.h). Their outputs are fully
 * reduced, so every path gives the same words:
 *   scalar  Barrett (a varying factor) or Shoup (a fixed one) through unsigned __int128;
 *   avx2    4 lanes, avx512 8 lanes (AVX-512F + DQ), for the runs of 4 / 8 words, the
 *           remainder (n < 8) in scalar code.
 * Vector Barrett: the scalar steps t = (a b) >> (k - 1), qh = (t mu) >> (k + 1),
 * r = a b - qh q (mod 2^64, in [0, 3q)) with the two high products computed exactly as
 * floor(p y / 2^63) for p, y < 2^63 from four 32x32->64 products (as in ntt.c):
 *   t  = floor((a 2^(63-k)) (2b) / 2^63)     (a 2^(63-k) < 2^63, 2b < 2^62)
 *   qh = floor(t (mu 2^(62-k)) / 2^63)        (t < 2^62, mu 2^(62-k) < 2^63)
 * so t and qh, and then r, are the scalar values themselves.
 * add and sub are left to the compiler (target_clones), being bound by memory.
 *
 * Measured on the development machine (Xeon with AVX-512, 2 cores), a share's muladd:
 * (256, 2, 8192) words times a broadcast row plus (256, 2, 8192), 60-bit primes: scalar
 * 13.3 ms, avx2 6.7 ms, avx512 4.0 ms, where numpy's plain uint64 add of two such arrays
 * takes 3.7 ms (memory). mul_scalar: 3.8 / 3.3 / 2.3 ms.
 */
#include "he_agg.h"
#include "modarith.h"

#if HEAGG_X86
#include <immintrin.h>
#endif

/* ==== path selection ====================================================================== */

static int forced_path = HEAGG_NTT_AUTO; /* read and written with __atomic builtins */

int heagg_simd_path(void) {
    const int path = __atomic_load_n(&forced_path, __ATOMIC_RELAXED);
    if (path != HEAGG_NTT_AUTO) return path;
    if (heagg_path_supported(HEAGG_NTT_AVX512)) return HEAGG_NTT_AVX512;
    if (heagg_path_supported(HEAGG_NTT_AVX2)) return HEAGG_NTT_AVX2;
    return HEAGG_NTT_SCALAR;
}

int heagg_simd_select(int path) {
    if (path == HEAGG_NTT_AUTO || (path > 0 && heagg_path_supported(path))) {
        __atomic_store_n(&forced_path, path, __ATOMIC_RELAXED);
    } else if (path >= 0) {
        return -1;
    }
    return heagg_simd_path();
}

/* ==== argument checks ===================================================================== */

/* Common checks: shape, moduli, rows * nmod * n without overflow, pointers. */
static int pw_args_ok(const void *out, const void *a, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli) {
    size_t words;
    if (!heagg_shape_ok(nmod, n, moduli)) return 0;
    if (!heagg_mul_size(rows, nmod, &words) || !heagg_mul_size(words, n, &words)) return 0;
    return rows == 0 || (out != NULL && a != NULL);
}

static int operand_ok(const void *b, size_t b_rows, size_t rows) {
    return rows == 0 || (b != NULL && (b_rows == rows || b_rows == 1));
}

/* Start of row r, prime l of an operand with `have` rows (1 = broadcast). */
static inline size_t seg(size_t r, size_t have, size_t l, size_t nmod, size_t n) {
    return ((have == 1 ? 0 : r) * nmod + l) * n;
}

/* ==== one run of n words, per path ==========================================================
 * mul_run: o = x y mod q; with z != NULL (muladd) o = x y + z mod q.
 * scalar_run: o = x s mod q, sp = floor(s 2^64 / q). */

typedef void (*mul_run_fn)(uint64_t *o, const uint64_t *x, const uint64_t *y,
                           const uint64_t *z, size_t n, const heagg_barrett *br);
typedef void (*scalar_run_fn)(uint64_t *o, const uint64_t *x, size_t n, uint64_t q,
                              uint64_t s, uint64_t sp);

static void mul_run_scalar(uint64_t *o, const uint64_t *x, const uint64_t *y,
                           const uint64_t *z, size_t n, const heagg_barrett *br) {
    if (z == NULL) {
        for (size_t i = 0; i < n; i++) o[i] = heagg_mul_mod(x[i], y[i], br);
    } else {
        for (size_t i = 0; i < n; i++)
            o[i] = heagg_add_mod(heagg_mul_mod(x[i], y[i], br), z[i], br->q);
    }
}

static void scalar_run_scalar(uint64_t *o, const uint64_t *x, size_t n, uint64_t q,
                              uint64_t s, uint64_t sp) {
    for (size_t i = 0; i < n; i++) o[i] = heagg_cond_sub(heagg_mul_shoup_lazy(x[i], s, sp, q), q);
}

#if HEAGG_X86
/* ---- AVX-512 (F + DQ) ------------------------------------------------------------------- */

#define AVX512_FN static inline __attribute__((target("avx512f,avx512dq"), always_inline))
#define AVX512_KERNEL static __attribute__((target("avx512f,avx512dq"), noinline))

/* floor(p y / 2^63) for p, y < 2^63; ph = p >> 32, ph2 = 2 ph (see ntt.c). */
AVX512_FN __m512i mulhi63_512(__m512i y, __m512i p, __m512i ph, __m512i ph2) {
    const __m512i yh = _mm512_srli_epi64(y, 32);
    const __m512i ll = _mm512_mul_epu32(y, p);
    const __m512i hl = _mm512_mul_epu32(yh, p);
    const __m512i lh = _mm512_mul_epu32(y, ph);
    const __m512i hh2 = _mm512_mul_epu32(yh, ph2);
    const __m512i mid = _mm512_add_epi64(_mm512_add_epi64(hl, lh), _mm512_srli_epi64(ll, 32));
    return _mm512_add_epi64(hh2, _mm512_srli_epi64(mid, 31));
}

/* x >= c ? x - c : x */
AVX512_FN __m512i csub512(__m512i x, __m512i c) {
    return _mm512_min_epu64(x, _mm512_sub_epi64(x, c));
}

typedef struct {
    __m512i q, two_q, m, mh, mh2; /* m = mu 2^(62-k), mh = m >> 32, mh2 = 2 mh */
    __m128i up;                   /* shift count 63 - k                          */
} bar512;

AVX512_FN bar512 bar512_make(const heagg_barrett *br) {
    const uint64_t m = br->mu << (62 - br->k);
    const bar512 c = {_mm512_set1_epi64((long long)br->q), _mm512_set1_epi64((long long)(2 * br->q)),
                      _mm512_set1_epi64((long long)m), _mm512_set1_epi64((long long)(m >> 32)),
                      _mm512_set1_epi64((long long)((m >> 32) << 1)),
                      _mm_cvtsi64_si128((long long)(63 - br->k))};
    return c;
}

/* a b mod q for a, b < q: the scalar Barrett steps, see the top of the file. */
AVX512_FN __m512i mulmod512(__m512i a, __m512i b, const bar512 *c) {
    const __m512i big = _mm512_sll_epi64(a, c->up);
    const __m512i bh = _mm512_srli_epi64(big, 32);
    const __m512i t = mulhi63_512(_mm512_add_epi64(b, b), big, bh, _mm512_add_epi64(bh, bh));
    const __m512i qh = mulhi63_512(t, c->m, c->mh, c->mh2);
    const __m512i r = _mm512_sub_epi64(_mm512_mullo_epi64(a, b), _mm512_mullo_epi64(qh, c->q));
    return csub512(csub512(r, c->two_q), c->q);
}

AVX512_FN __m512i load512(const uint64_t *p) { return _mm512_loadu_si512((const void *)p); }
AVX512_FN void store512(uint64_t *p, __m512i v) { _mm512_storeu_si512((void *)p, v); }

AVX512_KERNEL void mul_run_avx512(uint64_t *o, const uint64_t *x, const uint64_t *y,
                                  const uint64_t *z, size_t n, const heagg_barrett *br) {
    const bar512 c = bar512_make(br);
    const size_t vn = n & ~(size_t)7;
    if (z == NULL) {
        for (size_t i = 0; i < vn; i += 8) store512(o + i, mulmod512(load512(x + i), load512(y + i), &c));
    } else {
        for (size_t i = 0; i < vn; i += 8) {
            const __m512i p = mulmod512(load512(x + i), load512(y + i), &c);
            store512(o + i, csub512(_mm512_add_epi64(p, load512(z + i)), c.q));
        }
    }
    mul_run_scalar(o + vn, x + vn, y + vn, z == NULL ? NULL : z + vn, n - vn, br);
}

AVX512_KERNEL void scalar_run_avx512(uint64_t *o, const uint64_t *x, size_t n, uint64_t qs,
                                     uint64_t s, uint64_t sp) {
    const uint64_t p = sp >> 1; /* the 2^63 form of the Shoup companion */
    const __m512i q = _mm512_set1_epi64((long long)qs), w = _mm512_set1_epi64((long long)s);
    const __m512i vp = _mm512_set1_epi64((long long)p), ph = _mm512_set1_epi64((long long)(p >> 32));
    const __m512i ph2 = _mm512_set1_epi64((long long)((p >> 32) << 1));
    const size_t vn = n & ~(size_t)7;
    for (size_t i = 0; i < vn; i += 8) {
        const __m512i a = load512(x + i);
        const __m512i quo = mulhi63_512(a, vp, ph, ph2);
        const __m512i r = _mm512_sub_epi64(_mm512_mullo_epi64(w, a), _mm512_mullo_epi64(quo, q));
        store512(o + i, csub512(r, q));
    }
    scalar_run_scalar(o + vn, x + vn, n - vn, qs, s, sp);
}

/* ---- AVX2 ------------------------------------------------------------------------------
 * No 64-bit lane multiply: low words of products from three vpmuludq. No unsigned
 * compare: every value compared is below 2^63, so the signed one serves. */

#define AVX2_FN static inline __attribute__((target("avx2"), always_inline))
#define AVX2_KERNEL static __attribute__((target("avx2"), noinline))

AVX2_FN __m256i mulhi63_256(__m256i y, __m256i p, __m256i ph, __m256i ph2) {
    const __m256i yh = _mm256_srli_epi64(y, 32);
    const __m256i ll = _mm256_mul_epu32(y, p);
    const __m256i hl = _mm256_mul_epu32(yh, p);
    const __m256i lh = _mm256_mul_epu32(y, ph);
    const __m256i hh2 = _mm256_mul_epu32(yh, ph2);
    const __m256i mid = _mm256_add_epi64(_mm256_add_epi64(hl, lh), _mm256_srli_epi64(ll, 32));
    return _mm256_add_epi64(hh2, _mm256_srli_epi64(mid, 31));
}

/* x >= c ? x - c : x, for x, c < 2^63 */
AVX2_FN __m256i csub256(__m256i x, __m256i c) {
    return _mm256_sub_epi64(x, _mm256_andnot_si256(_mm256_cmpgt_epi64(c, x), c));
}

/* a b - u v mod 2^64 (the products of the high halves vanish mod 2^64) */
AVX2_FN __m256i mullo_diff256(__m256i a, __m256i b, __m256i u, __m256i v) {
    const __m256i ah = _mm256_srli_epi64(a, 32), bh = _mm256_srli_epi64(b, 32);
    const __m256i uh = _mm256_srli_epi64(u, 32), vh = _mm256_srli_epi64(v, 32);
    const __m256i low = _mm256_sub_epi64(_mm256_mul_epu32(a, b), _mm256_mul_epu32(u, v));
    const __m256i cross = _mm256_sub_epi64(
        _mm256_add_epi64(_mm256_mul_epu32(ah, b), _mm256_mul_epu32(a, bh)),
        _mm256_add_epi64(_mm256_mul_epu32(uh, v), _mm256_mul_epu32(u, vh)));
    return _mm256_add_epi64(low, _mm256_slli_epi64(cross, 32));
}

typedef struct {
    __m256i q, two_q, m, mh, mh2;
    __m128i up;
} bar256;

AVX2_FN bar256 bar256_make(const heagg_barrett *br) {
    const uint64_t m = br->mu << (62 - br->k);
    const bar256 c = {_mm256_set1_epi64x((long long)br->q), _mm256_set1_epi64x((long long)(2 * br->q)),
                      _mm256_set1_epi64x((long long)m), _mm256_set1_epi64x((long long)(m >> 32)),
                      _mm256_set1_epi64x((long long)((m >> 32) << 1)),
                      _mm_cvtsi64_si128((long long)(63 - br->k))};
    return c;
}

AVX2_FN __m256i mulmod256(__m256i a, __m256i b, const bar256 *c) {
    const __m256i big = _mm256_sll_epi64(a, c->up);
    const __m256i bh = _mm256_srli_epi64(big, 32);
    const __m256i t = mulhi63_256(_mm256_add_epi64(b, b), big, bh, _mm256_add_epi64(bh, bh));
    const __m256i qh = mulhi63_256(t, c->m, c->mh, c->mh2);
    const __m256i r = mullo_diff256(a, b, qh, c->q);
    return csub256(csub256(r, c->two_q), c->q);
}

AVX2_FN __m256i load256(const uint64_t *p) { return _mm256_loadu_si256((const void *)p); }
AVX2_FN void store256(uint64_t *p, __m256i v) { _mm256_storeu_si256((void *)p, v); }

AVX2_KERNEL void mul_run_avx2(uint64_t *o, const uint64_t *x, const uint64_t *y,
                              const uint64_t *z, size_t n, const heagg_barrett *br) {
    const bar256 c = bar256_make(br);
    const size_t vn = n & ~(size_t)3;
    if (z == NULL) {
        for (size_t i = 0; i < vn; i += 4) store256(o + i, mulmod256(load256(x + i), load256(y + i), &c));
    } else {
        for (size_t i = 0; i < vn; i += 4) {
            const __m256i p = mulmod256(load256(x + i), load256(y + i), &c);
            store256(o + i, csub256(_mm256_add_epi64(p, load256(z + i)), c.q));
        }
    }
    mul_run_scalar(o + vn, x + vn, y + vn, z == NULL ? NULL : z + vn, n - vn, br);
}

AVX2_KERNEL void scalar_run_avx2(uint64_t *o, const uint64_t *x, size_t n, uint64_t qs,
                                 uint64_t s, uint64_t sp) {
    const uint64_t p = sp >> 1;
    const __m256i q = _mm256_set1_epi64x((long long)qs), w = _mm256_set1_epi64x((long long)s);
    const __m256i vp = _mm256_set1_epi64x((long long)p), ph = _mm256_set1_epi64x((long long)(p >> 32));
    const __m256i ph2 = _mm256_set1_epi64x((long long)((p >> 32) << 1));
    const size_t vn = n & ~(size_t)3;
    for (size_t i = 0; i < vn; i += 4) {
        const __m256i a = load256(x + i);
        const __m256i quo = mulhi63_256(a, vp, ph, ph2);
        store256(o + i, csub256(mullo_diff256(w, a, quo, q), q));
    }
    scalar_run_scalar(o + vn, x + vn, n - vn, qs, s, sp);
}
#endif /* HEAGG_X86 */

static mul_run_fn pick_mul(void) {
#if HEAGG_X86
    switch (heagg_simd_path()) {
    case HEAGG_NTT_AVX512:
        return mul_run_avx512;
    case HEAGG_NTT_AVX2:
        return mul_run_avx2;
    default:
        break;
    }
#endif
    return mul_run_scalar;
}

static scalar_run_fn pick_scalar(void) {
#if HEAGG_X86
    switch (heagg_simd_path()) {
    case HEAGG_NTT_AVX512:
        return scalar_run_avx512;
    case HEAGG_NTT_AVX2:
        return scalar_run_avx2;
    default:
        break;
    }
#endif
    return scalar_run_scalar;
}

/* ==== the kernels =========================================================================== */

HEAGG_CLONES
static void add_run(uint64_t *o, const uint64_t *x, const uint64_t *y, size_t n, uint64_t q) {
    for (size_t i = 0; i < n; i++) o[i] = heagg_add_mod(x[i], y[i], q);
}

HEAGG_CLONES
static void sub_run(uint64_t *o, const uint64_t *x, const uint64_t *y, size_t n, uint64_t q) {
    for (size_t i = 0; i < n; i++) o[i] = heagg_sub_mod(x[i], y[i], q);
}

int heagg_mul(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli) {
    if (!pw_args_ok(out, a, rows, nmod, n, moduli) || !operand_ok(b, b_rows, rows))
        return HEAGG_ERR_ARGUMENT;
    const mul_run_fn run = pick_mul();
    for (size_t l = 0; l < nmod; l++) {
        const heagg_barrett br = heagg_barrett_make(moduli[l]);
        for (size_t r = 0; r < rows; r++) {
            run(out + seg(r, rows, l, nmod, n), a + seg(r, rows, l, nmod, n),
                b + seg(r, b_rows, l, nmod, n), NULL, n, &br);
        }
    }
    return HEAGG_OK;
}

int heagg_muladd(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
                 const uint64_t *c, size_t c_rows, size_t rows, size_t nmod, size_t n,
                 const uint64_t *moduli) {
    if (!pw_args_ok(out, a, rows, nmod, n, moduli) || !operand_ok(b, b_rows, rows) ||
        !operand_ok(c, c_rows, rows))
        return HEAGG_ERR_ARGUMENT;
    const mul_run_fn run = pick_mul();
    for (size_t l = 0; l < nmod; l++) {
        const heagg_barrett br = heagg_barrett_make(moduli[l]);
        for (size_t r = 0; r < rows; r++) {
            run(out + seg(r, rows, l, nmod, n), a + seg(r, rows, l, nmod, n),
                b + seg(r, b_rows, l, nmod, n), c + seg(r, c_rows, l, nmod, n), n, &br);
        }
    }
    return HEAGG_OK;
}

int heagg_add(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli) {
    if (!pw_args_ok(out, a, rows, nmod, n, moduli) || !operand_ok(b, b_rows, rows))
        return HEAGG_ERR_ARGUMENT;
    for (size_t r = 0; r < rows; r++) {
        for (size_t l = 0; l < nmod; l++) {
            const uint64_t q = moduli[l];
            uint64_t *o = out + seg(r, rows, l, nmod, n);
            const uint64_t *x = a + seg(r, rows, l, nmod, n), *y = b + seg(r, b_rows, l, nmod, n);
            add_run(o, x, y, n, q);
        }
    }
    return HEAGG_OK;
}

int heagg_sub(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli) {
    if (!pw_args_ok(out, a, rows, nmod, n, moduli) || !operand_ok(b, b_rows, rows))
        return HEAGG_ERR_ARGUMENT;
    for (size_t r = 0; r < rows; r++) {
        for (size_t l = 0; l < nmod; l++) {
            const uint64_t q = moduli[l];
            uint64_t *o = out + seg(r, rows, l, nmod, n);
            const uint64_t *x = a + seg(r, rows, l, nmod, n), *y = b + seg(r, b_rows, l, nmod, n);
            sub_run(o, x, y, n, q);
        }
    }
    return HEAGG_OK;
}

int heagg_mul_scalar(uint64_t *out, const uint64_t *a, const uint64_t *scalars,
                     size_t rows, size_t nmod, size_t n, const uint64_t *moduli) {
    if (!pw_args_ok(out, a, rows, nmod, n, moduli) || scalars == NULL)
        return HEAGG_ERR_ARGUMENT;
    for (size_t l = 0; l < nmod; l++) {
        if (scalars[l] >= moduli[l]) return HEAGG_ERR_ARGUMENT;
    }
    const scalar_run_fn run = pick_scalar();
    for (size_t l = 0; l < nmod; l++) {
        const uint64_t q = moduli[l], s = scalars[l], sp = heagg_shoup(s, q);
        for (size_t r = 0; r < rows; r++) {
            run(out + seg(r, rows, l, nmod, n), a + seg(r, rows, l, nmod, n), n, q, s, sp);
        }
    }
    return HEAGG_OK;
}

/* ==== signed integers -> residues ============================================================
 * Per (row, prime): first the branch-free conversion for |v| < q, v + (q & (v >> 63)),
 * whose result is below q exactly when |v| < q (else v >= q, or v + q <= 0 wraps to
 * 2^63 or more); if some word is not, the run is redone exactly: the word u = v mod 2^64
 * reduced, minus 2^64 mod q where v < 0 (then u = v + 2^64), also branch-free. */

HEAGG_CLONES
static uint64_t small_run(uint64_t *o, const int64_t *v, size_t n, uint64_t q) {
    uint64_t top = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t r = (uint64_t)v[i] + (q & (uint64_t)(v[i] >> 63));
        o[i] = r;
        top = r > top ? r : top;
    }
    return top;
}

static void exact_run(uint64_t *o, const int64_t *v, size_t n, const heagg_barrett *br) {
    const uint64_t wrap = heagg_reduce64(UINT64_MAX, br) + 1; /* 2^64 mod q, at most q */
    for (size_t i = 0; i < n; i++) {
        const uint64_t negative = (uint64_t)(v[i] >> 63);
        o[i] = heagg_sub_mod(heagg_reduce64((uint64_t)v[i], br), wrap & negative, br->q);
    }
}

int heagg_signed_to_rns(uint64_t *out, const int64_t *values, size_t rows, size_t nmod,
                        size_t n, const uint64_t *moduli) {
    if (!pw_args_ok(out, values, rows, nmod, n, moduli)) return HEAGG_ERR_ARGUMENT;
    for (size_t r = 0; r < rows; r++) {
        const int64_t *v = values + r * n;
        for (size_t l = 0; l < nmod; l++) {
            uint64_t *o = out + (r * nmod + l) * n;
            if (small_run(o, v, n, moduli[l]) >= moduli[l]) {
                const heagg_barrett br = heagg_barrett_make(moduli[l]);
                exact_run(o, v, n, &br);
            }
        }
    }
    return HEAGG_OK;
}
