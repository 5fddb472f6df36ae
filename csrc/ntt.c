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
 */
#include "he_agg.h"
#include "modarith.h"

enum { ROW_W, ROW_WP, ROW_IW, ROW_IWP, ROW_S, ROW_SP };

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
static void forward_one(uint64_t *x, size_t n, uint64_t q, const uint64_t *tab) {
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

static void inverse_one(uint64_t *x, size_t n, uint64_t q, const uint64_t *tab) {
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

int heagg_ntt_forward(uint64_t *data, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli, const uint64_t *tables) {
    if (!ntt_args_ok(data, rows, nmod, n, moduli, tables)) return HEAGG_ERR_ARGUMENT;
    for (size_t r = 0; r < rows; r++) {
        for (size_t l = 0; l < nmod; l++) {
            forward_one(data + (r * nmod + l) * n, n, moduli[l],
                        tables + l * HEAGG_NTT_TABLE_WORDS * n);
        }
    }
    return HEAGG_OK;
}

int heagg_ntt_inverse(uint64_t *data, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli, const uint64_t *tables) {
    if (!ntt_args_ok(data, rows, nmod, n, moduli, tables)) return HEAGG_ERR_ARGUMENT;
    for (size_t r = 0; r < rows; r++) {
        for (size_t l = 0; l < nmod; l++) {
            inverse_one(data + (r * nmod + l) * n, n, moduli[l],
                        tables + l * HEAGG_NTT_TABLE_WORDS * n);
        }
    }
    return HEAGG_OK;
}
