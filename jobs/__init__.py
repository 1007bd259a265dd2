"""Ray job entrypoints: ``python -m jobs.<name>`` or ``ray job submit -- python -m jobs.<name>``.

Each job is a thin shell: parse arguments, load a typed config, connect to Ray, call
the library, print a summary.
"""
