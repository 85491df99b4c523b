"""`python -m bench [NAME|all]`: run benchmarks and print their tables (ROWS, BATCH_ROWS, ORM_ROWS
configure the loader benchmark; other benchmarks take their defaults)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from . import loader

HERE = Path(__file__).parent


def run_loader(args: argparse.Namespace) -> None:
    asyncio.run(loader.main(args))


def run_script(name: str) -> Callable[[argparse.Namespace], None]:
    """A benchmark that is its own script (e.g. backfill.py): run it as it runs alone."""

    def run(args: argparse.Namespace) -> None:
        with subprocess.Popen([sys.executable, str(HERE / name)]) as proc:
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:  # stopped ourselves: the script stops what it started
                    proc.terminate()
                    proc.wait(120)
        if code != 0:
            raise subprocess.CalledProcessError(code, proc.args)

    return run


BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "loader": run_loader,
    "backfill": run_script("backfill.py"),
    "keys": run_script("keys.py"),
    "e2e": run_script("e2e.py"),
    "replay": run_script("replay.py"),
    "transformer": run_script("transformer.py"),
    "rebuild": run_script("rebuild.py"),
    "extractor-scale": run_script("extractor_scale.py"),
    "stream": run_script("stream.py"),
    "archive": run_script("archive.py"),
    "api": run_script("api.py"),
}


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", nargs="?", default="all", choices=["all", *BENCHMARKS])
    parser.add_argument("--rows", type=int, default=int(os.environ.get("ROWS", "1000000")))
    parser.add_argument("--batch-rows", type=int, default=int(os.environ.get("BATCH_ROWS", "100000")))
    parser.add_argument("--orm-rows", type=int, default=int(os.environ.get("ORM_ROWS", "20000")))
    args = parser.parse_args()
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        print(f"== {name} ==", flush=True)
        BENCHMARKS[name](args)


if __name__ == "__main__":
    main()
