"""Scheduler backends behind one interface (see base.py); types load lazily (registry.py)."""
