"""The gateway (`ledger gateway`): deduction and refund events become payment-channel calls,
and every answer a command. `service.py` is the process, `channels.py` the channels' client."""
