"""Build hook: compiles the native core (csrc/) through cffi's out-of-line API mode."""

from setuptools import setup

setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
