"""The engine: durable queues per version, instances on demand, the event log and its fan-out."""
