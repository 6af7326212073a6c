"""`python -m kiln` is the `kiln` command.

python -m kiln --help
"""

from kiln.cli import main

main()
