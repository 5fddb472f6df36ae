"""Byte formats: SEAL objects, TenSEAL messages, and he_agg's own envelope.

Everything here parses bytes from other parties, so everything here validates before use.
"""
