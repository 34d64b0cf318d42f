"""Two processes taking turns, floor 6: the turnstile, how many pairs, the partner's records, --llmeff-ab."""
