/*
 * pointwise.c -- elementwise modular arithmetic on (rows, nmod, n) residue arrays.
 * b (and c) hold either `rows` rows or one row broadcast to all rows. Every element is
 * read before its output is written, so out may be the very same array as an input.
 */
#include "he_agg.h"
#include "modarith.h"

/* Common checks; on success *words = rows * nmod * n. */
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

HEAGG_CLONES
static void add_run(uint64_t *o, const uint64_t *x, const uint64_t *y, size_t n, uint64_t q) {
    for (size_t i = 0; i < n; i++) o[i] = heagg_add_mod(x[i], y[i], q);
}

HEAGG_CLONES
static void sub_run(uint64_t *o, const uint64_t *x, const uint64_t *y, size_t n, uint64_t q) {
    for (size_t i = 0; i < n; i++) o[i] = heagg_sub_mod(x[i], y[i], q);
}

/* Start of row r, prime l of an operand with `have` rows (1 = broadcast). */
static inline size_t seg(size_t r, size_t have, size_t l, size_t nmod, size_t n) {
    return ((have == 1 ? 0 : r) * nmod + l) * n;
}

int heagg_mul(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli) {
    if (!pw_args_ok(out, a, rows, nmod, n, moduli) || !operand_ok(b, b_rows, rows))
        return HEAGG_ERR_ARGUMENT;
    for (size_t l = 0; l < nmod; l++) {
        const heagg_barrett br = heagg_barrett_make(moduli[l]);
        for (size_t r = 0; r < rows; r++) {
            uint64_t *o = out + seg(r, rows, l, nmod, n);
            const uint64_t *x = a + seg(r, rows, l, nmod, n), *y = b + seg(r, b_rows, l, nmod, n);
            for (size_t i = 0; i < n; i++) o[i] = heagg_mul_mod(x[i], y[i], &br);
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
    for (size_t l = 0; l < nmod; l++) {
        const heagg_barrett br = heagg_barrett_make(moduli[l]);
        for (size_t r = 0; r < rows; r++) {
            uint64_t *o = out + seg(r, rows, l, nmod, n);
            const uint64_t *x = a + seg(r, rows, l, nmod, n), *y = b + seg(r, b_rows, l, nmod, n);
            const uint64_t *z = c + seg(r, c_rows, l, nmod, n);
            for (size_t i = 0; i < n; i++)
                o[i] = heagg_add_mod(heagg_mul_mod(x[i], y[i], &br), z[i], br.q);
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
    for (size_t l = 0; l < nmod; l++) {
        const uint64_t q = moduli[l], s = scalars[l], sp = heagg_shoup(s, q);
        for (size_t r = 0; r < rows; r++) {
            uint64_t *o = out + seg(r, rows, l, nmod, n);
            const uint64_t *x = a + seg(r, rows, l, nmod, n);
            for (size_t i = 0; i < n; i++)
                o[i] = heagg_cond_sub(heagg_mul_shoup_lazy(x[i], s, sp, q), q);
        }
    }
    return HEAGG_OK;
}
