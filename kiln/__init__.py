"""The top of the house: the one `kiln` command line, which mounts every package's commands.

    python -m kiln --help

Nothing imports `kiln`; it imports the others, lazily, so `kiln data ...` never pays for importing torch.
"""
