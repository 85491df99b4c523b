"""`cryptoflow-warehouse-loader`: run the warehouse-loader service."""

from __future__ import annotations

from cryptoflow_runtime import load_settings, run_service

from .app import NAME, build
from .config import WarehouseLoaderSettings


def main() -> None:
    run_service(NAME, lambda: load_settings(WarehouseLoaderSettings), build)


if __name__ == "__main__":
    main()
