"""A payment-channel simulator: debits that fail, time out, get lost, reverse and repeat."""
