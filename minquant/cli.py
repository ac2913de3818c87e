"""The ``minquant`` command line (``python -m minquant`` too)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="minquant", description="Model compression for edge deployment, from "
                                 "first principles (docs/quantization.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the Day-2 lesson end to end on real data that installs with minquant")
    demo.add_argument("--quick", action="store_true", help="fewer timing repeats")
    args = ap.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main
        return demo_main(quick=args.quick)
    return 2


if __name__ == "__main__":
    sys.exit(main())
