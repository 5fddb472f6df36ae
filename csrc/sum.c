/*
 * sum.c -- heagg_sum_ciphertexts and heagg_sum_segmented, the aggregation hot path.
 *
 * One pass over the sources: the accumulator is processed in blocks of SUM_BLOCK
 * words (one prime per block), copied into a stack temp that stays in L1, and every
 * source's matching run of words is checked against the prime and added to it, four
 * sources per sweep over the temp (see add_checked4). Unaligned source words are read
 * with memcpy, which compiles to plain loads.
 *
 * Lazy reduction: every word is < q and q < 2^(64-s) for s = 64 - bitlen(q) >= 3, so a
 * temp that started below q can absorb 2^s - 1 more words before it could reach
 * 2^s * q <= 2^64; it is then brought back below q with s conditional subtractions of
 * q*2^j (j = s-1 ... 0), which vectorise. s is capped at SUM_MAX_SHIFT.
 *
 * Errors: a bad word stops the pass at the end of the sweep that saw it. Blocks already
 * written back are restored exactly by adding q - w for every (validated) word w they
 * received; the current block was never written back. The fault reported is then the
 * canonical one, independent of blocking: a bad accumulator word first (source ==
 * nsrc), else the lowest source index with a bad word and its lowest flat word index.
 *
 * Segmented sources (heagg_sum_segmented): a ciphertext is the concatenation of a few
 * byte segments, so a block's run of a source may cross a segment boundary, and a word
 * may straddle one. Every access goes through resolve(): the longest run of whole words
 * readable in place from a given word, or, for a straddling word, that one word gathered
 * into an 8-byte temp. The segment holding a byte is found by binary search over the
 * segments' cumulative ends, so even a ciphertext cut into 1-byte segments costs
 * O(words * log nseg), not O(words * nseg). A block is then added in "pieces": the longest stretch every
 * source of the sweep can read in place (or one gathered word). With segments of tens
 * of KiB only the few blocks that cross a boundary are cut: measured within ~1% of the
 * contiguous sum on TenSEAL's split (benchmarks/bench_kernels.py). Contiguous sources
 * (heagg_sum_ciphertexts) share everything; their block is always one piece.
 */
#include "he_agg.h"
#include "modarith.h"

#define SUM_BLOCK 2048 /* accumulator words per block: a 16 KiB stack temp, in L1 */
#define SUM_WAYS 4     /* sources added per sweep; <= every window (2^3 - 1)  */
#define SUM_MAX_SHIFT 8u

typedef struct {
    uint64_t *acc;
    size_t count, nmod, n, ct_words, blk;
    const uint64_t *moduli;
    const uint8_t *const *bases;
    const uint64_t *offsets;  /* contiguous sources (segments == NULL), else NULL */
    const uint64_t *segments; /* (nsrc, count, nseg, 2): byte offset, cumulative end */
    size_t nseg, nsrc;
    int packed;                       /* sources are packed (heagg_sum_packed)          */
    size_t pwords;                    /* packed: words of one polynomial (nmod rows)    */
    size_t prow[HEAGG_MAX_NMOD];      /* packed: word offset of prime row l in a poly   */
} sum_job;

/* t[i] += w_i for the len little-endian words at src; nonzero iff some w_i >= q. */
HEAGG_CLONES
static uint64_t add_checked(uint64_t *restrict t, const uint8_t *restrict src, size_t len,
                            uint64_t q) {
    uint64_t bad = 0;
    for (size_t i = 0; i < len; i++) {
        const uint64_t w = heagg_load_u64(src + 8 * i);
        bad |= (uint64_t)(w >= q);
        t[i] += w;
    }
    return bad;
}

/*
 * The same for SUM_WAYS (= 4) sources in one sweep, while prefetching the runs of the
 * next four sources (one line of each per line consumed). Sources are separate
 * allocations, so every run is a fresh stream for the hardware prefetcher; four
 * streams in flight plus the software prefetch measured ~1.15x over one at a time.
 */
HEAGG_CLONES
static uint64_t add_checked4(uint64_t *restrict t, const uint8_t *const *src,
                             const uint8_t *const *next, size_t len, uint64_t q) {
    const uint8_t *restrict s0 = src[0], *restrict s1 = src[1];
    const uint8_t *restrict s2 = src[2], *restrict s3 = src[3];
    uint64_t bad = 0;
    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0) {
            for (size_t k = 0; k < SUM_WAYS; k++) __builtin_prefetch(next[k] + 8 * i, 0, 2);
        }
        const uint64_t w0 = heagg_load_u64(s0 + 8 * i), w1 = heagg_load_u64(s1 + 8 * i);
        const uint64_t w2 = heagg_load_u64(s2 + 8 * i), w3 = heagg_load_u64(s3 + 8 * i);
        bad |= (uint64_t)(w0 >= q) | (uint64_t)(w1 >= q) | (uint64_t)(w2 >= q) |
               (uint64_t)(w3 >= q);
        t[i] += (w0 + w1) + (w2 + w3);
    }
    return bad;
}

/* t[i] += q - w_i (words already validated < q): the exact undo of add_checked. */
static void add_negated(uint64_t *restrict t, const uint8_t *restrict src, size_t len,
                        uint64_t q) {
    for (size_t i = 0; i < len; i++) t[i] += q - heagg_load_u64(src + 8 * i);
}

/* Copy acc into t; nonzero iff some word >= q. */
HEAGG_CLONES
static uint64_t load_checked(uint64_t *restrict t, const uint64_t *restrict acc, size_t len,
                             uint64_t q) {
    uint64_t bad = 0;
    for (size_t i = 0; i < len; i++) {
        t[i] = acc[i];
        bad |= (uint64_t)(acc[i] >= q);
    }
    return bad;
}

/* Bring t[i] < 2^shift * q back into [0, q). */
HEAGG_CLONES
static void reduce_lazy(uint64_t *restrict t, size_t len, uint64_t q, unsigned shift) {
    for (unsigned j = shift; j-- > 0;) {
        const uint64_t qj = q << j;
        for (size_t i = 0; i < len; i++) t[i] = t[i] >= qj ? t[i] - qj : t[i];
    }
}

static unsigned window_shift(uint64_t q) {
    const unsigned s = 64u - heagg_bitlen(q);
    return s < SUM_MAX_SHIFT ? s : SUM_MAX_SHIFT;
}

/* Contiguous sources only: the bytes of flat word `word` of source s, ciphertext c. */
static inline const uint8_t *contiguous_run(const sum_job *job, size_t s, size_t c, size_t word) {
    return job->bases[s] + job->offsets[s * job->count + c] + 8 * word;
}

/*
 * The segment of (s, c) holding byte pos of the concatenation, and through *start the
 * byte of the concatenation where it begins. Segment entries are (byte offset in the
 * source, cumulative end in the concatenation); the ends are nondecreasing and the last
 * is ct_bytes > pos (checked on entry), so this is the first k with end[k] > pos: a
 * binary search, O(log nseg) whatever the segment sizes (zero-length ones included).
 */
static inline const uint64_t *find_segment(const sum_job *job, size_t s, size_t c, uint64_t pos,
                                           uint64_t *start) {
    const uint64_t *seg = job->segments + 2 * job->nseg * (s * job->count + c);
    size_t lo = 0, hi = job->nseg - 1;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (seg[2 * mid + 1] > pos) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    *start = lo ? seg[2 * lo - 1] : 0;
    return seg + 2 * lo;
}

/*
 * Source s, ciphertext c from its flat word `word` on: sets *p to that word's bytes and
 * returns how many whole words (at most limit) can be read at *p in place; 0 when the
 * word straddles a segment boundary.
 */
static inline size_t source_run(const sum_job *job, size_t s, size_t c, size_t word,
                                size_t limit, const uint8_t **p) {
    if (job->segments == NULL) {
        *p = contiguous_run(job, s, c, word);
        return limit;
    }
    const uint64_t pos = 8 * (uint64_t)word;
    uint64_t start;
    const uint64_t *seg = find_segment(job, s, c, pos, &start);
    const uint64_t words = (seg[1] - pos) / 8;
    *p = job->bases[s] + seg[0] + (pos - start);
    return words < limit ? (size_t)words : limit;
}

/* Copy the word at flat word `word` of source s, ciphertext c, from the segments it
 * straddles into out (at most 8 lookups: each takes at least one byte). */
static void gather_word(const sum_job *job, size_t s, size_t c, size_t word, uint8_t *out) {
    uint64_t pos = 8 * (uint64_t)word;
    for (size_t got = 0; got < 8;) {
        uint64_t start;
        const uint64_t *seg = find_segment(job, s, c, pos, &start);
        uint64_t take = seg[1] - pos; /* >= 1: seg[1] > pos */
        take = take < 8 - got ? take : 8 - got;
        memcpy(out + got, job->bases[s] + seg[0] + (pos - start), (size_t)take);
        got += (size_t)take;
        pos += take;
    }
}

/* source_run, but a straddling word is gathered into tmp (8 bytes): returns >= 1. */
static inline size_t resolve(const sum_job *job, size_t s, size_t c, size_t word,
                             size_t limit, uint8_t *tmp, const uint8_t **p) {
    const size_t run = source_run(job, s, c, word, limit, p);
    if (run) return run;
    gather_word(job, s, c, word, tmp);
    *p = tmp;
    return 1;
}


/* ---- packed sources ------------------------------------------------------------------
 *
 * A packed ciphertext is its rows (polynomial p, prime l) in order, row (p, l) holding n
 * residues of b_l = bitlen(q_l) bits, residue i at bits [i*b_l, (i+1)*b_l) of the row
 * read as a little-endian bit string, the row padded with zero bits to whole 64-bit
 * words: ceil(n*b_l/64) words. For n >= 64 a row needs no padding and every block of
 * residues starts on a word boundary (blocks are multiples of 64 residues). Residues
 * are unpacked in registers inside the add: no unpacked copy is ever made.
 */

/* Words of one packed row of n residues of b bits. */
static inline size_t packed_row_words(size_t n, unsigned b) {
    return (n * b + 63) / 64;
}

/* Residue i of a packed run whose residue 0 is at bit 0 of src: reads only the words
 * holding its bits. */
static inline uint64_t packed_get(const uint8_t *src, size_t i, unsigned b) {
    const uint64_t p = (uint64_t)i * b;
    const size_t k = (size_t)(p >> 6);
    const unsigned sh = (unsigned)(p & 63);
    uint64_t v = heagg_load_u64(src + 8 * k) >> sh;
    if (sh + b > 64) v |= heagg_load_u64(src + 8 * (k + 1)) << (64 - sh);
    return v & ((UINT64_C(1) << b) - 1);
}

/*
 * t[i] += residue i (undo: q - residue i) for i < len, len a multiple of the period
 * P = 64 / gcd(b, 64) (P residues fill W = b / gcd(b, 64) words exactly). Inlined with a
 * constant b, the period loop unrolls into constant shifts with no branches.
 */
static inline __attribute__((always_inline)) uint64_t packed_add_periods(
    uint64_t *restrict t, const uint8_t *restrict src, size_t len, uint64_t q, unsigned b,
    int undo) {
    const unsigned g = (unsigned)__builtin_ctz(b | 64u); /* log2 gcd(b, 64) */
    const unsigned period = 64u >> g, words = b >> g;
    const uint64_t mask = (UINT64_C(1) << b) - 1;
    uint64_t bad = 0;
    for (size_t i0 = 0; i0 < len; i0 += period, src += 8 * words) {
#pragma GCC unroll 16
        for (unsigned j = 0; j < period; j++) {
            const unsigned p = j * b, k = p >> 6, sh = p & 63;
            uint64_t v = heagg_load_u64(src + 8 * k) >> sh;
            if (sh + b > 64) v |= heagg_load_u64(src + 8 * (k + 1)) << (64 - sh);
            v &= mask;
            if (undo) {
                t[i0 + j] += q - v;
            } else {
                bad |= (uint64_t)(v >= q);
                t[i0 + j] += v;
            }
        }
    }
    return bad;
}

/* The widths with a constant-b instance: every width whose period is at most 16. */
#define PACKED_CASES(X) X(32) X(36) X(40) X(44) X(48) X(52) X(56) X(60)
#define PACKED_FN(B)                                                                      \
    HEAGG_CLONES static uint64_t packed_add_##B(uint64_t *restrict t,                     \
                                                const uint8_t *restrict src, size_t len,  \
                                                uint64_t q, int undo) {                   \
        return undo ? packed_add_periods(t, src, len, q, B, 1)                            \
                    : packed_add_periods(t, src, len, q, B, 0);                           \
    }
PACKED_CASES(PACKED_FN)

/* Any width; runs of fewer than 64 residues (n < 64) residue by residue. */
static uint64_t packed_add_any(uint64_t *restrict t, const uint8_t *restrict src, size_t len,
                               uint64_t q, unsigned b, int undo) {
    if (len % 64 == 0) return undo ? packed_add_periods(t, src, len, q, b, 1)
                                   : packed_add_periods(t, src, len, q, b, 0);
    uint64_t bad = 0;
    for (size_t i = 0; i < len; i++) {
        const uint64_t v = packed_get(src, i, b);
        if (undo) {
            t[i] += q - v;
        } else {
            bad |= (uint64_t)(v >= q);
            t[i] += v;
        }
    }
    return bad;
}

/* Where residue j0 (a multiple of the block, so word aligned) of row `row` of packed
 * ciphertext c of source s starts. */
static inline const uint8_t *packed_run(const sum_job *job, size_t s, size_t c, size_t row,
                                        size_t j0, unsigned b) {
    const size_t poly = row / job->nmod, l = row % job->nmod;
    return job->bases[s] + job->offsets[s * job->count + c] +
           8 * (poly * job->pwords + job->prow[l] + j0 * b / 64);
}

/* One packed source into the block t: add and check, or (undo) add q - v. */
static uint64_t add_packed_source(uint64_t *t, const sum_job *job, size_t s, size_t c,
                                  size_t word, size_t len, uint64_t q, int undo) {
    const size_t row = word / job->n, j0 = word % job->n;
    const unsigned b = heagg_bitlen(q);
    const uint8_t *src = packed_run(job, s, c, row, j0, b);
    if (len % 64 == 0) {
        switch (b) {
#define PACKED_CASE(B) \
    case B:            \
        return packed_add_##B(t, src, len, q, undo);
            PACKED_CASES(PACKED_CASE)
#undef PACKED_CASE
        default:
            break;
        }
    }
    return packed_add_any(t, src, len, q, b, undo);
}

/*
 * One source into the block t (len words from flat word `word` of ciphertext c): add and
 * check, or (undo) add q - w. Nonzero iff some word >= q (never when undoing).
 */
static uint64_t add_source(uint64_t *t, const sum_job *job, size_t s, size_t c, size_t word,
                           size_t len, uint64_t q, int undo) {
    if (job->packed) return add_packed_source(t, job, s, c, word, len, q, undo);
    uint64_t bad = 0;
    uint8_t tmp[8];
    for (size_t i = 0, m; i < len; i += m) {
        const uint8_t *p;
        m = resolve(job, s, c, word + i, len - i, tmp, &p);
        if (undo) {
            add_negated(t + i, p, m, q);
        } else {
            bad |= add_checked(t + i, p, m, q);
        }
    }
    return bad;
}

/*
 * SUM_WAYS sources s.. into the block t, piece by piece; the runs of the next SUM_WAYS
 * sources are prefetched where they lie in place for the whole piece.
 */
static uint64_t add_sources4(uint64_t *t, const sum_job *job, size_t s, size_t c, size_t word,
                             size_t len, uint64_t q) {
    const uint8_t *src[SUM_WAYS], *next[SUM_WAYS];
    if (job->segments == NULL) { /* one piece; spelled out: ~3% faster at n = 64 */
        for (size_t k = 0; k < SUM_WAYS; k++) {
            const size_t ahead = s + SUM_WAYS + k;
            src[k] = contiguous_run(job, s + k, c, word);
            next[k] = ahead < job->nsrc ? contiguous_run(job, ahead, c, word) : src[k];
        }
        return add_checked4(t, src, next, len, q);
    }
    uint8_t tmp[SUM_WAYS][8];
    for (size_t i = 0, m; i < len; i += m) {
        m = len - i;
        for (size_t k = 0; k < SUM_WAYS; k++) m = resolve(job, s + k, c, word + i, m, tmp[k], &src[k]);
        for (size_t k = 0; k < SUM_WAYS; k++) {
            const size_t ahead = s + SUM_WAYS + k;
            if (ahead >= job->nsrc || source_run(job, ahead, c, word + i, m, &next[k]) < m)
                next[k] = src[k];
        }
        if (add_checked4(t + i, src, next, m, q)) return 1;
    }
    return 0;
}

/*
 * Run the blocked pass. undo == 0: add and check, stop at the first bad run, return
 * the number of blocks written back (== total blocks on success) through *done and
 * nonzero on a fault. undo != 0: subtract instead, for the first `limit` blocks only.
 */
static int sum_pass(const sum_job *job, int undo, size_t limit, size_t *done) {
    uint64_t t[SUM_BLOCK];
    const size_t blk = job->blk;
    size_t block = 0;
    for (size_t c = 0; c < job->count; c++) {
        for (size_t row = 0; row < job->ct_words / job->n; row++) {
            const uint64_t q = job->moduli[row % job->nmod];
            const unsigned shift = window_shift(q);
            const unsigned window = (1u << shift) - 1u;
            for (size_t j0 = 0; j0 < job->n; j0 += blk, block++) {
                if (undo && block == limit) return 0;
                const size_t word = row * job->n + j0;
                uint64_t *a = job->acc + c * job->ct_words + word;
                if (load_checked(t, a, blk, q)) goto fault;
                unsigned pending = 0;
                size_t s = 0;
                for (; !undo && !job->packed && s + SUM_WAYS <= job->nsrc; s += SUM_WAYS) {
                    if (pending + SUM_WAYS > window) { /* then pending >= 4: bitlen ok */
                        reduce_lazy(t, blk, q, heagg_bitlen(pending));
                        pending = 0;
                    }
                    if (add_sources4(t, job, s, c, word, blk, q)) goto fault;
                    pending += SUM_WAYS;
                }
                for (; s < job->nsrc; s++) {
                    if (pending == window) {
                        reduce_lazy(t, blk, q, shift);
                        pending = 0;
                    }
                    if (add_source(t, job, s, c, word, blk, q, undo)) goto fault;
                    pending++;
                }
                /* t < (pending + 1) * q <= 2^bitlen(pending) * q */
                if (pending) reduce_lazy(t, blk, q, heagg_bitlen(pending));
                memcpy(a, t, blk * sizeof *t);
                *done = block + 1;
            }
        }
    }
    return 0;
fault:
    *done = block;
    return 1;
}

/* The canonical fault: accumulator first, then lowest source, then lowest word. */
static void locate_fault(const sum_job *job, heagg_fault *fault) {
    const size_t rows = job->ct_words / job->n;
    for (size_t c = 0; c < job->count; c++) {
        for (size_t w = 0; w < job->ct_words; w++) {
            if (job->acc[c * job->ct_words + w] >= job->moduli[(w / job->n) % job->nmod]) {
                fault->source = job->nsrc;
                fault->word = c * job->ct_words + w;
                return;
            }
        }
    }
    for (size_t s = 0; s < job->nsrc; s++) {
        for (size_t c = 0; c < job->count; c++) {
            for (size_t row = 0; row < rows; row++) {
                const uint64_t q = job->moduli[row % job->nmod];
                if (job->packed) {
                    const unsigned b = heagg_bitlen(q);
                    const uint8_t *src = packed_run(job, s, c, row, 0, b);
                    for (size_t i = 0; i < job->n; i++) {
                        if (packed_get(src, i, b) >= q) {
                            fault->source = s;
                            fault->word = c * job->ct_words + row * job->n + i;
                            return;
                        }
                    }
                    continue;
                }
                for (size_t i = 0, m; i < job->n; i += m) {
                    const size_t w = row * job->n + i;
                    const uint8_t *src;
                    uint8_t tmp[8];
                    m = resolve(job, s, c, w, job->n - i, tmp, &src);
                    for (size_t j = 0; j < m; j++) {
                        if (heagg_load_u64(src + 8 * j) >= q) {
                            fault->source = s;
                            fault->word = c * job->ct_words + w + j;
                            return;
                        }
                    }
                }
            }
        }
    }
    fault->source = SIZE_MAX; /* unreachable: a fault was seen */
    fault->word = SIZE_MAX;
}

/* Shapes and pointers common to both entry points; *job gets everything but the layout.
 * Returns HEAGG_OK with *empty set when there is nothing to add. */
static int sum_setup(sum_job *job, uint64_t *acc, size_t count, size_t polys, size_t nmod,
                     size_t n, const uint64_t *moduli, const uint8_t *const *bases,
                     const void *layout, size_t nsrc, heagg_fault *fault, int *empty) {
    size_t rows, ct_words, total;
    *empty = 1;
    if (fault == NULL || !heagg_shape_ok(nmod, n, moduli)) return HEAGG_ERR_ARGUMENT;
    if (!heagg_mul_size(polys, nmod, &rows) || !heagg_mul_size(rows, n, &ct_words) ||
        !heagg_mul_size(ct_words, count, &total) || !heagg_mul_size(total, 8, &total))
        return HEAGG_ERR_ARGUMENT;
    if (ct_words == 0 || count == 0 || nsrc == 0) return HEAGG_OK;
    if (acc == NULL || bases == NULL || layout == NULL) return HEAGG_ERR_ARGUMENT;
    for (size_t s = 0; s < nsrc; s++) {
        if (bases[s] == NULL) return HEAGG_ERR_ARGUMENT;
    }
    const sum_job init = {acc, count, nmod, n, ct_words, n < SUM_BLOCK ? n : SUM_BLOCK,
                          moduli, bases, NULL, NULL, 0, nsrc, 0, 0, {0}};
    *job = init;
    *empty = 0;
    return HEAGG_OK;
}

/* The pass, and on a fault the rollback and the canonical fault. */
static int sum_run(const sum_job *job, heagg_fault *fault) {
    size_t done = 0, undone = 0;
    if (!sum_pass(job, 0, 0, &done)) return HEAGG_OK;
    sum_pass(job, 1, done, &undone);
    locate_fault(job, fault);
    return HEAGG_ERR_RESIDUE;
}

int heagg_sum_ciphertexts(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                          const uint64_t *moduli, const uint8_t *const *bases,
                          const uint64_t *offsets, size_t nsrc, heagg_fault *fault) {
    sum_job job;
    int empty;
    const int rc = sum_setup(&job, acc, count, polys, nmod, n, moduli, bases, offsets, nsrc,
                             fault, &empty);
    if (rc != HEAGG_OK || empty) return rc;
    job.offsets = offsets;
    return sum_run(&job, fault);
}

int heagg_sum_segmented(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                        const uint64_t *moduli, const uint8_t *const *bases,
                        const uint64_t *segments, size_t nseg, size_t nsrc, heagg_fault *fault) {
    sum_job job;
    int empty;
    const int rc = sum_setup(&job, acc, count, polys, nmod, n, moduli, bases, segments, nsrc,
                             fault, &empty);
    if (rc != HEAGG_OK || empty) return rc;
    /* Every (s, c) must end at exactly one ciphertext, ends nondecreasing: then
     * find_segment() always finds the segment holding a word and never reads past the
     * last one. */
    const uint64_t ct_bytes = 8 * (uint64_t)job.ct_words;
    size_t entries; /* the table's size in words must not wrap */
    if (nseg == 0 || !heagg_mul_size(nsrc, count, &entries) ||
        !heagg_mul_size(entries, nseg, &entries) || !heagg_mul_size(entries, 2, &entries))
        return HEAGG_ERR_ARGUMENT;
    for (size_t sc = 0; sc < nsrc * count; sc++) {
        uint64_t end = 0;
        for (size_t k = 0; k < nseg; k++) {
            const uint64_t next = segments[2 * (sc * nseg + k) + 1];
            if (next < end) return HEAGG_ERR_ARGUMENT; /* ends must not decrease */
            end = next;
        }
        if (end != ct_bytes) return HEAGG_ERR_ARGUMENT;
    }
    job.segments = segments;
    job.nseg = nseg;
    return sum_run(&job, fault);
}

/* The packed layout of one polynomial: prime row offsets and total words. */
static void packed_layout(sum_job *job) {
    size_t words = 0;
    for (size_t l = 0; l < job->nmod; l++) {
        job->prow[l] = words;
        words += packed_row_words(job->n, heagg_bitlen(job->moduli[l]));
    }
    job->pwords = words;
}

int heagg_sum_packed(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                     const uint64_t *moduli, const uint8_t *const *bases, const uint64_t *offsets,
                     size_t nsrc, heagg_fault *fault) {
    sum_job job;
    int empty;
    const int rc = sum_setup(&job, acc, count, polys, nmod, n, moduli, bases, offsets, nsrc,
                             fault, &empty);
    if (rc != HEAGG_OK || empty) return rc;
    job.offsets = offsets;
    job.packed = 1;
    packed_layout(&job);
    return sum_run(&job, fault);
}

int heagg_sum_undo(uint64_t *acc, size_t count, size_t polys, size_t nmod, size_t n,
                   const uint64_t *moduli, const uint8_t *const *bases, const uint64_t *layout,
                   size_t nseg, size_t nsrc, int packed) {
    sum_job job;
    heagg_fault unused;
    int empty;
    size_t undone = 0;
    const int rc = sum_setup(&job, acc, count, polys, nmod, n, moduli, bases, layout, nsrc,
                             &unused, &empty);
    if (rc != HEAGG_OK || empty) return rc;
    if (packed && nseg != 0) return HEAGG_ERR_ARGUMENT;
    if (nseg == 0) {
        job.offsets = layout;
    } else {
        job.segments = layout;
        job.nseg = nseg;
    }
    job.packed = packed != 0;
    if (job.packed) packed_layout(&job);
    /* The acc words are checked as they are loaded: a bad one (a broken precondition)
     * stops the pass, blocks before it undone. */
    return sum_pass(&job, 1, SIZE_MAX, &undone) ? HEAGG_ERR_RESIDUE : HEAGG_OK;
}

int heagg_unpack_residues(uint64_t *out, const uint8_t *src, size_t rows, size_t nmod, size_t n,
                          const uint64_t *moduli) {
    if (!heagg_shape_ok(nmod, n, moduli) || (rows && (out == NULL || src == NULL)))
        return HEAGG_ERR_ARGUMENT;
    for (size_t r = 0; r < rows; r++) {
        for (size_t l = 0; l < nmod; l++, out += n) {
            const unsigned b = heagg_bitlen(moduli[l]);
            for (size_t i = 0; i < n; i++) out[i] = packed_get(src, i, b);
            src += 8 * packed_row_words(n, b);
        }
    }
    return HEAGG_OK;
}
