"""Hazardous materials: he_agg's low-level layer.

Polynomials in RNS/NTT form, the native kernels, byte formats, Shamir sharing and the
threshold protocols live here, for auditors and researchers. Misusing them (reusing
noise, skipping validation, mixing parameters) breaks the security guarantees that the
high-level API (:mod:`he_agg`) maintains for you. Prefer the high-level API.
"""
