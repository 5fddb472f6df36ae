/*
 * crt.c -- exact CRT lift + centering + scaling to doubles via Garner's mixed radix.
 *
 * Digits: x = sum_l y_l P_l with P_l = q_0 ... q_{l-1}, y_l in [0, q_l), where
 *   y_l = (r_l - sum_{j<l} y_j P_j) * P_l^-1  (mod q_l).
 * Sign trick: every q_l is odd, so (Q-1)/2 has the digits h_l = (q_l - 1)/2 (the sum
 * telescopes: sum (q_l - 1)/2 P_l = (Q - 1)/2). Mixed-radix order is lexicographic from
 * the top digit, hence x > (Q-1)/2 iff the first digit (from the top) that differs
 * from h_l is greater than it. Then
 *   x - Q = sum_l (y_l - (q_l - 1)) P_l - 1,
 * whose digits are all <= 0; folding the -1 into digit 0 gives d_0 = y_0 - q_0 and
 * d_l = y_l - (q_l - 1) for l > 0. Either way every digit has the same sign, so the
 * double sum  out = sum_{l = nmod-1 .. 0} d_l * radix[l]  (radix[l] = P_l / scale) has
 * no cancellation: each term carries ~3 roundings, the sum nmod more.
 * Evaluation order (top digit first, acc = acc + d * radix, no FMA: the build uses
 * -ffp-contract=off) is part of the contract: the numba and numpy backends mirror it
 * bit for bit.
 */
#include "he_agg.h"
#include "modarith.h"

int heagg_crt_to_double(double *out, const uint64_t *data, size_t rows, size_t nmod,
                        size_t n, const uint64_t *moduli, const uint64_t *crt,
                        const double *radix) {
    size_t words;
    if (!heagg_shape_ok(nmod, n, moduli) || crt == NULL || radix == NULL)
        return HEAGG_ERR_ARGUMENT;
    if (!heagg_mul_size(rows, nmod, &words) || !heagg_mul_size(words, n, &words))
        return HEAGG_ERR_ARGUMENT;
    if (rows != 0 && (out == NULL || data == NULL)) return HEAGG_ERR_ARGUMENT;
    /* Constants are fixed per call: multiply by them with Shoup's precomputed quotients
     * (one mulhi, two multiplies, one conditional subtraction) instead of 128-bit
     * Barrett. Digit 0 needs no multiply: P_0 = 1. */
    uint64_t w[HEAGG_MAX_NMOD * HEAGG_MAX_NMOD], wp[HEAGG_MAX_NMOD * HEAGG_MAX_NMOD];
    for (size_t l = 0; l < nmod; l++) {
        for (size_t j = 0; j <= l; j++) {
            const uint64_t c = crt[l * nmod + j];
            if (c >= moduli[l]) return HEAGG_ERR_ARGUMENT;
            w[l * nmod + j] = c;
            wp[l * nmod + j] = heagg_shoup(c, moduli[l]);
        }
    }
    if (nmod == 2) {  /* the dense presets: the same operations in the same order, unrolled */
        const uint64_t q0 = moduli[0], q1 = moduli[1], h0 = (q0 - 1) / 2, h1 = (q1 - 1) / 2;
        const uint64_t w10 = w[2], wp10 = wp[2], w11 = w[3], wp11 = wp[3];
        const double r0 = radix[0], r1 = radix[1];
        for (size_t r = 0; r < rows; r++) {
            const uint64_t *row = data + r * 2 * n;
            double *dst = out + r * n;
            for (size_t i = 0; i < n; i++) {
                const uint64_t y0 = row[i];
                const uint64_t s = heagg_cond_sub(heagg_mul_shoup_lazy(y0, w10, wp10, q1), q1);
                const uint64_t diff = heagg_sub_mod(row[n + i], s, q1);
                const uint64_t y1 = heagg_cond_sub(heagg_mul_shoup_lazy(diff, w11, wp11, q1), q1);
                /* negative = y1 > h1, or y1 == h1 and y0 > h0; as a mask (no branch to mispredict) */
                const uint64_t neg = 0 - (uint64_t)((y1 > h1) | ((y1 == h1) & (y0 > h0)));
                const int64_t d1 = (int64_t)(y1 - ((q1 - 1) & neg));
                const int64_t d0 = (int64_t)(y0 - (q0 & neg));
                double acc = 0.0;
                acc = acc + (double)d1 * r1;
                acc = acc + (double)d0 * r0;
                dst[i] = acc;
            }
        }
        return HEAGG_OK;
    }
    for (size_t r = 0; r < rows; r++) {
        const uint64_t *row = data + r * nmod * n;
        for (size_t i = 0; i < n; i++) {
            uint64_t y[HEAGG_MAX_NMOD];
            y[0] = row[i];
            for (size_t l = 1; l < nmod; l++) {
                const uint64_t q = moduli[l];
                uint64_t s = 0;
                for (size_t j = 0; j < l; j++) {  /* y_j < q_j may exceed q_l: Shoup takes any x */
                    const uint64_t t = heagg_cond_sub(heagg_mul_shoup_lazy(y[j], w[l * nmod + j], wp[l * nmod + j], q), q);
                    s = heagg_add_mod(s, t, q);
                }
                const uint64_t diff = heagg_sub_mod(row[l * n + i], s, q);
                y[l] = heagg_cond_sub(heagg_mul_shoup_lazy(diff, w[l * nmod + l], wp[l * nmod + l], q), q);
            }
            int negative = 0;
            for (size_t l = nmod; l-- > 0;) {
                const uint64_t h = (moduli[l] - 1) / 2;
                if (y[l] != h) {
                    negative = y[l] > h;
                    break;
                }
            }
            double acc = 0.0;
            for (size_t l = nmod; l-- > 0;) {
                int64_t d = (int64_t)y[l];
                if (negative) d -= (int64_t)(l == 0 ? moduli[0] : moduli[l] - 1);
                acc = acc + (double)d * radix[l];
            }
            out[r * n + i] = acc;
        }
    }
    return HEAGG_OK;
}
