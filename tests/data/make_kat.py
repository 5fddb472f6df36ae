"""Regenerate the known-answer TenSEAL bytes in this folder (run only on purpose).

    python tests/data/make_kat.py

The files pin the byte formats of TenSEAL 0.3.18 / SEAL 4.x that he_agg parses: if a
TenSEAL release changes them, tests/test_wire_seal.py fails on these files or on live
TenSEAL output. Small parameters (N=4096, primes [40, 20, 40]) keep the files small.
The encryption is randomized, so regenerating changes the bytes and kat.json together.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import tenseal as ts

HERE = Path(__file__).parent
N, BITS, SCALE = 4096, [40, 20, 40], 2.0**25
LENGTH = 3000  # two ciphertexts at N/2 = 2048 slots: exercises chunking


def main() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, N, coeff_mod_bit_sizes=BITS)
    ctx.global_scale = SCALE
    values = np.linspace(-1.0, 1.0, LENGTH) ** 3
    vector = ts.ckks_vector(ctx, values.tolist())
    blob = vector.serialize()
    context = ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    (HERE / "kat_context.bin").write_bytes(context)
    (HERE / "kat_vector.bin").write_bytes(blob)
    meta = {
        "tenseal": ts.__version__,
        "n": N,
        "bit_sizes": BITS,
        "scale": SCALE,
        "length": LENGTH,
        "values": "np.linspace(-1, 1, length) ** 3",
        "vector_sha256": hashlib.sha256(blob).hexdigest(),
        "context_sha256": hashlib.sha256(context).hexdigest(),
    }
    (HERE / "kat.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
