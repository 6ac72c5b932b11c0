"""Infrastructure: configuration, PostgreSQL, crypto, credentials, Kafka, HTTP base, logging, metrics."""
