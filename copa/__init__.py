"""COPA: the shared VLP model skeleton and COPA's own parts (text-aware patch detector, PTA)."""
