"""Kept for state written by gru up to 0.3.0: see password.py. Nothing else lives here."""
