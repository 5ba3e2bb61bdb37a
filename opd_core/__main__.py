"""``python -m opd_core``: see :mod:`opd_core.app`."""

from opd_core.app import main

if __name__ == "__main__":
    main()
