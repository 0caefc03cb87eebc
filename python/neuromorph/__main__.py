"""`python -m neuromorph --cmakedir | --includedir | --version`: facts for C++ builds."""
import argparse
import os
import sys
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuromorph")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--cmakedir", action="store_true",
                   help="folder for -Dneuromorph_DIR= (find_package(neuromorph))")
    g.add_argument("--includedir", action="store_true", help="folder of neuromorph/neuromorph.h")
    g.add_argument("--version", action="store_true")
    args = p.parse_args(argv)
    if args.version:
        from .api import __version__
        print(__version__)
    else:
        print(os.path.join(HERE, "cmake" if args.cmakedir else "include"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
