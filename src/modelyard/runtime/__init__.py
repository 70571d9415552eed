"""One model version on one machine: environments, the runner (parent) and the IPC protocol."""
