"""Run by the python of the sae-lens venv (never imported by the tests): benchmarks/saelens_side.py's round trip
(`sae_lens.SAE.load_from_disk`, then encode and decode) for several exports in ONE process, so sae_lens is
imported once rather than once per architecture.

    python tests/saelens_roundtrips.py benchmarks/saelens_side.py DIR...

Each DIR holds `sae/` (an export) and `x.npy`; the round trip writes DIR/out.npz (as `--roundtrip DIR/sae --input
DIR/x.npy --output DIR/out.npz` would), or DIR/error.txt with the traceback where it fails, so that one
architecture's failure is its own test's and the others are still checked.
"""

import importlib.util
import sys
import traceback
from pathlib import Path


def main() -> int:
    side_script, *dirs = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("saelens_side", side_script)
    side = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(side)  # the side script as it is, imported rather than run as __main__
    for directory in map(Path, dirs):
        try:
            side.main(["--roundtrip", str(directory / "sae"), "--input", str(directory / "x.npy"),
                       "--output", str(directory / "out.npz")])
        except (Exception, SystemExit):
            (directory / "error.txt").write_text(traceback.format_exc())
    return 0


if __name__ == "__main__":
    sys.exit(main())
