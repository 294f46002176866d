"""Test doubles that ship with kbgen (fake endpoints), used by the tests and the benchmarks."""
