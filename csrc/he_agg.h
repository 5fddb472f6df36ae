/*
 * he_agg.h -- the whole C ABI of he_agg's native core.
 *
 * Everything between the CDEF markers is read verbatim by csrc/build_ffi.py as the
 * cffi cdef, so it must stay plain declarations (no #include, no macros beyond the
 * integer #defines cffi understands).
 *
 * Conventions shared by every kernel
 *   - Residue arrays are C-contiguous uint64 of shape (rows, nmod, n): row-major over
 *     rows (ciphertext polynomials), then the RNS prime index l in [0, nmod), then the
 *     coefficient index in [0, n). Row r, prime l is reduced modulo moduli[l].
 *   - Moduli are odd primes below 2^61; n is a power of two in [2, 2^17].
 *   - Outputs of every kernel are fully reduced into [0, q).
 *   - Kernels never allocate on the heap and never print. They return HEAGG_OK or an
 *     error code; heagg_strerror() names it. On error nothing the caller owns is left
 *     modified (see each kernel).
 *   - The host is little-endian (checked once by heagg_self_check()).
 */
#ifndef HE_AGG_H
#define HE_AGG_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
#define HEAGG_OK 0
#define HEAGG_ERR_RESIDUE 1  /* an input residue is >= its modulus              */
#define HEAGG_ERR_ARGUMENT 2 /* a size, pointer or modulus the kernel refuses    */
#define HEAGG_ERR_PLATFORM 3 /* the host is not little-endian / lacks 128-bit mul */

#define HEAGG_MAX_MODULUS_BITS 61
#define HEAGG_MAX_NMOD 16

/* Where heagg_sum_ciphertexts found a bad residue. */
typedef struct {
    size_t source; /* index of the offending source (client); nsrc = the accumulator */
    size_t word;   /* flat word index inside that source's (count, polys, nmod, n)   */
} heagg_fault;

const char *heagg_strerror(int code);
int heagg_self_check(void);

/*
 * acc += sum over sources s of source s, elementwise modulo the prime of each word.
 *
 * acc      : (count, polys, nmod, n) uint64, aligned, every word already < its prime.
 * bases    : nsrc byte pointers; source s, ciphertext c lives at
 *            bases[s] + offsets[s * count + c] as polys*nmod*n little-endian uint64
 *            words with ANY alignment (TenSEAL blobs put them at odd offsets).
 * Every source word (and every acc word) is checked against its prime in the same pass
 * that adds it. On a bad word: returns HEAGG_ERR_RESIDUE, fills *fault, and acc is
 * restored to its value on entry (the additions already made are undone exactly).
 * The fault reported does not depend on blocking: a bad acc word first (source ==
 * nsrc), else the lowest source index holding a bad word, and its lowest word index.
 * Lazy reduction: partial sums stay unreduced while they cannot overflow 64 bits.
 */
int heagg_sum_ciphertexts(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                          const uint64_t *moduli, const uint8_t *const *bases,
                          const uint64_t *offsets, size_t nsrc, heagg_fault *fault);

/*
 * As heagg_sum_ciphertexts, but source s, ciphertext c is the concatenation of nseg byte
 * segments (TenSEAL's zstd frames of raw blocks: the words are split over a few blocks,
 * each behind a 3-byte header). Segment k of (s, c) is at byte offset
 * segments[2 * ((s * count + c) * nseg + k)] from bases[s]; the next word is its
 * CUMULATIVE END, the byte of the concatenation where it stops (segment k holds bytes
 * [end[k-1], end[k]) of it, end[-1] = 0). The ends of one (s, c) are nondecreasing and
 * the last is polys*nmod*n*8 (else HEAGG_ERR_ARGUMENT, nothing touched); zero-length
 * segments are allowed (padding); a word may straddle two or more segments; the segment
 * of a word is found by binary search (O(log nseg)). Only bytes inside the segments are read. Validation, lazy reduction,
 * rollback and the fault reported are exactly those of heagg_sum_ciphertexts (fault->word
 * counts words of the concatenation).
 */
int heagg_sum_segmented(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                        const uint64_t *moduli, const uint8_t *const *bases,
                        const uint64_t *segments, size_t nseg, size_t nsrc, heagg_fault *fault);

/*
 * As heagg_sum_ciphertexts, but every source ciphertext is PACKED: its polys*nmod rows
 * in order, row (p, l) holding n residues of b_l = bitlen(moduli[l]) bits, residue i at
 * bits [i*b_l, (i+1)*b_l) of the row read as a little-endian bit string, the row padded
 * with zero bits to ceil(n*b_l/64) whole 64-bit words (no padding for n >= 64). Source s,
 * ciphertext c starts at bases[s] + offsets[s * count + c], any alignment, and is
 * polys * sum_l ceil(n*b_l/64) * 8 bytes. Residues are unpacked inside the summing pass;
 * validation, lazy reduction, rollback and the fault reported (fault->word counts
 * UNPACKED words, as for heagg_sum_ciphertexts) are exactly those of
 * heagg_sum_ciphertexts. Padding bits are not read (callers check them).
 */
int heagg_sum_packed(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                     const uint64_t *moduli, const uint8_t *const *bases, const uint64_t *offsets,
                     size_t nsrc, heagg_fault *fault);

/*
 * acc -= the sources, elementwise mod q: the exact undo of a SUCCESSFUL heagg_sum_ciphertexts
 * (nseg == 0, packed == 0: layout = offsets), heagg_sum_segmented (nseg > 0: layout =
 * the same cumulative segment table) or heagg_sum_packed (packed != 0, nseg == 0) of the
 * same sources, for rolling back a sum split over threads when another slice failed.
 * Precondition: every source word < its prime (a successful sum proved it). Returns
 * HEAGG_ERR_RESIDUE only if an acc word is >= its prime (a broken precondition).
 */
int heagg_sum_undo(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                   const uint64_t *moduli, const uint8_t *const *bases, const uint64_t *layout,
                   size_t nseg, size_t nsrc, int packed);

/*
 * Packed rows -> words: out (rows, nmod, n) from the packed layout of heagg_sum_packed
 * (src holds rows * sum_l ceil(n*b_l/64) words, any alignment). Not range-checked: the
 * values are < 2^b_l, callers check them against q_l.
 */
int heagg_unpack_residues(uint64_t *out, const uint8_t *src, size_t rows, size_t nmod, size_t n,
                          const uint64_t *moduli);

/*
 * SEAL-compatible negacyclic NTT, in place on (rows, nmod, n).
 * Forward:  natural-order input, bit-reversed output, no scaling:
 *           out[j] = sum_i a[i] * psi^((2*bitrev(j)+1)*i) mod q.
 * Inverse:  exact inverse of the forward transform (bit-reversed input, natural
 *           output, including the multiplication by n^-1).
 * tables   : nmod blocks as built by he_agg.hazmat.kernels.ntt_tables(); the layout
 *            of one block is private to the kernels (see HEAGG_NTT_TABLE_WORDS).
 * Inputs must be < q (not re-checked: callers pass validated data).
 */
#define HEAGG_NTT_TABLE_WORDS 6 /* table words per coefficient per prime: tables are (nmod, 6, n) */
int heagg_ntt_forward(uint64_t *data, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli, const uint64_t *tables);
int heagg_ntt_inverse(uint64_t *data, size_t rows, size_t nmod, size_t n,
                      const uint64_t *moduli, const uint64_t *tables);

/*
 * The NTT's code path. Every path gives the same words; HEAGG_NTT_AUTO (the default)
 * uses the widest one the CPU supports, and tests force the others to keep them covered.
 * heagg_ntt_select(path) sets the path for the whole process and returns the path now
 * in use; for a path this build or CPU lacks it changes nothing and returns -1.
 * heagg_ntt_select(-1) only returns the path in use. A path that needs a larger n
 * (avx2: n >= 16, avx512: n >= 64) leaves smaller transforms to the next narrower one.
 */
#define HEAGG_NTT_AUTO 0
#define HEAGG_NTT_SCALAR 1
#define HEAGG_NTT_AVX2 2
#define HEAGG_NTT_AVX512 3
int heagg_ntt_select(int path);

/*
 * Pointwise modular arithmetic on (rows, nmod, n) arrays. `b` (and `c`) have either
 * `rows` rows or exactly 1 row (then broadcast to every row): b_rows / c_rows say which.
 * out may alias a, b or c.
 *   mul:     out = a * b mod q
 *   muladd:  out = a * b + c mod q
 *   add:     out = a + b mod q
 *   sub:     out = a - b mod q
 *   scalar:  out = a * s[l] mod q   (s has nmod entries, each < q_l)
 */
int heagg_mul(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli);
int heagg_muladd(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
                 const uint64_t *c, size_t c_rows, size_t rows, size_t nmod, size_t n,
                 const uint64_t *moduli);
int heagg_add(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli);
int heagg_sub(uint64_t *out, const uint64_t *a, const uint64_t *b, size_t b_rows,
              size_t rows, size_t nmod, size_t n, const uint64_t *moduli);
int heagg_mul_scalar(uint64_t *out, const uint64_t *a, const uint64_t *scalars,
                     size_t rows, size_t nmod, size_t n, const uint64_t *moduli);

/*
 * Exact CRT lift, centering and scaling, (rows, nmod, n) residues -> (rows, n) doubles.
 * For each coefficient with residues r_l, let x in [0, Q) be the CRT lift (Q = prod q_l)
 * and x' = x if x <= (Q-1)/2 else x - Q. out = x' * (1/scale), evaluated through
 * Garner's mixed-radix digits so no cancellation occurs (relative error ~ nmod * 2^-52).
 * crt      : (nmod, nmod) uint64: crt[l][j] = (q_0 ... q_{j-1}) mod q_l for j < l,
 *            crt[l][l] = (q_0 ... q_{l-1})^-1 mod q_l; entries with j > l are ignored.
 * radix    : nmod doubles, radix[l] = (q_0 ... q_{l-1}) / scale.
 */
int heagg_crt_to_double(double *out, const uint64_t *data, size_t rows, size_t nmod,
                        size_t n, const uint64_t *moduli, const uint64_t *crt,
                        const double *radix);

/*
 * The code path of heagg_mul, heagg_muladd, heagg_mul_scalar and heagg_discrete_gaussian:
 * as heagg_ntt_select (same codes, same rules, every path gives the same bits), but a
 * setting of its own, so either family can be forced without the other. The sampler has
 * no AVX-512 code: with HEAGG_NTT_AVX512 it runs its AVX2 code.
 */
int heagg_simd_select(int path);

/*
 * Small or large signed integers -> residues: out (rows, nmod, n) = values (rows, n) mod
 * q_l, the representative in [0, q_l), for every int64 (INT64_MIN included). out must
 * not overlap values. Shape and moduli as for the other kernels.
 */
int heagg_signed_to_rns(uint64_t *out, const int64_t *values, size_t rows, size_t nmod,
                        size_t n, const uint64_t *moduli);

/*
 * Exact discrete Gaussian over Z (docs/SAMPLER.md), integer-only and branch-free in the
 * values: a dyadic base table scanned in full, then an exact rejection step. Words are
 * taken four per trial (w0, w1, w2, w3), in order; with b = plan[0] <= 63:
 *   sign = w0 >> 63, y = (w0 & (2^63 - 1)) >> (63 - b),
 *   r1 = w1 * 2^32 + (w3 >> 32), r2 = w2 * 2^32 + (w3 mod 2^32)   (96-bit uniforms),
 *   x = #{ i < HEAGG_DG_ROWS : r1 < row_i },  z = x * 2^b + y,
 *   accept iff r2 < A(x, y) and not (z == 0 and sign),
 * A the fixed-point value of 2^(-kappa * u * (u + 2x)) * 2^96 (u = y / 2^b) computed as
 * he_agg.hazmat.kernels._reference defines it. An accepted trial writes
 * v = sign ? -z : z as high[p] = v >> 32, low[p] = v mod 2^32. Stops after `count`
 * values or when fewer than four words are left. *produced is the number of values
 * written, *consumed the number of words used (a multiple of 4, the last trial run
 * included), so a call on words[*consumed ..] for the remaining count continues exactly
 * where this one stopped. plan: HEAGG_DG_PLAN_WORDS words (see kernels.DG_* for the
 * layout). Only high[0 .. *produced] and low[0 .. *produced] may be written (one slot past
 * the last value is used as scratch when count allows).
 */
#define HEAGG_DG_ROWS 48
#define HEAGG_DG_TABLES 3
#define HEAGG_DG_TABLE_BITS 4
#define HEAGG_DG_POLY 6
#define HEAGG_DG_POLY_WIDE 4
#define HEAGG_DG_PLAN_WORDS 205
int heagg_discrete_gaussian(int64_t *high, int64_t *low, size_t count, const uint64_t *words,
                            size_t nwords, const uint64_t *plan, size_t *produced,
                            size_t *consumed);
/* CDEF-END */

#endif /* HE_AGG_H */
