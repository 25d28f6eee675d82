"""The batched engine (`LEDGER_ENGINE=batched`): the decider and the projector on confluent-kafka,
a batch of records per transaction instead of faust's record at a time. See `loop.py`."""
