"""adclick: real-time ad click aggregation (Kafka -> PyFlink -> Kafka -> ClickHouse -> Flask)."""
