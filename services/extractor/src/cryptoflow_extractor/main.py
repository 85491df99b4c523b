"""`cryptoflow-extractor`: run the extractor service."""

from __future__ import annotations

from cryptoflow_runtime import load_settings, run_service

from .app import NAME, build
from .config import ExtractorSettings


def main() -> None:
    run_service(NAME, lambda: load_settings(ExtractorSettings), build)


if __name__ == "__main__":
    main()
