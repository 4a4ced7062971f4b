"""Development tools, not the production pipeline: a local Kafka, GeoIP database builders, the traffic
simulator, sample events and the demo. The worker never imports this package."""
