"""The I/O shell: exchange access through ccxt, tapes (record/replay), snapshot loaders.

This is the only package of volcal that imports ccxt (lazily, inside functions); the numerical
core never does.
"""
