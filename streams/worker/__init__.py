"""The worker (`ledger worker`): the decider and the projector, each a batched confluent-kafka
loop (`loop.py`) with one Kafka transaction per batch under exactly_once. `main.py` runs them."""
