"""Hardware SKUs and their prices; later the metering ledger and usage."""
