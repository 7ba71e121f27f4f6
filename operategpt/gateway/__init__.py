"""The gateway: registry, routing table, balancing, health, format adapters and the operations over them."""
