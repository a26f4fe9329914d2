"""Learning rules for recurrent networks (model=rnn), one per file; what they share is recurrent_rule.py."""
