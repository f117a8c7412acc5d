"""``python -m vitlib.data.synthetic``: see :mod:`vitlib.data.synthetic.cli`."""

from vitlib.data.synthetic.cli import main

# The name the command had as the single module ``synthetic.py``: usage and error messages
# stay as they were (argparse would otherwise say ``__main__.py``).
main(prog="synthetic.py")
