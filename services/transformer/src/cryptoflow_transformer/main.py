"""`cryptoflow-transformer`: run the transformer service."""

from __future__ import annotations

from cryptoflow_runtime import load_settings, run_service

from .app import NAME, build
from .config import TransformerSettings


def main() -> None:
    run_service(NAME, lambda: load_settings(TransformerSettings), build)


if __name__ == "__main__":
    main()
